-- Numerator and denominator per site, period, indicator and breakdown cell, from unrounded person
-- counts (disclosure control happens only at publication). Zero cells are kept.
with persons as (
    select * from {{ ref_rebuilt('int_indicator_persons') }}
),

catalogue as (
    select * from {{ ref('indicators') }}
),

-- the indicators' persons grouped once by every attribute a breakdown reads; the cells sum the groups
by_attributes as (
    select i.site_code, i.period_end, i.indicator_id, {{ breakdown_attributes('p') }},
           sum(i.numerator) as numerator, count(*) as denominator
    from persons as i
    inner join {{ ref_rebuilt('int_registered_population', 'p') }} using (site_code, period_end, person_id)
    group by i.site_code, i.period_end, i.indicator_id, {{ breakdown_attributes('p') }}
),

by_cell as (
    {{ breakdown_cells('by_attributes', ['site_code', 'period_end', 'indicator_id']) }}
    union all
    select i.site_code, i.period_end, i.indicator_id, 'plus_group', g.plus_group,
           sum(i.numerator), count(*)
    from persons as i
    inner join {{ ref_rebuilt('int_plus_group_members', 'g') }} using (site_code, period_end, person_id)
    group by i.site_code, i.period_end, i.indicator_id, g.plus_group
),

-- the catalogue's age bands, "18-39;40-59;60-79;80+": one row per band with its ages
age_bands as (
    select indicator_id, band,
           cast(replace({{ dbt.split_part('band', "'-'", 1) }}, '+', '') as integer) as lower_age,
           case when band like '%+' then 200 else cast({{ dbt.split_part('band', "'-'", 2) }} as integer) end as upper_age
    from (
        select indicator_id, unnest(string_to_array(age_bands, ';')) as band  -- DuckDB and PostgreSQL alike
        from catalogue where age_bands is not null
    ) as bands
),

by_age as (
    select i.site_code, i.period_end, i.indicator_id, 'age_band' as breakdown,
           coalesce(a.band, 'other') as breakdown_value,
           sum(i.numerator) as numerator, count(*) as denominator
    from persons as i
    inner join {{ ref_rebuilt('int_registered_population', 'p') }} using (site_code, period_end, person_id)
    left join age_bands as a on a.indicator_id = i.indicator_id and p.age between a.lower_age and a.upper_age
    group by i.site_code, i.period_end, i.indicator_id, coalesce(a.band, 'other')
),

-- the person-based indicators each site publishes: every all_sites indicator, plus the local
-- priorities it chose (area-based ones come from their own models)
site_indicators as (
    select distinct c.site_code, c.period_end, i.indicator_id
    from {{ ref_rebuilt('int_breakdown_cells', 'c') }}
    cross join catalogue as i
    where i.source_dataset <> 'police_uk' and i.standardised_from is null
        and (i.scope = 'all_sites' or exists (
            select 1 from {{ source('reference', 'site_local_priorities') }} as lp
            where lp.site_code = c.site_code and lp.indicator_id = i.indicator_id))
),

grid as (
    select c.site_code, c.period_end, s.indicator_id, c.breakdown, c.breakdown_value
    from {{ ref_rebuilt('int_breakdown_cells', 'c') }}
    inner join site_indicators as s using (site_code, period_end)
    union all
    select s.site_code, s.period_end, a.indicator_id, 'age_band', a.band
    from site_indicators as s
    inner join age_bands as a using (indicator_id)
),

counts as (
    select * from by_cell
    union all
    select * from by_age
)

select
    g.site_code, g.period_end, g.indicator_id, g.breakdown, g.breakdown_value,
    coalesce(c.numerator, 0) as numerator,
    coalesce(c.denominator, 0) as denominator
from grid as g
left join counts as c using (site_code, period_end, indicator_id, breakdown, breakdown_value)
union all
-- cells with people but outside the fixed grid (e.g. an age outside every band) are kept, not dropped
select c.* from counts as c
where not exists (
    select 1 from grid as g
    where g.site_code = c.site_code and g.period_end = c.period_end and g.indicator_id = c.indicator_id
        and g.breakdown = c.breakdown and g.breakdown_value = c.breakdown_value)
union all
select site_code, period_end, indicator_id, breakdown, breakdown_value, numerator, denominator
from {{ ref_rebuilt('int_ind__knife_crime_rate') }}
