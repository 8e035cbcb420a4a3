-- Counts by European Standard Population 2013 five-year age band (0-4 ... 90+) per cell, for the
-- catalogue's age-standardised variants (`standardised_from` names the crude indicator they restate).
with variants as (
    select indicator_id, standardised_from from {{ ref('indicators') }} where standardised_from is not null
),

esp as (
    select age_band_order, age_lower, coalesce(age_upper, 200) as age_upper, esp2013_population
    from {{ source('reference', 'esp2013') }}
),

persons as (
    select v.indicator_id, i.site_code, i.period_end, i.person_id, i.numerator
    from {{ ref_rebuilt('int_indicator_persons', 'i') }}
    inner join variants as v on v.standardised_from = i.indicator_id
),

-- the variants' persons grouped once by ESP age band and every attribute a breakdown reads
by_attributes as (
    select p.site_code, p.period_end, p.indicator_id, e.age_band_order, e.esp2013_population,
           {{ breakdown_attributes('r') }}, sum(p.numerator) as numerator, count(*) as denominator
    from persons as p
    inner join {{ ref_rebuilt('int_registered_population', 'r') }} using (site_code, period_end, person_id)
    inner join esp as e on r.age between e.age_lower and e.age_upper
    group by p.site_code, p.period_end, p.indicator_id, e.age_band_order, e.esp2013_population,
             {{ breakdown_attributes('r') }}
),

cells as (
    {{ breakdown_cells('by_attributes', ['site_code', 'period_end', 'indicator_id', 'age_band_order', 'esp2013_population']) }}
    union all
    select p.site_code, p.period_end, p.indicator_id, e.age_band_order, e.esp2013_population,
           'plus_group', g.plus_group, sum(p.numerator), count(*)
    from persons as p
    inner join {{ ref_rebuilt('int_plus_group_members', 'g') }} using (site_code, period_end, person_id)
    inner join {{ ref_rebuilt('int_registered_population', 'r') }} using (site_code, period_end, person_id)
    inner join esp as e on r.age between e.age_lower and e.age_upper
    group by p.site_code, p.period_end, p.indicator_id, e.age_band_order, e.esp2013_population, g.plus_group
)

select site_code, period_end, indicator_id, breakdown, breakdown_value, age_band_order, esp2013_population,
       numerator, denominator
from cells
