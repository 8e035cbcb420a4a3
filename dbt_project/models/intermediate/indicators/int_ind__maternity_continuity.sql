-- MATERNITY_CONTINUITY (SPEC §5.1): antenatal bookings in the 12 months among people registered on
-- period_end; one row per booking, numerator when booked onto a continuity-of-carer pathway.
select
    b.site_code,
    b.period_end,
    b.person_id,
    case when b.continuity_of_carer then 1 else 0 end as numerator
from {{ ref_rebuilt('stg_extract__maternity_bookings', 'b') }}
inner join {{ ref_rebuilt('int_registered_population', 'p') }} using (site_code, period_end, person_id)
where {{ in_window('b.booking_date', 'b.period_end') }}
