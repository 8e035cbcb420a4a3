-- The base population of SPEC §5: registered at a site practice on period_end and alive then,
-- with everything the breakdowns need (deprivation, age, sex, ethnicity, practice, PCN).
with patients as (
    select * from {{ ref_rebuilt('stg_extract__patients') }}
),

site_practices as (
    select * from {{ source('reference', 'site_practices') }}
),

lsoa_map as (
    select * from {{ source('reference', 'lsoa_to_lsoa21') }}
),

deprivation as (
    select * from {{ source('reference', 'lsoa_deprivation') }}
)

select
    p.site_code,
    p.period_end,
    p.person_id,
    p.practice_code,
    sp.pcn_code,
    m.lsoa21_code,
    d.imd_quintile,
    case
        when d.imd_quintile is null then 'unknown'
        when d.imd_quintile = 1 then 'core20'
        else 'not_core20'
    end as core20,
    {{ age_at('p.birth_month', 'p.period_end') }} as age,
    case p.sex when 'M' then 'Male' when 'F' then 'Female' when 'I' then 'Indeterminate' else 'Unknown' end as sex,
    p.ethnic_category,
    case
        when p.ethnic_category in ('A', 'B', 'C') then 'White'
        when p.ethnic_category in ('D', 'E', 'F', 'G') then 'Mixed'
        when p.ethnic_category in ('H', 'J', 'K', 'L') then 'Asian'
        when p.ethnic_category in ('M', 'N', 'P') then 'Black'
        when p.ethnic_category in ('R', 'S') then 'Other'
        else 'Not stated'
    end as ethnic_group
from patients as p
inner join site_practices as sp
    on sp.site_code = p.site_code and sp.practice_code = p.practice_code
left join lsoa_map as m on m.lsoa_code = p.lsoa_code
left join deprivation as d on d.lsoa21_code = m.lsoa21_code
where p.registration_start <= p.period_end
    and (p.registration_end is null or p.registration_end > p.period_end)
    and (p.date_of_death is null or p.date_of_death > p.period_end)
