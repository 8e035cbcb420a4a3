-- HYP_PREVALENCE (SPEC §5.1): registered people 18+; numerator when on the hypertension register.
select
    p.site_code,
    p.period_end,
    p.person_id,
    case when r.person_id is null then 0 else 1 end as numerator
from {{ ref_rebuilt('int_registered_population', 'p') }}
left join {{ ref_rebuilt('int_registers', 'r') }}
    on r.site_code = p.site_code and r.period_end = p.period_end
    and r.person_id = p.person_id and r.register = 'hypertension'
where p.age >= 18
