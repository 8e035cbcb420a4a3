-- SPEC §5: sites record blood pressure and hypertension with at least these SNOMED CT concepts,
-- which the codelists must hold, each in the codelist the indicators read it from.
with required (codelist_id, code) as (
    values ('hypertension', '38341003'), ('hypertension_resolved', '162659009'),
           ('systolic_bp', '271649006'), ('systolic_bp', '72313002'),
           ('diastolic_bp', '271650006'), ('diastolic_bp', '1091811000000102')
)

select r.codelist_id, r.code
from required as r
where not exists (
    select 1 from {{ ref('int_codelist_codes') }} as c
    where c.codelist_id = r.codelist_id and c.code = r.code and c.coding_system = 'snomed_ct')
