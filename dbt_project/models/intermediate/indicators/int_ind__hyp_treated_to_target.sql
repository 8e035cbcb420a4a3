-- HYP_TREATED_TO_TARGET (SPEC §5.1): people 18+ on the hypertension register; numerator when the
-- latest systolic and latest diastolic in 12 months are <= 140/90 (age < 80) or <= 150/90 (80+).
with population as (
    select * from {{ ref_rebuilt('int_registered_population') }} where age >= 18
),

register as (
    select * from {{ ref_rebuilt('int_registers') }} where register = 'hypertension'
),

bp as (
    select * from {{ ref_rebuilt('int_latest_blood_pressure') }}
)

select
    p.site_code,
    p.period_end,
    p.person_id,
    case
        when bp.systolic is null or bp.diastolic is null then 0
        when bp.systolic <= case when p.age >= 80 then 150 else 140 end and bp.diastolic <= 90 then 1
        else 0
    end as numerator
from population as p
inner join register as r using (site_code, period_end, person_id)
left join bp using (site_code, period_end, person_id)
