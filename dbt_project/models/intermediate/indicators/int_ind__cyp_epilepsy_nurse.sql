-- CYP_EPILEPSY_NURSE (SPEC §5.2): people aged 0-17 on the epilepsy register; numerator when an
-- epilepsy specialist nurse contact is recorded in the 12 months.
with nurse as (
    select distinct site_code, period_end, person_id
    from {{ ref_rebuilt('int_coded_events') }}
    where codelist_id = 'epilepsy_specialist_nurse' and {{ in_window('event_date', 'period_end') }}
)

select
    p.site_code,
    p.period_end,
    p.person_id,
    case when n.person_id is null then 0 else 1 end as numerator
from {{ ref_rebuilt('int_registered_population', 'p') }}
inner join {{ ref_rebuilt('int_registers', 'r') }}
    on r.site_code = p.site_code and r.period_end = p.period_end and r.person_id = p.person_id
    and r.register = 'epilepsy'
left join nurse as n
    on n.site_code = p.site_code and n.period_end = p.period_end and n.person_id = p.person_id
where p.age <= 17
