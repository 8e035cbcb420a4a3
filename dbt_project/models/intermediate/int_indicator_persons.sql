-- Every person-based indicator stacked: one row per indicator and denominator unit (a person; a
-- cancer registration or maternity booking for those indicators), with its numerator contribution
-- (1/0 for proportions, an admission count for rates).
-- Adding an indicator = a catalogue row (seeds/indicators.csv), its int_ind__ model, and a line here.
-- Area-based indicators (KNIFE_CRIME_RATE) return cell counts directly and join in int_indicator_counts.
{%- set indicators = person_indicator_models() %}
{%- for indicator_id, model in indicators.items() %}
select '{{ indicator_id }}' as indicator_id, site_code, period_end, person_id, numerator
from {{ ref_rebuilt(model) }}
{% if not loop.last %}union all{% endif %}
{%- endfor %}
