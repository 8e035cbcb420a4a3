-- KNIFE_CRIME_RATE (SPEC §5.3), an area-based rate for sites that chose it as a local priority:
-- police-recorded "Possession of weapons" crimes in the 12 months in the site's LSOAs per 1,000
-- Census 2021 usual residents of those LSOAs. The site's LSOAs are those where at least one of its
-- registered patients lives on period_end. Published overall and by the LSOA's deprivation only
-- (person breakdowns such as sex or ethnicity do not apply to crimes). Returns cell counts.
with sites as (
    select site_code from {{ source('reference', 'site_local_priorities') }} where indicator_id = 'KNIFE_CRIME_RATE'
),

site_lsoas as (
    select distinct p.site_code, p.period_end, p.lsoa21_code, p.imd_quintile, p.core20
    from {{ ref_rebuilt('int_registered_population', 'p') }}
    inner join sites using (site_code)
    where p.lsoa21_code is not null
),

residents as (
    select lsoa21_code, sum(usual_residents) as residents
    from {{ source('reference', 'lsoa_population') }}
    group by lsoa21_code
),

{%- set month_end = dbt.last_day("cast(month || '-01' as date)", 'month') %}
crimes as (
    select lsoa21_code, {{ month_end }} as month_end, count(*) as crimes
    from {{ source('reference', 'police_crimes') }}
    where crime_type = 'Possession of weapons' and lsoa21_code is not null
    group by lsoa21_code, {{ month_end }}
),

by_lsoa as (
    select l.site_code, l.period_end, l.lsoa21_code, l.imd_quintile, l.core20,
           coalesce(r.residents, 0) as residents,
           coalesce(sum(c.crimes), 0) as crimes
    from site_lsoas as l
    left join residents as r using (lsoa21_code)
    left join crimes as c
        on c.lsoa21_code = l.lsoa21_code and {{ in_window('c.month_end', 'l.period_end') }}
    group by l.site_code, l.period_end, l.lsoa21_code, l.imd_quintile, l.core20, coalesce(r.residents, 0)
),

cells (breakdown, breakdown_value) as (
    values ('overall', 'overall'), ('imd_quintile', '1'), ('imd_quintile', '2'), ('imd_quintile', '3'),
           ('imd_quintile', '4'), ('imd_quintile', '5'), ('imd_quintile', 'unknown'),
           ('core20', 'core20'), ('core20', 'not_core20'), ('core20', 'unknown')
),

grid as (
    select distinct p.site_code, p.period_end, c.breakdown, c.breakdown_value
    from {{ ref_rebuilt('int_registered_population', 'p') }}
    inner join sites using (site_code)
    cross join cells as c
),

lsoa_cells as (
    select site_code, period_end, 'overall' as breakdown, 'overall' as breakdown_value, crimes, residents from by_lsoa
    union all
    select site_code, period_end, 'imd_quintile', coalesce(cast(imd_quintile as varchar), 'unknown'), crimes, residents from by_lsoa
    union all
    select site_code, period_end, 'core20', core20, crimes, residents from by_lsoa
)

select
    g.site_code,
    g.period_end,
    'KNIFE_CRIME_RATE' as indicator_id,
    g.breakdown,
    g.breakdown_value,
    coalesce(sum(l.crimes), 0) as numerator,
    coalesce(sum(l.residents), 0) as denominator
from grid as g
left join lsoa_cells as l using (site_code, period_end, breakdown, breakdown_value)
group by g.site_code, g.period_end, g.breakdown, g.breakdown_value
