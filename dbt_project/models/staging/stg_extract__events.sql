select
    site_code,
    period_end,
    person_id,
    cast(event_date as date) as event_date,
    code,
    cast(value as double precision) as value
from {{ source('extract', 'events') }}
