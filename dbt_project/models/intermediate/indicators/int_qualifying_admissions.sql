-- Hospital admissions in each period's 12 months that count towards an admissions-based indicator,
-- matched by ICD-10 / OPCS-4 prefix (codes upper-cased without dots in staging):
--   tooth_extraction: primary diagnosis dental caries (K02) with main procedure F09 or F10;
--   sharp_object_assault: external cause assault by sharp object (X99).
with admissions as (
    select * from {{ ref_rebuilt('stg_extract__hospital_admissions') }}
    where {{ in_window('admission_date', 'period_end') }}
),

codes as (
    select codelist_id, code from {{ ref('int_codelist_codes') }}
    where codelist_id in ('dental_caries_icd10', 'tooth_extraction_opcs4', 'sharp_object_assault_icd10')
)

select a.site_code, a.period_end, a.person_id, a.admission_date, 'tooth_extraction' as admission_type
from admissions as a
where exists (select 1 from codes where codelist_id = 'dental_caries_icd10' and starts_with(a.primary_diagnosis, code))
    and exists (select 1 from codes where codelist_id = 'tooth_extraction_opcs4' and starts_with(a.main_procedure, code))
union all
select a.site_code, a.period_end, a.person_id, a.admission_date, 'sharp_object_assault'
from admissions as a
where exists (select 1 from codes where codelist_id = 'sharp_object_assault_icd10' and starts_with(a.external_cause, code))
