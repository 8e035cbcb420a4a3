-- Disease registers: latest diagnosis code not followed by a later resolved/remission code
-- (SPEC §5). A resolved code on the same day as the latest diagnosis does not remove the person.
{%- set registers = {
    'hypertension': 'hypertension_resolved',
    'smi': 'smi_remission',
    'copd': 'copd_resolved',
    'asthma': 'asthma_resolved',
    'type1_diabetes': 'diabetes_resolved',
    'epilepsy': 'epilepsy_resolved',
} %}
with latest as (
    select site_code, period_end, person_id, codelist_id, max(event_date) as latest_date
    from {{ ref_rebuilt('int_coded_events') }}
    group by site_code, period_end, person_id, codelist_id
),

{% for register, resolved in registers.items() %}
{{ register }}_register as (
    select dx.site_code, dx.period_end, dx.person_id, '{{ register }}' as register, dx.latest_date as diagnosis_date
    from latest as dx
    left join latest as res
        on res.site_code = dx.site_code and res.period_end = dx.period_end
        and res.person_id = dx.person_id and res.codelist_id = '{{ resolved }}'
    where dx.codelist_id = '{{ register }}'
        and (res.latest_date is null or res.latest_date <= dx.latest_date)
){% if not loop.last %},{% endif %}
{% endfor %}

{% for register in registers %}
select * from {{ register }}_register
{% if not loop.last %}union all{% endif %}
{% endfor %}
