-- CANCER_EARLY_STAGE (SPEC §5.1): cancers (malignant neoplasms, codelist cancer_icd10) diagnosed in the
-- 12 months with a known stage 1-4 among people registered on period_end; one row per registration,
-- numerator when stage 1 or 2. Stage X (unknown/unstageable) is outside the denominator.
with cancers as (
    select * from {{ ref_rebuilt('stg_extract__cancer_registrations') }}
),

codes as (
    select code from {{ ref('int_codelist_codes') }} where codelist_id = 'cancer_icd10'
)

select
    c.site_code,
    c.period_end,
    c.person_id,
    case when c.stage in ('1', '2') then 1 else 0 end as numerator
from cancers as c
inner join {{ ref_rebuilt('int_registered_population', 'p') }} using (site_code, period_end, person_id)
where c.stage in ('1', '2', '3', '4')
    and {{ in_window('c.diagnosis_date', 'c.period_end') }}
    and exists (select 1 from codes where starts_with(upper(replace(c.icd10, '.', '')), codes.code))
