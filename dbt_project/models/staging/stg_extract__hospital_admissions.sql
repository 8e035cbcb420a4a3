select
    site_code,
    period_end,
    person_id,
    cast(admission_date as date) as admission_date,
    upper(replace(primary_diagnosis, '.', '')) as primary_diagnosis,
    upper(replace(external_cause, '.', '')) as external_cause,
    upper(replace(main_procedure, '.', '')) as main_procedure
from {{ source('extract', 'hospital_admissions') }}
