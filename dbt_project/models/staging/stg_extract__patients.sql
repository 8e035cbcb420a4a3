-- One row per person in a site's period snapshot; text cast to types, no logic.
select
    site_code,
    period_end,
    person_id,
    practice_code,
    nullif(trim(lsoa_code), '') as lsoa_code,
    sex,
    cast(birth_month || '-01' as date) as birth_month,
    ethnic_category,
    cast(registration_start as date) as registration_start,
    cast(registration_end as date) as registration_end,
    cast(date_of_death as date) as date_of_death
from {{ source('extract', 'patients') }}
