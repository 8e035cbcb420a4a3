-- COPD_COVID_VACCINATION (SPEC §5.1): people on the COPD register; see int_copd_vaccinations.
select site_code, period_end, person_id, covid as numerator
from {{ ref_rebuilt('int_copd_vaccinations') }}
