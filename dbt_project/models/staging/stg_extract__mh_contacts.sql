select
    site_code,
    period_end,
    person_id,
    cast(contact_date as date) as contact_date,
    service
from {{ source('extract', 'mh_contacts') }}
