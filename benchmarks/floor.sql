-- The floor (issue 8, point 2): the published `evaluation.indicator_values` computed by DuckDB alone,
-- straight from the landing zone's CSVs and the reference files, in one script. No dbt, no Dagster.
--
-- It restates the rules of the dbt models (dbt_project/models, macros, seeds) and of
-- assets/statistics.py and checks/disclosure.py independently, written for speed: every file is read
-- once with explicit types, GP events are reduced to one row of flags per person in a single pass,
-- each person carries their PLUS groups as a list, and the breakdown cells come out of one GROUPING
-- SETS aggregation. It assumes what the pipeline's gate guarantees before anything is built: complete
-- submissions (CSV) whose files pass the pandera schemas and submission rules (one row per person,
-- practices of the site, known LSOAs, SNOMED ids as digits), so it withholds nothing. Only what the
-- national table publishes is computed (no practice or pcn breakdowns, which only site schemas carry).
--
-- Parameters, filled in by benchmarks/floor.py (nothing else is substituted):
--   ${landing}                                   landing directory (<landing>/sites/<site>/<YYYY-MM>/*.csv)
--   ${seeds}                                     dbt_project/seeds (indicator catalogue, codelists)
--   ${imd2025} ${iod2019} ${lsoa11_21} ${lsoa21_icb} ${practice_map} ${epcn_partners} ${esp2013}
--   ${census_pop}                                reference files (a landing copy replaces the shipped one)
--   ${police_files}                              police.uk street-level CSVs, a list of paths (at least one)
--   ${imd_vintage}                               2025 or 2019
--   ${site_geography} ${site_plus_groups} ${site_local_priorities}
--                                                the site registry, as SELECTs (VALUES lists)
-- Result: table floor_indicator_values, the columns of evaluation.indicator_values but publication_id.

SET preserve_insertion_order = false;
SET enable_progress_bar = false;

-- ---------------------------------------------------------------------------------------------
-- 1. Site registry, catalogue, codelists
-- ---------------------------------------------------------------------------------------------
CREATE OR REPLACE TEMP TABLE site_geography AS SELECT * FROM (${site_geography}) t(site_code, kind, code);
CREATE OR REPLACE TEMP TABLE site_plus_groups AS SELECT * FROM (${site_plus_groups}) t(site_code, plus_group);
CREATE OR REPLACE TEMP TABLE site_local_priorities AS
    SELECT * FROM (${site_local_priorities}) t(site_code, indicator_id);

CREATE OR REPLACE TEMP TABLE catalogue AS
SELECT * FROM read_csv('${seeds}/indicators.csv', header = true, auto_detect = false, columns = {
    'indicator_id': 'VARCHAR', 'indicator_name': 'VARCHAR', 'clinical_area': 'VARCHAR', 'population': 'VARCHAR',
    'denominator_definition': 'VARCHAR', 'numerator_definition': 'VARCHAR', 'unit': 'VARCHAR',
    'multiplier': 'INTEGER', 'direction': 'VARCHAR', 'target': 'DOUBLE', 'source_dataset': 'VARCHAR',
    'codelists': 'VARCHAR', 'age_bands': 'VARCHAR', 'scope': 'VARCHAR', 'standardised_from': 'VARCHAR'});

-- Fixed age bands per indicator ("18-39;40-59;60-79;80+"); the catalogue's bands do not overlap.
CREATE OR REPLACE TEMP TABLE age_bands AS
SELECT indicator_id, band,
       cast(regexp_extract(band, '^(\d+)', 1) AS INTEGER) AS lower_age,
       CASE WHEN band LIKE '%+' THEN 200 ELSE cast(regexp_extract(band, '-(\d+)$', 1) AS INTEGER) END AS upper_age
FROM (SELECT indicator_id, unnest(string_split(age_bands, ';')) AS band FROM catalogue WHERE age_bands IS NOT NULL);

CREATE OR REPLACE TEMP TABLE codelist AS
SELECT regexp_extract(filename, 'cl_([A-Za-z0-9_]+)\.csv$', 1) AS codelist_id, code, coding_system
FROM read_csv('${seeds}/codelists/cl_*.csv', header = true, auto_detect = false, filename = true, columns = {
    'code': 'VARCHAR', 'term': 'VARCHAR', 'coding_system': 'VARCHAR', 'source': 'VARCHAR'});

-- One row per SNOMED CT concept of any codelist with a bit per flag it raises (a concept can be in
-- several codelists, a flag can stand for several). Submitted codes are validated as digits without a
-- leading zero, so they are read and joined as BIGINT. Bits 0-11 are the registers (diagnosis, resolved).
CREATE OR REPLACE TEMP TABLE flag_bits (pos INTEGER, flag VARCHAR, codelists VARCHAR[]);
INSERT INTO flag_bits VALUES
    (0, 'hyp', ['hypertension']), (1, 'hyp_res', ['hypertension_resolved']), (2, 'smi', ['smi']),
    (3, 'smi_res', ['smi_remission']), (4, 'copd', ['copd']), (5, 'copd_res', ['copd_resolved']),
    (6, 'asthma', ['asthma']), (7, 'asthma_res', ['asthma_resolved']), (8, 't1d', ['type1_diabetes']),
    (9, 't1d_res', ['diabetes_resolved']), (10, 'epi', ['epilepsy']), (11, 'epi_res', ['epilepsy_resolved']),
    (12, 'systolic', ['systolic_bp']), (13, 'diastolic', ['diastolic_bp']),
    (14, 'smoking_status', ['current_smoker', 'non_smoker_status']), (15, 'current_smoker', ['current_smoker']),
    (16, 'bmi', ['bmi']), (17, 'bp_check', ['blood_pressure_check', 'systolic_bp', 'diastolic_bp']),
    (18, 'lipids', ['cholesterol']), (19, 'glucose', ['glucose_hba1c']),
    (20, 'smoking_check', ['smoking_status', 'current_smoker', 'non_smoker_status']), (21, 'alcohol', ['alcohol']),
    (22, 'cessation', ['smoking_cessation_support']), (23, 'flu', ['flu_vaccination']),
    (24, 'covid', ['covid_vaccination']), (25, 'pneumo', ['pneumococcal_vaccination']),
    (26, 'asthma_med', ['saba', 'asthma_preventer']), (27, 'diabetes_tech', ['cgm', 'insulin_pump']),
    (28, 'epilepsy_nurse', ['epilepsy_specialist_nurse']),
    (29, 'homeless', ['homeless']), (30, 'learning_disability', ['learning_disability']), (31, 'autism', ['autism']),
    (32, 'gypsy_roma_traveller', ['gypsy_roma_traveller']), (33, 'justice_contact', ['justice_contact']),
    (34, 'carer', ['carer']), (35, 'asylum_refugee', ['asylum_refugee']), (36, 'looked_after_child', ['looked_after_child']);
CREATE OR REPLACE TEMP MACRO has(mask, pos) AS ((mask >> pos) & 1) = 1;

CREATE OR REPLACE TEMP TABLE snomed AS
WITH codes AS (SELECT * FROM codelist WHERE coding_system = 'snomed_ct' AND regexp_full_match(code, '[1-9][0-9]{0,17}'))
SELECT cast(c.code AS BIGINT) AS code, coalesce(bit_or(1::BIGINT << f.pos), 0) AS mask,
       any_value(n.saba_rows) AS saba_rows   -- rows of the saba codelist: each is one reliever issue
FROM (SELECT DISTINCT code FROM codes) c
LEFT JOIN (SELECT code, count(*) FILTER (WHERE codelist_id = 'saba') AS saba_rows FROM codes GROUP BY 1) n USING (code)
LEFT JOIN codes k USING (code)
LEFT JOIN flag_bits f ON list_contains(f.codelists, k.codelist_id)
GROUP BY 1;

-- ---------------------------------------------------------------------------------------------
-- 2. National reference data (assets/reference.py)
-- ---------------------------------------------------------------------------------------------
CREATE OR REPLACE TEMP TABLE lsoa11_lsoa21 AS
SELECT lsoa11_code, lsoa21_code, ltla22_code, ltla22_name FROM read_csv('${lsoa11_21}', header = true, all_varchar = true);

-- IMD rank under the chosen vintage; IoD2019 (LSOA 2011): a 2021 LSOA takes its most deprived parent.
CREATE OR REPLACE TEMP TABLE imd_native AS
SELECT lsoa21_code AS lsoa_code, cast(cast(IMD_rank AS DOUBLE) AS INTEGER) AS imd_rank
FROM read_csv('${imd2025}', header = true, all_varchar = true) WHERE '${imd_vintage}' = '2025'
UNION ALL
SELECT "LSOA code (2011)", cast(cast("Index of Multiple Deprivation (IMD) Rank (where 1 is most deprived)" AS DOUBLE) AS INTEGER)
FROM read_csv('${iod2019}', header = true, all_varchar = true) WHERE '${imd_vintage}' = '2019';

CREATE OR REPLACE TEMP TABLE lsoa_deprivation AS
WITH imd21 AS (
    SELECT lsoa_code AS lsoa21_code, imd_rank FROM imd_native WHERE '${imd_vintage}' = '2025'
    UNION ALL
    SELECT l.lsoa21_code, min(i.imd_rank) FROM lsoa11_lsoa21 l JOIN imd_native i ON i.lsoa_code = l.lsoa11_code
    WHERE '${imd_vintage}' = '2019' GROUP BY 1),
n AS (SELECT count(*) AS total FROM imd_native)
SELECT lsoa21_code, imd_rank, least(5, cast(ceil(imd_rank * 5.0 / n.total) AS INTEGER)) AS imd_quintile FROM imd21, n;

-- Any LSOA code (2011 or 2021) to the 2021 LSOA it counts as (a split 2011 LSOA: its most deprived child).
CREATE OR REPLACE TEMP TABLE lsoa_to_lsoa21 AS
SELECT lsoa21_code AS lsoa_code, lsoa21_code FROM lsoa_deprivation
UNION ALL
SELECT lsoa11_code, arg_min(l.lsoa21_code, coalesce(d.imd_rank, 1e9))
FROM lsoa11_lsoa21 l LEFT JOIN lsoa_deprivation d USING (lsoa21_code)
WHERE lsoa11_code NOT IN (SELECT lsoa21_code FROM lsoa_deprivation)
GROUP BY lsoa11_code;

CREATE OR REPLACE TEMP TABLE coastal_lsoas AS   -- one row per (LSOA, coastal district) as the join finds them
SELECT g.lsoa21_code
FROM read_csv('${lsoa21_icb}', header = true, all_varchar = true) g
JOIN (SELECT DISTINCT lsoa21_code, ltla22_code, ltla22_name FROM lsoa11_lsoa21) l USING (lsoa21_code)
JOIN read_csv('${seeds}/coastal_local_authorities.csv', header = true, all_varchar = true) c ON c.ltla22_code = l.ltla22_code;

-- Practices: the April 2026 mapping, the ePCN current memberships for practices it does not list.
CREATE OR REPLACE TEMP TABLE site_practices AS
WITH map26 AS (
    SELECT PRACTICE_CODE AS practice_code, PCN_CODE AS pcn_code, ICB_CODE AS icb_code
    FROM read_csv('${practice_map}', header = true, all_varchar = true)),
epcn AS (
    SELECT "Partner Organisation Code" AS practice_code, "PCN Code" AS pcn_code, cast(NULL AS VARCHAR) AS icb_code
    FROM read_csv('${epcn_partners}', header = true, all_varchar = true)
    WHERE "Practice to PCN Relationship End Date" IS NULL
    QUALIFY row_number() OVER (PARTITION BY "Partner Organisation Code"
                               ORDER BY "Practice to PCN Relationship Start Date" DESC) = 1),
practices AS (SELECT * FROM map26 UNION ALL SELECT * FROM epcn WHERE practice_code NOT IN (SELECT practice_code FROM map26))
SELECT DISTINCT g.site_code, p.practice_code, p.pcn_code
FROM site_geography g JOIN practices p
  ON (g.kind = 'icb' AND p.icb_code = g.code) OR (g.kind = 'pcns' AND p.pcn_code = g.code)
  OR (g.kind = 'practices' AND p.practice_code = g.code);

-- ---------------------------------------------------------------------------------------------
-- 3. Submissions and the base population (int_registered_population)
-- ---------------------------------------------------------------------------------------------
-- A file's site and period come from its folder, <landing>/sites/<site_code>/<YYYY-MM>/<file>.
CREATE OR REPLACE TEMP MACRO site_of(f) AS regexp_extract(f, '([^/\\]+)[/\\][^/\\]+[/\\][^/\\]+$', 1);
CREATE OR REPLACE TEMP MACRO period_end_of(f) AS
    last_day(try_cast(regexp_extract(f, '([^/\\]+)[/\\][^/\\]+$', 1) || '-01' AS DATE));
CREATE OR REPLACE TEMP MACRO in_window(d, period_end) AS (d > period_end - INTERVAL 12 MONTH AND d <= period_end);

-- Complete submissions (manifest present) of registry sites in a reporting month (2023-01 .. this month).
CREATE OR REPLACE TEMP TABLE submissions AS
SELECT DISTINCT site_of(file) AS site_code, period_end_of(file) AS period_end
FROM glob('${landing}/sites/*/*/manifest.json')
WHERE site_of(file) IN (SELECT site_code FROM site_geography)
  AND regexp_full_match(regexp_extract(file, '([^/\\]+)[/\\][^/\\]+$', 1), '[0-9]{4}-(0[1-9]|1[0-2])')
  AND period_end_of(file) BETWEEN DATE '2023-01-31' AND last_day(current_date);

CREATE OR REPLACE TEMP TABLE pop AS
SELECT s.site_code, s.period_end, p.person_id, m.lsoa21_code, d.imd_quintile,
       coalesce(cast(d.imd_quintile AS VARCHAR), 'unknown') AS imd_value,
       CASE WHEN d.imd_quintile IS NULL THEN 'unknown' WHEN d.imd_quintile = 1 THEN 'core20' ELSE 'not_core20' END AS core20,
       year(s.period_end) - year(p.birth) - CASE WHEN month(s.period_end) < month(p.birth) THEN 1 ELSE 0 END AS age,
       CASE p.sex WHEN 'M' THEN 'Male' WHEN 'F' THEN 'Female' WHEN 'I' THEN 'Indeterminate' ELSE 'Unknown' END AS sex,
       p.ethnic_category,
       CASE WHEN p.ethnic_category IN ('A', 'B', 'C') THEN 'White'
            WHEN p.ethnic_category IN ('D', 'E', 'F', 'G') THEN 'Mixed'
            WHEN p.ethnic_category IN ('H', 'J', 'K', 'L') THEN 'Asian'
            WHEN p.ethnic_category IN ('M', 'N', 'P') THEN 'Black'
            WHEN p.ethnic_category IN ('R', 'S') THEN 'Other'
            ELSE 'Not stated' END AS ethnic_group
FROM (SELECT site_of(filename) AS site_code, period_end_of(filename) AS period_end, person_id, practice_code,
             nullif(trim(lsoa_code), '') AS lsoa_code, sex, cast(birth_month || '-01' AS DATE) AS birth,
             ethnic_category, registration_start, registration_end, date_of_death
      FROM read_csv('${landing}/sites/*/*/patients.csv', header = true, auto_detect = false, filename = true, columns = {
          'person_id': 'VARCHAR', 'practice_code': 'VARCHAR', 'lsoa_code': 'VARCHAR', 'sex': 'VARCHAR',
          'birth_month': 'VARCHAR', 'ethnic_category': 'VARCHAR', 'registration_start': 'DATE',
          'registration_end': 'DATE', 'date_of_death': 'DATE'})) p
JOIN submissions s ON s.site_code = p.site_code AND s.period_end = p.period_end
JOIN site_practices sp ON sp.site_code = p.site_code AND sp.practice_code = p.practice_code
LEFT JOIN lsoa_to_lsoa21 m ON m.lsoa_code = p.lsoa_code
LEFT JOIN lsoa_deprivation d ON d.lsoa21_code = m.lsoa21_code
WHERE p.registration_start <= s.period_end
  AND (p.registration_end IS NULL OR p.registration_end > s.period_end)
  AND (p.date_of_death IS NULL OR p.date_of_death > s.period_end);

-- ---------------------------------------------------------------------------------------------
-- 4. Person-level facts: GP events in one pass, then admissions, MH contacts
-- ---------------------------------------------------------------------------------------------
-- Per person and snapshot: latest diagnosis / resolved dates per register, latest systolic and
-- diastolic in 12 m (lowest on the latest day: max over (date, -value)), latest smoking status in 12 m
-- (current wins a tie on the day), and the flags of every check, vaccination, medication and PLUS group.
CREATE OR REPLACE TEMP TABLE person_events AS
SELECT site_code, period_end, person_id,
    max(CASE WHEN has(mask, 0) THEN event_date END) AS hyp_dx, max(CASE WHEN has(mask, 1) THEN event_date END) AS hyp_res,
    max(CASE WHEN has(mask, 2) THEN event_date END) AS smi_dx, max(CASE WHEN has(mask, 3) THEN event_date END) AS smi_res,
    max(CASE WHEN has(mask, 4) THEN event_date END) AS copd_dx, max(CASE WHEN has(mask, 5) THEN event_date END) AS copd_res,
    max(CASE WHEN has(mask, 6) THEN event_date END) AS asthma_dx, max(CASE WHEN has(mask, 7) THEN event_date END) AS asthma_res,
    max(CASE WHEN has(mask, 8) THEN event_date END) AS t1d_dx, max(CASE WHEN has(mask, 9) THEN event_date END) AS t1d_res,
    max(CASE WHEN has(mask, 10) THEN event_date END) AS epi_dx, max(CASE WHEN has(mask, 11) THEN event_date END) AS epi_res,
    -max({'d': event_date, 'v': -value}) FILTER (WHERE w AND has(mask, 12) AND value IS NOT NULL).v AS systolic,
    -max({'d': event_date, 'v': -value}) FILTER (WHERE w AND has(mask, 13) AND value IS NOT NULL).v AS diastolic,
    max({'d': event_date, 'c': has(mask, 15)}) FILTER (WHERE w AND has(mask, 14)).c AS latest_is_smoker,
    sum(saba_rows) FILTER (WHERE w) AS saba_issues,
    bit_or(mask) AS any_mask, bit_or(mask) FILTER (WHERE w) AS window_mask
FROM (
    SELECT e.site_code, e.period_end, e.person_id, e.event_date, e.value, e.event_date > e.window_start AS w,
           s.mask, s.saba_rows
    FROM (SELECT site_of(filename) AS site_code, period_end_of(filename) AS period_end,   -- per file, not per row
                 period_end_of(filename) - INTERVAL 12 MONTH AS window_start, person_id, event_date, code, value
          FROM read_csv('${landing}/sites/*/*/events.csv', header = true, auto_detect = false, filename = true,
                        columns = {'person_id': 'VARCHAR', 'event_date': 'DATE', 'code': 'BIGINT', 'value': 'DOUBLE'})) e
    JOIN snomed s ON s.code = e.code
    WHERE e.event_date <= e.period_end)
GROUP BY site_code, period_end, person_id;

-- ICD-10 / OPCS-4 prefix codelists are matched once per distinct code seen, not once per row.
CREATE OR REPLACE TEMP TABLE admissions AS
SELECT site_of(filename) AS site_code, period_end_of(filename) AS period_end, person_id,
       upper(replace(primary_diagnosis, '.', '')) AS dx, upper(replace(external_cause, '.', '')) AS cause,
       upper(replace(main_procedure, '.', '')) AS proc
FROM read_csv('${landing}/sites/*/*/hospital_admissions.csv', header = true, auto_detect = false, filename = true, columns = {
    'person_id': 'VARCHAR', 'admission_date': 'DATE', 'primary_diagnosis': 'VARCHAR', 'external_cause': 'VARCHAR',
    'main_procedure': 'VARCHAR'})
WHERE in_window(admission_date, period_end_of(filename));

CREATE OR REPLACE TEMP TABLE prefix_hits AS   -- (codelist, code value) pairs where the value starts with a code
SELECT DISTINCT k.codelist_id, v.code
FROM (SELECT dx AS code FROM admissions UNION SELECT cause FROM admissions UNION SELECT proc FROM admissions) v
JOIN codelist k ON k.codelist_id IN ('dental_caries_icd10', 'tooth_extraction_opcs4', 'sharp_object_assault_icd10')
               AND starts_with(v.code, k.code);

CREATE OR REPLACE TEMP TABLE person_admissions AS
SELECT site_code, period_end, person_id,
       count(*) FILTER (WHERE d.code IS NOT NULL AND p.code IS NOT NULL) AS tooth_extractions,
       count(*) FILTER (WHERE x.code IS NOT NULL) AS sharp_object_assaults
FROM admissions a
LEFT JOIN (SELECT code FROM prefix_hits WHERE codelist_id = 'dental_caries_icd10') d ON d.code = a.dx
LEFT JOIN (SELECT code FROM prefix_hits WHERE codelist_id = 'tooth_extraction_opcs4') p ON p.code = a.proc
LEFT JOIN (SELECT code FROM prefix_hits WHERE codelist_id = 'sharp_object_assault_icd10') x ON x.code = a.cause
GROUP BY ALL;

CREATE OR REPLACE TEMP TABLE person_mh AS
SELECT DISTINCT site_of(filename) AS site_code, period_end_of(filename) AS period_end, person_id
FROM read_csv('${landing}/sites/*/*/mh_contacts.csv', header = true, auto_detect = false, filename = true, columns = {
    'person_id': 'VARCHAR', 'contact_date': 'DATE', 'service': 'VARCHAR'})
WHERE service = 'cyp_mh' AND in_window(contact_date, period_end_of(filename));

-- ---------------------------------------------------------------------------------------------
-- 5. Indicator denominators (int_indicator_persons): one row per indicator and denominator unit
-- ---------------------------------------------------------------------------------------------
CREATE OR REPLACE TEMP MACRO on_register(dx, res) AS (dx IS NOT NULL AND (res IS NULL OR res <= dx));

CREATE OR REPLACE TEMP TABLE ip AS
WITH e AS (SELECT *, coalesce(window_mask, 0) AS wm, coalesce(any_mask, 0) AS am FROM person_events),
site_groups AS (SELECT site_code, list(plus_group) AS configured FROM site_plus_groups GROUP BY 1),
p AS (   -- one row per person of the base population with every fact the indicators need
    SELECT pop.*, e.hyp_dx, e.hyp_res, e.smi_dx, e.smi_res, e.copd_dx, e.copd_res, e.asthma_dx, e.asthma_res,
           e.t1d_dx, e.t1d_res, e.epi_dx, e.epi_res, e.systolic, e.diastolic, e.latest_is_smoker, e.saba_issues,
           has(wm, 16)::INTEGER + has(wm, 17)::INTEGER + has(wm, 18)::INTEGER + has(wm, 19)::INTEGER
               + has(wm, 20)::INTEGER + has(wm, 21)::INTEGER AS smi_checks,
           has(wm, 22) AS cessation, has(wm, 23) AS flu, has(wm, 24) AS covid, has(am, 25) AS pneumo,
           has(wm, 26) AS asthma_med, has(am, 27) AS diabetes_tech, has(wm, 28) AS epilepsy_nurse,
           coalesce(a.tooth_extractions, 0) AS tooth_extractions,
           coalesce(a.sharp_object_assaults, 0) AS sharp_object_assaults, mh.person_id IS NOT NULL AS cyp_mh_contact,
           -- PLUS groups (int_plus_group_members) the site configured: codelist groups (any code up to
           -- period_end), ethnic minority (not A, Z or 99), coastal (home LSOA in a coastal district)
           list_intersect(coalesce(g.configured, []), list_filter([
               CASE WHEN has(am, 29) THEN 'homeless' END, CASE WHEN has(am, 30) THEN 'learning_disability' END,
               CASE WHEN has(am, 31) THEN 'autism' END, CASE WHEN has(am, 32) THEN 'gypsy_roma_traveller' END,
               CASE WHEN has(am, 33) THEN 'justice_contact' END, CASE WHEN has(am, 34) THEN 'carer' END,
               CASE WHEN has(am, 35) THEN 'asylum_refugee' END, CASE WHEN has(am, 36) THEN 'looked_after_child' END,
               CASE WHEN pop.ethnic_category NOT IN ('A', 'Z', '99') THEN 'ethnic_minority' END,
               CASE WHEN pop.lsoa21_code IN (SELECT lsoa21_code FROM coastal_lsoas) THEN 'coastal' END],
               x -> x IS NOT NULL)) AS plus_groups
    FROM pop
    LEFT JOIN e USING (site_code, period_end, person_id)
    LEFT JOIN person_admissions a USING (site_code, period_end, person_id)
    LEFT JOIN person_mh mh USING (site_code, period_end, person_id)
    LEFT JOIN site_groups g USING (site_code)),
cancers AS (
    SELECT site_of(filename) AS site_code, period_end_of(filename) AS period_end, person_id,
           upper(replace(icd10, '.', '')) AS icd, stage
    FROM read_csv('${landing}/sites/*/*/cancer_registrations.csv', header = true, auto_detect = false, filename = true,
                  columns = {'person_id': 'VARCHAR', 'diagnosis_date': 'DATE', 'icd10': 'VARCHAR', 'stage': 'VARCHAR'})
    WHERE stage IN ('1', '2', '3', '4') AND in_window(diagnosis_date, period_end_of(filename))),
cancer_codes AS (
    SELECT DISTINCT v.icd FROM (SELECT DISTINCT icd FROM cancers) v
    JOIN codelist k ON k.codelist_id = 'cancer_icd10' AND starts_with(v.icd, k.code)),
bookings AS (
    SELECT site_of(filename) AS site_code, period_end_of(filename) AS period_end, person_id, continuity_of_carer
    FROM read_csv('${landing}/sites/*/*/maternity_bookings.csv', header = true, auto_detect = false, filename = true,
                  columns = {'person_id': 'VARCHAR', 'booking_date': 'DATE', 'continuity_of_carer': 'VARCHAR'})
    WHERE in_window(booking_date, period_end_of(filename))),
sharp_sites AS (SELECT DISTINCT site_code FROM site_local_priorities WHERE indicator_id = 'SHARP_OBJECT_ASSAULT_ADMISSIONS'),
rows AS (   -- person-based denominators from one scan: a list of (indicator, numerator) per person, unnested
    SELECT site_code, period_end, age, imd_value, core20, ethnic_group, sex, plus_groups, unnest(list_filter([
        CASE WHEN age >= 18 AND on_register(hyp_dx, hyp_res) THEN {'indicator_id': 'HYP_TREATED_TO_TARGET',
            'num': (systolic <= CASE WHEN age >= 80 THEN 150 ELSE 140 END AND diastolic <= 90) IS TRUE} END,
        CASE WHEN age >= 18 THEN {'indicator_id': 'HYP_PREVALENCE', 'num': on_register(hyp_dx, hyp_res)} END,
        CASE WHEN age >= 18 AND on_register(smi_dx, smi_res) THEN {'indicator_id': 'SMI_HEALTH_CHECK', 'num': smi_checks = 6} END,
        CASE WHEN on_register(copd_dx, copd_res) THEN {'indicator_id': 'COPD_FLU_VACCINATION', 'num': flu} END,
        CASE WHEN on_register(copd_dx, copd_res) THEN {'indicator_id': 'COPD_PNEUMO_VACCINATION', 'num': pneumo} END,
        CASE WHEN on_register(copd_dx, copd_res) THEN {'indicator_id': 'COPD_COVID_VACCINATION', 'num': covid} END,
        CASE WHEN age >= 15 AND latest_is_smoker THEN {'indicator_id': 'SMOKING_CESSATION_SUPPORT', 'num': cessation} END,
        CASE WHEN age BETWEEN 5 AND 17 AND on_register(asthma_dx, asthma_res) AND asthma_med
             THEN {'indicator_id': 'CYP_ASTHMA_RELIEVER_OVERUSE', 'num': saba_issues >= 6} END,
        CASE WHEN age <= 17 AND on_register(t1d_dx, t1d_res) THEN {'indicator_id': 'CYP_DIABETES_TECH', 'num': diabetes_tech} END,
        CASE WHEN age <= 17 AND on_register(epi_dx, epi_res) THEN {'indicator_id': 'CYP_EPILEPSY_NURSE', 'num': epilepsy_nurse} END,
        CASE WHEN age <= 17 THEN {'indicator_id': 'CYP_MH_ACCESS', 'num': cyp_mh_contact} END],
        r -> r IS NOT NULL), recursive := true)
    FROM p),
counted AS (   -- rate numerators: admissions per person
    SELECT site_code, period_end, age, imd_value, core20, ethnic_group, sex, plus_groups,
           'CYP_TOOTH_EXTRACTIONS' AS indicator_id, tooth_extractions AS numerator
    FROM p WHERE age <= 9
    UNION ALL
    SELECT site_code, period_end, age, imd_value, core20, ethnic_group, sex, plus_groups,
           'SHARP_OBJECT_ASSAULT_ADMISSIONS', sharp_object_assaults
    FROM p JOIN sharp_sites USING (site_code) WHERE age <= 24
    UNION ALL   -- one row per cancer registration / maternity booking
    SELECT p.site_code, p.period_end, p.age, p.imd_value, p.core20, p.ethnic_group, p.sex, p.plus_groups,
           'CANCER_EARLY_STAGE', (c.stage IN ('1', '2'))::BIGINT
    FROM cancers c JOIN p ON p.site_code = c.site_code AND p.period_end = c.period_end AND p.person_id = c.person_id
    WHERE c.icd IN (SELECT icd FROM cancer_codes)
    UNION ALL
    SELECT p.site_code, p.period_end, p.age, p.imd_value, p.core20, p.ethnic_group, p.sex, p.plus_groups,
           'MATERNITY_CONTINUITY', (b.continuity_of_carer = 'Y')::BIGINT
    FROM bookings b JOIN p ON p.site_code = b.site_code AND p.period_end = b.period_end AND p.person_id = b.person_id),
all_rows AS (
    SELECT site_code, period_end, age, imd_value, core20, ethnic_group, sex, plus_groups, indicator_id,
           coalesce(num, false)::BIGINT AS numerator
    FROM rows
    UNION ALL
    SELECT * FROM counted)
SELECT r.*, coalesce(a.band, 'other') AS age_band
FROM all_rows r
LEFT JOIN age_bands a ON a.indicator_id = r.indicator_id AND r.age BETWEEN a.lower_age AND a.upper_age;
-- Temporary tables are dropped once used up, to keep memory down at scale.
DROP TABLE person_events; DROP TABLE admissions; DROP TABLE prefix_hits; DROP TABLE person_admissions; DROP TABLE person_mh;

-- ---------------------------------------------------------------------------------------------
-- 6. Cell counts on the full grid (int_breakdown_cells, int_indicator_counts, KNIFE_CRIME_RATE)
-- ---------------------------------------------------------------------------------------------
CREATE OR REPLACE TEMP TABLE counts AS
SELECT site_code, period_end, indicator_id,
       CASE WHEN grouping(imd_value) = 0 THEN 'imd_quintile'
            WHEN grouping(core20) = 0 AND grouping(ethnic_group) = 0 THEN 'core20_ethnicity'
            WHEN grouping(core20) = 0 THEN 'core20' WHEN grouping(ethnic_group) = 0 THEN 'ethnicity'
            WHEN grouping(sex) = 0 THEN 'sex' WHEN grouping(age_band) = 0 THEN 'age_band' ELSE 'overall' END AS breakdown,
       CASE WHEN grouping(imd_value) = 0 THEN imd_value
            WHEN grouping(core20) = 0 AND grouping(ethnic_group) = 0 THEN core20 || '|' || ethnic_group
            WHEN grouping(core20) = 0 THEN core20 WHEN grouping(ethnic_group) = 0 THEN ethnic_group
            WHEN grouping(sex) = 0 THEN sex WHEN grouping(age_band) = 0 THEN age_band ELSE 'overall' END AS breakdown_value,
       sum(numerator) AS numerator, count(*) AS denominator
FROM ip
GROUP BY GROUPING SETS ((site_code, period_end, indicator_id), (site_code, period_end, indicator_id, imd_value),
    (site_code, period_end, indicator_id, core20), (site_code, period_end, indicator_id, ethnic_group),
    (site_code, period_end, indicator_id, sex), (site_code, period_end, indicator_id, core20, ethnic_group),
    (site_code, period_end, indicator_id, age_band))
UNION ALL
SELECT site_code, period_end, indicator_id, 'plus_group', plus_group, sum(numerator), count(*)
FROM (SELECT site_code, period_end, indicator_id, numerator, unnest(plus_groups) AS plus_group FROM ip)
GROUP BY ALL;

CREATE OR REPLACE TEMP TABLE grid AS
WITH periods AS (SELECT DISTINCT site_code, period_end FROM pop),
fixed (breakdown, breakdown_value) AS (VALUES
    ('overall', 'overall'), ('imd_quintile', '1'), ('imd_quintile', '2'), ('imd_quintile', '3'),
    ('imd_quintile', '4'), ('imd_quintile', '5'), ('imd_quintile', 'unknown'),
    ('core20', 'core20'), ('core20', 'not_core20'), ('core20', 'unknown'),
    ('ethnicity', 'Asian'), ('ethnicity', 'Black'), ('ethnicity', 'Mixed'),
    ('ethnicity', 'White'), ('ethnicity', 'Other'), ('ethnicity', 'Not stated'),
    ('sex', 'Male'), ('sex', 'Female'), ('sex', 'Indeterminate'), ('sex', 'Unknown')),
cells AS (
    SELECT p.site_code, p.period_end, f.breakdown, f.breakdown_value FROM periods p CROSS JOIN (
        SELECT * FROM fixed
        UNION ALL
        SELECT 'core20_ethnicity', c.breakdown_value || '|' || e.breakdown_value
        FROM fixed c CROSS JOIN fixed e WHERE c.breakdown = 'core20' AND e.breakdown = 'ethnicity') f
    UNION ALL
    SELECT p.site_code, p.period_end, 'plus_group', g.plus_group FROM periods p JOIN site_plus_groups g USING (site_code)),
site_indicators AS (   -- person-based indicators: every all_sites one, plus the local priorities a site chose
    SELECT DISTINCT p.site_code, p.period_end, k.indicator_id FROM periods p CROSS JOIN catalogue k
    WHERE k.source_dataset <> 'police_uk' AND k.standardised_from IS NULL
      AND (k.scope = 'all_sites' OR EXISTS (SELECT 1 FROM site_local_priorities lp
                                            WHERE lp.site_code = p.site_code AND lp.indicator_id = k.indicator_id)))
SELECT c.site_code, c.period_end, s.indicator_id, c.breakdown, c.breakdown_value
FROM cells c JOIN site_indicators s USING (site_code, period_end)
UNION ALL
SELECT s.site_code, s.period_end, a.indicator_id, 'age_band', a.band FROM site_indicators s JOIN age_bands a USING (indicator_id);

-- KNIFE_CRIME_RATE: "Possession of weapons" crimes in 12 m in the LSOAs where the site's patients live,
-- per Census 2021 usual resident; overall and by the LSOA's deprivation only.
CREATE OR REPLACE TEMP TABLE knife AS
WITH sites AS (SELECT site_code FROM site_local_priorities WHERE indicator_id = 'KNIFE_CRIME_RATE'),
site_lsoas AS (
    SELECT DISTINCT p.site_code, p.period_end, p.lsoa21_code, p.imd_quintile, p.core20
    FROM pop p JOIN sites USING (site_code) WHERE p.lsoa21_code IS NOT NULL),
residents AS (
    SELECT lsoa21_code, sum(cast(usual_residents AS INTEGER)) AS residents
    FROM read_csv('${census_pop}', header = true, all_varchar = true) GROUP BY ALL),
crimes AS (
    SELECT m.lsoa21_code, last_day(cast(c."Month" || '-01' AS DATE)) AS month_end, count(*) AS crimes
    FROM read_csv(${police_files}, header = true, auto_detect = false, columns = {   -- the police.uk street-level layout
        'Crime ID': 'VARCHAR', 'Month': 'VARCHAR', 'Reported by': 'VARCHAR', 'Falls within': 'VARCHAR',
        'Longitude': 'VARCHAR', 'Latitude': 'VARCHAR', 'Location': 'VARCHAR', 'LSOA code': 'VARCHAR',
        'LSOA name': 'VARCHAR', 'Crime type': 'VARCHAR', 'Last outcome category': 'VARCHAR', 'Context': 'VARCHAR'}) c
    JOIN lsoa_to_lsoa21 m ON m.lsoa_code = c."LSOA code"
    WHERE c."Crime type" = 'Possession of weapons'
    GROUP BY ALL),
by_lsoa AS (
    SELECT l.site_code, l.period_end, l.lsoa21_code, l.imd_quintile, l.core20,
           coalesce(r.residents, 0) AS residents, coalesce(sum(c.crimes), 0) AS crimes
    FROM site_lsoas l
    LEFT JOIN residents r USING (lsoa21_code)
    LEFT JOIN crimes c ON c.lsoa21_code = l.lsoa21_code AND in_window(c.month_end, l.period_end)
    GROUP BY ALL),
cells (breakdown, breakdown_value) AS (VALUES
    ('overall', 'overall'), ('imd_quintile', '1'), ('imd_quintile', '2'), ('imd_quintile', '3'),
    ('imd_quintile', '4'), ('imd_quintile', '5'), ('imd_quintile', 'unknown'),
    ('core20', 'core20'), ('core20', 'not_core20'), ('core20', 'unknown')),
knife_grid AS (SELECT DISTINCT p.site_code, p.period_end, c.breakdown, c.breakdown_value
               FROM pop p JOIN sites USING (site_code) CROSS JOIN cells c),
lsoa_cells AS (
    SELECT site_code, period_end, 'overall' AS breakdown, 'overall' AS breakdown_value, crimes, residents FROM by_lsoa
    UNION ALL SELECT site_code, period_end, 'imd_quintile', coalesce(cast(imd_quintile AS VARCHAR), 'unknown'), crimes, residents FROM by_lsoa
    UNION ALL SELECT site_code, period_end, 'core20', core20, crimes, residents FROM by_lsoa)
SELECT g.site_code, g.period_end, 'KNIFE_CRIME_RATE' AS indicator_id, g.breakdown, g.breakdown_value,
       coalesce(sum(l.crimes), 0) AS numerator, coalesce(sum(l.residents), 0) AS denominator
FROM knife_grid g LEFT JOIN lsoa_cells l USING (site_code, period_end, breakdown, breakdown_value)
GROUP BY ALL;

CREATE OR REPLACE TEMP TABLE cell_counts AS
SELECT g.*, coalesce(c.numerator, 0) AS numerator, coalesce(c.denominator, 0) AS denominator
FROM grid g LEFT JOIN counts c USING (site_code, period_end, indicator_id, breakdown, breakdown_value)
UNION ALL   -- cells with people outside the fixed grid (an age outside every band) are kept
SELECT c.* FROM counts c ANTI JOIN grid g USING (site_code, period_end, indicator_id, breakdown, breakdown_value)
UNION ALL
SELECT * FROM knife;
DROP TABLE counts; DROP TABLE grid; DROP TABLE knife; DROP TABLE pop;

-- ---------------------------------------------------------------------------------------------
-- 7. Statistics (assets/statistics.py): Wilson for %, Byar / exact Poisson for rates, DSR + Dobson
-- ---------------------------------------------------------------------------------------------
-- z = norm.ppf(0.975); the exact Poisson limits of a count x < 10 are chi-square quantiles
-- (qchisq(0.025, 2x) / 2, qchisq(0.975, 2x + 2) / 2), which DuckDB has no function for: a table.
CREATE OR REPLACE TEMP MACRO z95() AS 1.959963984540054::DOUBLE;
CREATE OR REPLACE TEMP TABLE exact_poisson (observed INTEGER, lower_count DOUBLE, upper_count DOUBLE);
INSERT INTO exact_poisson VALUES
    (0, 0.0, 3.6888794541139354), (1, 0.025317807984289897, 5.571643390938898),
    (2, 0.24220927854396507, 7.22468766772396), (3, 0.6186721228956015, 8.767273069742323),
    (4, 1.089865373626325, 10.241588675403694), (5, 1.623486390118421, 11.66833207932267),
    (6, 2.201894253490851, 13.059474022518685), (7, 2.814363051519867, 14.422675361702376),
    (8, 3.4538321767485023, 15.763189220193313), (9, 4.115373097378334, 17.084803451419166);
CREATE OR REPLACE TEMP MACRO byar_lower(x) AS x * pow(1.0 - 1.0 / (9.0 * x) - z95() / (3.0 * sqrt(x)), 3);
CREATE OR REPLACE TEMP MACRO byar_upper(x) AS (x + 1.0) * pow(1.0 - 1.0 / (9.0 * (x + 1.0)) + z95() / (3.0 * sqrt(x + 1.0)), 3);

-- Age-standardised variants (standardised_from): ESP2013 five-year bands of the crude indicator's people.
CREATE OR REPLACE TEMP TABLE standardised AS
WITH esp AS (
    SELECT age_lower, coalesce(age_upper, 200) AS age_upper, esp2013_population
    FROM read_csv('${esp2013}', header = true, auto_detect = false, columns = {'age_band_order': 'INTEGER',
        'age_band': 'VARCHAR', 'age_lower': 'INTEGER', 'age_upper': 'INTEGER', 'esp2013_population': 'INTEGER'})),
x AS (
    SELECT v.indicator_id, i.site_code, i.period_end, i.numerator, i.imd_value, i.core20,
           i.ethnic_group, i.sex, i.plus_groups, e.age_lower AS band, e.esp2013_population AS esp
    FROM ip i JOIN catalogue v ON v.standardised_from = i.indicator_id
    JOIN esp e ON i.age BETWEEN e.age_lower AND e.age_upper),
bands AS (
    SELECT site_code, period_end, indicator_id,
           CASE WHEN grouping(imd_value) = 0 THEN 'imd_quintile'
                WHEN grouping(core20) = 0 AND grouping(ethnic_group) = 0 THEN 'core20_ethnicity'
                WHEN grouping(core20) = 0 THEN 'core20' WHEN grouping(ethnic_group) = 0 THEN 'ethnicity'
                WHEN grouping(sex) = 0 THEN 'sex' ELSE 'overall' END AS breakdown,
           CASE WHEN grouping(imd_value) = 0 THEN imd_value
                WHEN grouping(core20) = 0 AND grouping(ethnic_group) = 0 THEN core20 || '|' || ethnic_group
                WHEN grouping(core20) = 0 THEN core20 WHEN grouping(ethnic_group) = 0 THEN ethnic_group
                WHEN grouping(sex) = 0 THEN sex ELSE 'overall' END AS breakdown_value,
           any_value(esp) AS esp, sum(numerator) AS x, count(*) AS n
    FROM x
    GROUP BY GROUPING SETS ((site_code, period_end, indicator_id, band), (site_code, period_end, indicator_id, band, imd_value),
        (site_code, period_end, indicator_id, band, core20), (site_code, period_end, indicator_id, band, ethnic_group),
        (site_code, period_end, indicator_id, band, sex), (site_code, period_end, indicator_id, band, core20, ethnic_group))
    UNION ALL
    SELECT site_code, period_end, indicator_id, 'plus_group', plus_group, any_value(esp), sum(numerator), count(*)
    FROM (SELECT *, unnest(plus_groups) AS plus_group FROM x)
    GROUP BY site_code, period_end, indicator_id, plus_group, band),
dsr AS (
    SELECT b.site_code, b.period_end, b.indicator_id, b.breakdown, b.breakdown_value, any_value(k.multiplier) AS multiplier,
           sum(b.x) AS numerator, sum(b.n) AS denominator,
           sum(b.x::DOUBLE * b.esp / b.n) / sum(b.esp) * any_value(k.multiplier) AS value,
           sum(b.x::DOUBLE * pow(b.esp::DOUBLE / b.n, 2)) / pow(sum(b.esp), 2) AS variance
    FROM bands b JOIN catalogue k USING (indicator_id)
    GROUP BY ALL)
SELECT site_code, period_end, indicator_id, breakdown, breakdown_value, numerator, denominator,
       CASE WHEN numerator >= 10 THEN value END AS value,
       CASE WHEN numerator >= 10 THEN value + sqrt(variance / numerator) * multiplier * (byar_lower(numerator::DOUBLE) - numerator) END AS lower_ci,
       CASE WHEN numerator >= 10 THEN value + sqrt(variance / numerator) * multiplier * (byar_upper(numerator::DOUBLE) - numerator) END AS upper_ci
FROM dsr;
DROP TABLE ip;

CREATE OR REPLACE TEMP TABLE cell_values AS
WITH c AS (
    SELECT c.*, k.unit, k.multiplier, c.numerator::DOUBLE AS x, c.denominator::DOUBLE AS n,
           CASE WHEN k.unit = '%' AND c.denominator > 0 THEN   -- Wilson needs x <= n: rates (events per person) skip it
               z95() * sqrt(z95() * z95() + 4.0 * c.numerator::DOUBLE * (1.0 - c.numerator::DOUBLE / c.denominator)) END AS root,
           byar_lower(c.numerator::DOUBLE) AS b_lower
    FROM cell_counts c JOIN catalogue k USING (indicator_id)),
crude AS (
    SELECT c.site_code, c.period_end, c.indicator_id, c.breakdown, c.breakdown_value, c.numerator, c.denominator,
           CASE WHEN n > 0 THEN x / n * multiplier END AS value,
           CASE WHEN n = 0 THEN NULL
                WHEN unit = '%' THEN CASE WHEN x = 0 THEN 0.0
                                          ELSE greatest(0.0, least(1.0, (2.0 * x + z95() * z95() - root) / (2.0 * (n + z95() * z95())))) END
                WHEN x < 10 THEN ep.lower_count * (1.0 / n)
                WHEN b_lower >= 0 THEN b_lower * (1.0 / n)
           END * multiplier AS lower_ci,
           CASE WHEN n = 0 THEN NULL
                WHEN unit = '%' THEN CASE WHEN x = n THEN 1.0
                                          ELSE greatest(0.0, least(1.0, (2.0 * x + z95() * z95() + root) / (2.0 * (n + z95() * z95())))) END
                WHEN x < 10 THEN ep.upper_count * (1.0 / n)
                ELSE byar_upper(x) * (1.0 / n)
           END * multiplier AS upper_ci,
           unit, multiplier
    FROM c LEFT JOIN exact_poisson ep ON ep.observed = c.numerator)
SELECT * FROM crude
UNION ALL   -- each standardised variant on the full grid of the indicator it restates
SELECT c.site_code, c.period_end, v.indicator_id, c.breakdown, c.breakdown_value,
       coalesce(s.numerator, 0), coalesce(s.denominator, 0), s.value, s.lower_ci, s.upper_ci, v.unit, v.multiplier
FROM crude c JOIN catalogue v ON v.standardised_from = c.indicator_id
LEFT JOIN standardised s ON s.site_code = c.site_code AND s.period_end = c.period_end AND s.indicator_id = v.indicator_id
                        AND s.breakdown = c.breakdown AND s.breakdown_value = c.breakdown_value;
DROP TABLE cell_counts; DROP TABLE standardised;

-- ---------------------------------------------------------------------------------------------
-- 8. Comparator (all sites combined, crude) and disclosure control (SPEC §9)
-- ---------------------------------------------------------------------------------------------
CREATE OR REPLACE TABLE floor_indicator_values AS
WITH comparator AS (  -- null where it would disclose: combined counts 1-7, or fewer than two sites in it
    SELECT period_end, indicator_id, breakdown, breakdown_value,
           CASE WHEN sum(denominator) > 0 AND sum(numerator) NOT BETWEEN 1 AND 7 AND sum(denominator) NOT BETWEEN 1 AND 7
                     AND count(DISTINCT site_code) FILTER (WHERE denominator > 0) >= 2
                THEN sum(numerator)::DOUBLE / sum(denominator) * any_value(multiplier) END AS comparator_value
    FROM cell_values GROUP BY period_end, indicator_id, breakdown, breakdown_value),
flagged AS (
    SELECT v.*, (v.numerator BETWEEN 1 AND 7) OR (v.denominator BETWEEN 1 AND 7) AS suppressed FROM cell_values v)
SELECT f.site_code, f.period_end, f.indicator_id, f.breakdown, f.breakdown_value,
       CASE WHEN f.numerator NOT BETWEEN 1 AND 7 THEN cast(floor(f.numerator::DOUBLE / 5 + 0.5) * 5 AS BIGINT) END AS numerator,
       CASE WHEN f.denominator NOT BETWEEN 1 AND 7 THEN cast(floor(f.denominator::DOUBLE / 5 + 0.5) * 5 AS BIGINT) END AS denominator,
       CASE WHEN NOT f.suppressed THEN f.value END AS value,
       CASE WHEN NOT f.suppressed THEN f.lower_ci END AS lower_ci,
       CASE WHEN NOT f.suppressed THEN f.upper_ci END AS upper_ci,
       f.unit, f.suppressed, k.target, CASE WHEN NOT f.suppressed THEN c.comparator_value END AS comparator_value
FROM flagged f
JOIN catalogue k USING (indicator_id)
JOIN comparator c USING (period_end, indicator_id, breakdown, breakdown_value);
DROP TABLE cell_values;
