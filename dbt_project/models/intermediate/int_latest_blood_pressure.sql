-- Latest systolic and latest diastolic reading in the 12 months to period_end, each on its own;
-- where a day has several readings the lowest counts (as QOF's blood pressure rules do).
with readings as (
    select
        site_code, period_end, person_id, event_date, value,
        case when codelist_id = 'systolic_bp' then 'systolic' else 'diastolic' end as kind
    from {{ ref_rebuilt('int_coded_events') }}
    where codelist_id in ('systolic_bp', 'diastolic_bp')
        and value is not null
        and {{ in_window('event_date', 'period_end') }}
),

latest as (
    select site_code, period_end, person_id, kind, max(event_date) as reading_date
    from readings
    group by site_code, period_end, person_id, kind
),

lowest_on_latest_day as (
    select r.site_code, r.period_end, r.person_id, r.kind, l.reading_date, min(r.value) as value
    from readings as r
    inner join latest as l using (site_code, period_end, person_id, kind)
    where r.event_date = l.reading_date
    group by r.site_code, r.period_end, r.person_id, r.kind, l.reading_date
)

select
    site_code,
    period_end,
    person_id,
    max(case when kind = 'systolic' then value end) as systolic,
    max(case when kind = 'systolic' then reading_date end) as systolic_date,
    max(case when kind = 'diastolic' then value end) as diastolic,
    max(case when kind = 'diastolic' then reading_date end) as diastolic_date
from lowest_on_latest_day
group by site_code, period_end, person_id
