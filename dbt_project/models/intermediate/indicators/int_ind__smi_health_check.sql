-- SMI_HEALTH_CHECK (SPEC §5.1): people 18+ on the SMI register; numerator when all six physical
-- health checks are recorded in the 12 months: BMI, blood pressure, lipids, glucose or HbA1c,
-- smoking status, alcohol. Any blood pressure reading counts as the blood pressure check, and any
-- smoking status (current, ex or never) as the smoking check.
with population as (
    select * from {{ ref_rebuilt('int_registered_population') }} where age >= 18
),

register as (
    select * from {{ ref_rebuilt('int_registers') }} where register = 'smi'
),

checks as (
    select
        site_code, period_end, person_id,
        count(distinct case
            when codelist_id = 'bmi' then 'bmi'
            when codelist_id in ('blood_pressure_check', 'systolic_bp', 'diastolic_bp') then 'blood_pressure'
            when codelist_id = 'cholesterol' then 'lipids'
            when codelist_id = 'glucose_hba1c' then 'glucose'
            when codelist_id in ('smoking_status', 'current_smoker', 'non_smoker_status') then 'smoking'
            when codelist_id = 'alcohol' then 'alcohol'
        end) as checks_done
    from {{ ref_rebuilt('int_coded_events') }}
    where {{ in_window('event_date', 'period_end') }}
    group by site_code, period_end, person_id
)

select
    p.site_code,
    p.period_end,
    p.person_id,
    case when coalesce(c.checks_done, 0) = 6 then 1 else 0 end as numerator
from population as p
inner join register as r using (site_code, period_end, person_id)
left join checks as c using (site_code, period_end, person_id)
