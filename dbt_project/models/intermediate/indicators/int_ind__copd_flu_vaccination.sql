-- COPD_FLU_VACCINATION (SPEC §5.1): people on the COPD register; see int_copd_vaccinations.
select site_code, period_end, person_id, flu as numerator
from {{ ref_rebuilt('int_copd_vaccinations') }}
