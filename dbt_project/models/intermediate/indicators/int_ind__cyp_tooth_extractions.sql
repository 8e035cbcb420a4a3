-- CYP_TOOTH_EXTRACTIONS (SPEC §5.2): registered people aged 0-9; numerator = their admissions for
-- tooth extraction with dental caries in the 12 months (a rate per 100,000; lower is better).
select
    p.site_code,
    p.period_end,
    p.person_id,
    count(a.person_id) as numerator
from {{ ref_rebuilt('int_registered_population', 'p') }}
left join {{ ref_rebuilt('int_qualifying_admissions', 'a') }}
    on a.site_code = p.site_code and a.period_end = p.period_end and a.person_id = p.person_id
    and a.admission_type = 'tooth_extraction'
where p.age <= 9
group by p.site_code, p.period_end, p.person_id
