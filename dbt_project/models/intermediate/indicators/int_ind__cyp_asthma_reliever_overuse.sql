-- CYP_ASTHMA_RELIEVER_OVERUSE (SPEC §5.2): people aged 5-17 on the asthma register with an asthma
-- medication (reliever or preventer) in the 12 months; numerator when 6 or more reliever (SABA)
-- prescriptions were issued in the 12 months. Lower is better.
with medication as (
    select
        site_code, period_end, person_id,
        count(*) filter (where codelist_id = 'saba') as saba_issues
    from {{ ref_rebuilt('int_coded_events') }}
    where codelist_id in ('saba', 'asthma_preventer') and {{ in_window('event_date', 'period_end') }}
    group by site_code, period_end, person_id
)

select
    p.site_code,
    p.period_end,
    p.person_id,
    case when m.saba_issues >= 6 then 1 else 0 end as numerator
from {{ ref_rebuilt('int_registered_population', 'p') }}
inner join {{ ref_rebuilt('int_registers', 'r') }}
    on r.site_code = p.site_code and r.period_end = p.period_end and r.person_id = p.person_id
    and r.register = 'asthma'
inner join medication as m
    on m.site_code = p.site_code and m.period_end = p.period_end and m.person_id = p.person_id
where p.age between 5 and 17
