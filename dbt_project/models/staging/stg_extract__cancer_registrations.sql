select
    site_code,
    period_end,
    person_id,
    cast(diagnosis_date as date) as diagnosis_date,
    icd10,
    stage
from {{ source('extract', 'cancer_registrations') }}
