-- SHARP_OBJECT_ASSAULT_ADMISSIONS (SPEC §5.3): registered people aged 0-24 at sites that chose this
-- local priority; numerator = their admissions with external cause assault by sharp object (X99)
-- in the 12 months (a rate per 100,000; lower is better).
select
    p.site_code,
    p.period_end,
    p.person_id,
    count(a.person_id) as numerator
from {{ ref_rebuilt('int_registered_population', 'p') }}
inner join {{ source('reference', 'site_local_priorities') }} as lp
    on lp.site_code = p.site_code and lp.indicator_id = 'SHARP_OBJECT_ASSAULT_ADMISSIONS'
left join {{ ref_rebuilt('int_qualifying_admissions', 'a') }}
    on a.site_code = p.site_code and a.period_end = p.period_end and a.person_id = p.person_id
    and a.admission_type = 'sharp_object_assault'
where p.age <= 24
group by p.site_code, p.period_end, p.person_id
