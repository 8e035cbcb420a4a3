-- Inequality summary per site, period and indicator (published as `evaluation.inequality_summary`).
select
    cast(site_code as varchar) as site_code,
    cast(period_end as date) as period_end,
    cast(indicator_id as varchar) as indicator_id,
    cast(core20_value as double precision) as core20_value,
    cast(not_core20_value as double precision) as not_core20_value,
    cast(absolute_gap as double precision) as absolute_gap,
    cast(relative_gap as double precision) as relative_gap,
    cast(sii as double precision) as sii,
    cast(sii_lower_ci as double precision) as sii_lower_ci,
    cast(sii_upper_ci as double precision) as sii_upper_ci,
    cast(rii as double precision) as rii,
    cast(rii_lower_ci as double precision) as rii_lower_ci,
    cast(rii_upper_ci as double precision) as rii_upper_ci,
    cast(spc_variation as varchar) as spc_variation,
    cast(spc_assurance as varchar) as spc_assurance
from {{ ref_rebuilt('int_inequality_statistics') }}
