select
    site_code,
    period_end,
    person_id,
    cast(booking_date as date) as booking_date,
    continuity_of_carer = 'Y' as continuity_of_carer
from {{ source('extract', 'maternity_bookings') }}
