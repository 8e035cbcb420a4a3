{{ config(materialized='table') }}  {#- not keyed by period: rebuilt whole every time #}
-- Every codelist seed (seeds/codelists/cl_<id>.csv) stacked: one row per codelist and code.
-- Adding a codelist = its seed file plus its id in this list.
{%- set codelists = [
    'hypertension', 'hypertension_resolved', 'systolic_bp', 'diastolic_bp',
    'smi', 'smi_remission', 'bmi', 'blood_pressure_check', 'cholesterol', 'glucose_hba1c',
    'smoking_status', 'alcohol', 'current_smoker', 'non_smoker_status', 'smoking_cessation_support',
    'copd', 'copd_resolved', 'flu_vaccination', 'pneumococcal_vaccination', 'covid_vaccination',
    'asthma', 'asthma_resolved', 'saba', 'asthma_preventer',
    'type1_diabetes', 'diabetes_resolved', 'cgm', 'insulin_pump',
    'epilepsy', 'epilepsy_resolved', 'epilepsy_specialist_nurse',
    'homeless', 'learning_disability', 'autism', 'gypsy_roma_traveller', 'justice_contact',
    'carer', 'asylum_refugee', 'looked_after_child',
    'dental_caries_icd10', 'tooth_extraction_opcs4', 'sharp_object_assault_icd10', 'cancer_icd10',
] %}
{%- for cl in codelists %}
select '{{ cl }}' as codelist_id, cast(code as varchar) as code, coding_system, term
from {{ ref('cl_' ~ cl) }}
{% if not loop.last %}union all{% endif %}
{%- endfor %}
