{# The person-based indicators and their models: the one list int_indicator_persons stacks and the
   catalogue test checks against seeds/indicators.csv. #}
{% macro person_indicator_models() %}
{%- set indicators = {
    'HYP_TREATED_TO_TARGET': 'int_ind__hyp_treated_to_target',
    'HYP_PREVALENCE': 'int_ind__hyp_prevalence',
    'SMI_HEALTH_CHECK': 'int_ind__smi_health_check',
    'COPD_FLU_VACCINATION': 'int_ind__copd_flu_vaccination',
    'COPD_PNEUMO_VACCINATION': 'int_ind__copd_pneumo_vaccination',
    'COPD_COVID_VACCINATION': 'int_ind__copd_covid_vaccination',
    'CANCER_EARLY_STAGE': 'int_ind__cancer_early_stage',
    'MATERNITY_CONTINUITY': 'int_ind__maternity_continuity',
    'SMOKING_CESSATION_SUPPORT': 'int_ind__smoking_cessation_support',
    'CYP_ASTHMA_RELIEVER_OVERUSE': 'int_ind__cyp_asthma_reliever_overuse',
    'CYP_DIABETES_TECH': 'int_ind__cyp_diabetes_tech',
    'CYP_EPILEPSY_NURSE': 'int_ind__cyp_epilepsy_nurse',
    'CYP_TOOTH_EXTRACTIONS': 'int_ind__cyp_tooth_extractions',
    'CYP_MH_ACCESS': 'int_ind__cyp_mh_access',
    'SHARP_OBJECT_ASSAULT_ADMISSIONS': 'int_ind__sharp_object_assault_admissions',
} %}
{{ return(indicators) }}
{% endmacro %}
