-- Inequality summary per site, period and indicator (published as `evaluation.inequality_summary`).
select
    cast(site_code as varchar) as site_code,
    cast(period_end as date) as period_end,
    cast(indicator_id as varchar) as indicator_id,
    cast(core20_value as double) as core20_value,
    cast(not_core20_value as double) as not_core20_value,
    cast(absolute_gap as double) as absolute_gap,
    cast(relative_gap as double) as relative_gap,
    cast(sii as double) as sii,
    cast(sii_lower_ci as double) as sii_lower_ci,
    cast(sii_upper_ci as double) as sii_upper_ci,
    cast(rii as double) as rii,
    cast(rii_lower_ci as double) as rii_lower_ci,
    cast(rii_upper_ci as double) as rii_upper_ci,
    cast(spc_variation as varchar) as spc_variation,
    cast(spc_assurance as varchar) as spc_assurance
from {{ ref('int_inequality_statistics') }}
