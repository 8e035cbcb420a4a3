-- PLUS-group membership (SPEC §6.3) for the groups each site configured, per period_end:
--   codelist groups: any code of the group's codelist in the extract up to period_end;
--   ethnic_minority: NHS ethnic category other than A (White British), Z (not stated) or 99 (not known);
--   coastal: home LSOA in a local authority with an open-sea coastline (seeds/coastal_local_authorities.csv).
{%- set codelist_groups = ['homeless', 'learning_disability', 'autism', 'gypsy_roma_traveller', 'justice_contact',
                           'carer', 'asylum_refugee', 'looked_after_child'] %}
with population as (
    select * from {{ ref_rebuilt('int_registered_population') }}
),

configured as (
    select * from {{ source('reference', 'site_plus_groups') }}
),

by_codelist as (
    select distinct e.site_code, e.period_end, e.person_id, e.codelist_id as plus_group
    from {{ ref_rebuilt('int_coded_events', 'e') }}
    where e.codelist_id in ('{{ codelist_groups | join("', '") }}')
),

by_ethnicity as (
    select site_code, period_end, person_id, 'ethnic_minority' as plus_group
    from population
    where ethnic_category not in ('A', 'Z', '99')
),

by_geography as (
    select p.site_code, p.period_end, p.person_id, 'coastal' as plus_group
    from population as p
    inner join {{ source('reference', 'lsoa21_geography') }} as g on g.lsoa21_code = p.lsoa21_code
    inner join {{ ref('coastal_local_authorities') }} as c on c.ltla22_code = g.ltla22_code
),

members as (
    select * from by_codelist
    union all
    select * from by_ethnicity
    union all
    select * from by_geography
)

select m.site_code, m.period_end, m.person_id, m.plus_group
from members as m
inner join population as p using (site_code, period_end, person_id)
inner join configured as c on c.site_code = m.site_code and c.plus_group = m.plus_group
