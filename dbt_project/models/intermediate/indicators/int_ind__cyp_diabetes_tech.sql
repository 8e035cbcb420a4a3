-- CYP_DIABETES_TECH (SPEC §5.2): people aged 0-17 on the type 1 diabetes register; numerator when
-- real-time continuous glucose monitoring or an insulin pump is recorded (any time in the extract).
with technology as (
    select distinct site_code, period_end, person_id
    from {{ ref_rebuilt('int_coded_events') }}
    where codelist_id in ('cgm', 'insulin_pump')
)

select
    p.site_code,
    p.period_end,
    p.person_id,
    case when t.person_id is null then 0 else 1 end as numerator
from {{ ref_rebuilt('int_registered_population', 'p') }}
inner join {{ ref_rebuilt('int_registers', 'r') }}
    on r.site_code = p.site_code and r.period_end = p.period_end and r.person_id = p.person_id
    and r.register = 'type1_diabetes'
left join technology as t
    on t.site_code = p.site_code and t.period_end = p.period_end and t.person_id = p.person_id
where p.age <= 17
