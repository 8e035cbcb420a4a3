-- SMOKING_CESSATION_SUPPORT (SPEC §5.1): people 15+ whose latest smoking status in the 12 months is
-- current smoker; numerator when cessation support was offered or a referral made in the 12 months.
-- A current-smoker and a non-smoker code on the same latest day count as current (support is due).
with statuses as (
    select site_code, period_end, person_id, event_date,
           max(case when codelist_id = 'current_smoker' then 1 else 0 end) as is_current
    from {{ ref_rebuilt('int_coded_events') }}
    where codelist_id in ('current_smoker', 'non_smoker_status')
        and {{ in_window('event_date', 'period_end') }}
    group by site_code, period_end, person_id, event_date
),

latest as (
    select site_code, period_end, person_id, event_date, is_current
    from (
        select statuses.*,
               row_number() over (partition by site_code, period_end, person_id order by event_date desc) as recency
        from statuses
    ) as ranked
    where recency = 1
),

support as (
    select distinct site_code, period_end, person_id
    from {{ ref_rebuilt('int_coded_events') }}
    where codelist_id = 'smoking_cessation_support' and {{ in_window('event_date', 'period_end') }}
)

select
    p.site_code,
    p.period_end,
    p.person_id,
    case when s.person_id is null then 0 else 1 end as numerator
from {{ ref_rebuilt('int_registered_population', 'p') }}
inner join latest as l using (site_code, period_end, person_id)
left join support as s using (site_code, period_end, person_id)
where p.age >= 15 and l.is_current = 1
