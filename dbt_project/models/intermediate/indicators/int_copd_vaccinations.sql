-- People on the COPD register (any age) with their vaccination flags, shared by the three COPD
-- indicators: flu and COVID-19 in the 12 months, pneumococcal ever (within the extract's history).
with population as (
    select * from {{ ref_rebuilt('int_registered_population') }}
),

register as (
    select * from {{ ref_rebuilt('int_registers') }} where register = 'copd'
),

vaccinations as (
    select
        site_code, period_end, person_id,
        max(case when codelist_id = 'flu_vaccination' and {{ in_window('event_date', 'period_end') }} then 1 else 0 end) as flu,
        max(case when codelist_id = 'covid_vaccination' and {{ in_window('event_date', 'period_end') }} then 1 else 0 end) as covid,
        max(case when codelist_id = 'pneumococcal_vaccination' then 1 else 0 end) as pneumococcal
    from {{ ref_rebuilt('int_coded_events') }}
    where codelist_id in ('flu_vaccination', 'covid_vaccination', 'pneumococcal_vaccination')
    group by site_code, period_end, person_id
)

select
    p.site_code,
    p.period_end,
    p.person_id,
    coalesce(v.flu, 0) as flu,
    coalesce(v.covid, 0) as covid,
    coalesce(v.pneumococcal, 0) as pneumococcal
from population as p
inner join register as r using (site_code, period_end, person_id)
left join vaccinations as v using (site_code, period_end, person_id)
