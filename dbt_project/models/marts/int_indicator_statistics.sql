-- Value and 95% confidence interval of every indicator cell (SPEC §7, PHEindicatormethods' methods),
-- from the unrounded counts, and the cell's all-sites comparator:
--   %      Wilson score;
--   rates  Byar's method, exact Poisson limits for a count below 10 (seeds/exact_poisson_limits.csv);
--   _DSR   the variant restates its crude indicator directly standardised to ESP2013 with Dobson
--          limits over the age bands present in the cell, null when the cell's count is below 10.
-- Portable SQL (DuckDB and PostgreSQL) in the macros of macros/statistics.sql, following
-- assets/statistics.py (the tested reference) operation for operation. Columns and types are those of
-- the dbt Python model this replaced (period_end a timestamp, counts doubles); the marts cast them.
{%- set cell = 'site_code, period_end, indicator_id, breakdown, breakdown_value' %}

with catalogue as (
    select indicator_id, unit, multiplier, target, standardised_from from {{ ref('indicators') }}
),

counts as (
    select c.site_code, c.period_end, c.indicator_id, c.breakdown, c.breakdown_value,
           cast(c.numerator as double precision) as numerator,
           cast(c.denominator as double precision) as denominator,
           k.unit, k.multiplier, k.target
    from {{ ref_rebuilt('int_indicator_counts', 'c') }}
    left join catalogue as k on k.indicator_id = c.indicator_id
),

-- every cell of int_indicator_counts: count CIs as assets/statistics.indicator_values_with_cis
crude as (
    select c.site_code, c.period_end, c.indicator_id, c.breakdown, c.breakdown_value, c.numerator, c.denominator,
           c.unit, c.multiplier, c.target,
           case when c.denominator > 0 then c.numerator / c.denominator * c.multiplier end as value,
           case
               when c.denominator = 0 then null
               when c.unit = '%' then {{ wilson_lower('c.numerator', 'c.denominator') }}
               when c.numerator < 10 then p.lower_count * (1.0 / c.denominator)
               else {{ byar_lower('c.numerator') }} * (1.0 / c.denominator)
           end * c.multiplier as lower_ci,
           case
               when c.denominator = 0 then null
               when c.unit = '%' then {{ wilson_upper('c.numerator', 'c.denominator') }}
               when c.numerator < 10 then p.upper_count * (1.0 / c.denominator)
               else {{ byar_upper('c.numerator') }} * (1.0 / c.denominator)
           end * c.multiplier as upper_ci
    from counts as c
    left join {{ ref('exact_poisson_limits') }} as p on p.observed = c.numerator
),

-- the ESP2013 bands of each standardised cell, in age order (assets/statistics.dsr sums them in that order)
bands as (
    select site_code, period_end, indicator_id, breakdown, breakdown_value,
           cast(numerator as double precision) as x,
           cast(denominator as double precision) as n,
           cast(esp2013_population as double precision) as w,
           row_number() over (partition by {{ cell }} order by age_band_order) - 1 as band_position,
           count(*) over (partition by {{ cell }}) as band_count
    from {{ ref_rebuilt('int_indicator_esp_counts') }}
    where denominator > 0
),

standardised as (
    select b.site_code, b.period_end, b.indicator_id, b.breakdown, b.breakdown_value,
           sum(b.x) as numerator, sum(b.n) as denominator, sum(b.w) as standard_population,
           {{ numpy_sum('b.x * b.w / b.n', 'b.band_position', 'b.band_count') }} as weighted_sum,
           {{ numpy_sum('b.x * ((b.w / b.n) * (b.w / b.n))', 'b.band_position', 'b.band_count') }} as variance_sum
    from bands as b
    group by b.site_code, b.period_end, b.indicator_id, b.breakdown, b.breakdown_value
),

dsr as (
    select s.site_code, s.period_end, s.indicator_id, s.breakdown, s.breakdown_value, s.numerator, s.denominator,
           case when s.numerator >= 10 then s.weighted_sum / s.standard_population * k.multiplier end as value,
           -- Dobson: the count's Byar limits, scaled by the standard error of the rate per event
           case when s.numerator >= 10 then sqrt(s.variance_sum / (s.standard_population * s.standard_population) / s.numerator)
                                            * k.multiplier end as scale
    from standardised as s
    inner join catalogue as k on k.indicator_id = s.indicator_id
),

-- each standardised variant on the full grid of cells of the crude indicator it restates
variants as (
    select c.site_code, c.period_end, v.indicator_id, c.breakdown, c.breakdown_value,
           coalesce(d.numerator, 0) as numerator, coalesce(d.denominator, 0) as denominator,
           v.unit, v.multiplier, v.target,
           d.value,
           case when d.numerator >= 10 then d.value + d.scale * ({{ byar_lower('d.numerator') }} - d.numerator) end as lower_ci,
           case when d.numerator >= 10 then d.value + d.scale * ({{ byar_upper('d.numerator') }} - d.numerator) end as upper_ci
    from crude as c
    inner join catalogue as v on v.standardised_from = c.indicator_id
    left join dsr as d
        on d.site_code = c.site_code and d.period_end = c.period_end and d.indicator_id = v.indicator_id
        and d.breakdown = c.breakdown and d.breakdown_value = c.breakdown_value
),

cells as (
    select * from crude
    union all
    select * from variants
),

-- the same cell for all sites combined (crude, also for a standardised variant)
all_sites as (
    select period_end, indicator_id, breakdown, breakdown_value,
           sum(numerator) as numerator, sum(denominator) as denominator, max(multiplier) as multiplier,
           count(distinct case when denominator > 0 then site_code end) as sites
    from cells
    group by period_end, indicator_id, breakdown, breakdown_value
)

select
    c.site_code,
    cast(c.period_end as timestamp) as period_end,
    c.indicator_id,
    c.breakdown,
    c.breakdown_value,
    c.numerator,
    c.denominator,
    c.unit,
    c.multiplier,
    c.target,
    c.value,
    c.lower_ci,
    c.upper_ci,
    case
        when c.breakdown in ('practice', 'pcn') then null  -- site-only breakdowns have no comparator
        when a.denominator > 0 and not {{ comparator_disclosive('a.numerator', 'a.denominator', 'a.sites') }}
            then a.numerator / a.denominator * a.multiplier
    end as comparator_value
from cells as c
inner join all_sites as a
    on a.period_end = c.period_end and a.indicator_id = c.indicator_id
    and a.breakdown = c.breakdown and a.breakdown_value = c.breakdown_value
