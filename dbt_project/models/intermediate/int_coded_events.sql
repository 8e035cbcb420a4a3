-- GP events that belong to a project codelist (SNOMED CT), up to each snapshot's period_end. Without
-- the code itself, which no reader needs: writing it was 19 of this table's 111 s at 1 M people.
select
    e.site_code,
    e.period_end,
    e.person_id,
    e.event_date,
    c.codelist_id,
    e.value
from {{ ref_rebuilt('stg_extract__events', 'e') }}
inner join {{ ref('int_codelist_codes') }} as c
    on c.code = e.code and c.coding_system = 'snomed_ct'
where e.event_date <= e.period_end
