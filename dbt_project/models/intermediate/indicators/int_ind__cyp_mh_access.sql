-- CYP_MH_ACCESS (SPEC §5.2): registered people aged 0-17; numerator when they had at least one
-- children and young people's mental health service contact (service = cyp_mh) in the 12 months.
with contacts as (
    select distinct site_code, period_end, person_id
    from {{ ref_rebuilt('stg_extract__mh_contacts') }}
    where service = 'cyp_mh' and {{ in_window('contact_date', 'period_end') }}
)

select
    p.site_code,
    p.period_end,
    p.person_id,
    case when c.person_id is null then 0 else 1 end as numerator
from {{ ref_rebuilt('int_registered_population', 'p') }}
left join contacts as c using (site_code, period_end, person_id)
where p.age <= 17
