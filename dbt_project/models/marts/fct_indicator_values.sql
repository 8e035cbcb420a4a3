-- The public mart: one row per site, period, indicator and breakdown cell, unrounded. Disclosure
-- control (suppression, rounding) is applied at publication, never here.
select
    cast(s.site_code as varchar) as site_code,
    cast(s.period_end as date) as period_end,
    cast(s.indicator_id as varchar) as indicator_id,
    cast(s.breakdown as varchar) as breakdown,
    cast(s.breakdown_value as varchar) as breakdown_value,
    cast(s.numerator as bigint) as numerator,
    cast(s.denominator as bigint) as denominator,
    cast(s.value as double precision) as value,
    cast(s.lower_ci as double precision) as lower_ci,
    cast(s.upper_ci as double precision) as upper_ci,
    cast(s.unit as varchar) as unit,
    cast(s.target as double precision) as target,
    cast(s.comparator_value as double precision) as comparator_value
from {{ ref_rebuilt('int_indicator_statistics', 's') }}
