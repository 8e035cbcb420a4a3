-- Every person-based indicator stacked: one row per indicator and person in its denominator, with the
-- person's numerator contribution (1/0 for proportions, an event count for rates).
-- Adding an indicator = a catalogue row (seeds/indicators.csv), its int_ind__ model, and a line here.
{%- set indicators = {
    'HYP_TREATED_TO_TARGET': 'int_ind__hyp_treated_to_target',
    'HYP_PREVALENCE': 'int_ind__hyp_prevalence',
} %}
{%- for indicator_id, model in indicators.items() %}
select '{{ indicator_id }}' as indicator_id, site_code, period_end, person_id, numerator
from {{ ref(model) }}
{% if not loop.last %}union all{% endif %}
{%- endfor %}
