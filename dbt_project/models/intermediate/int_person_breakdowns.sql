-- One row per person and breakdown cell they fall in (SPEC §6); age bands depend on the indicator
-- and are added in int_indicator_counts. Unknown is always its own value, never dropped.
with p as (
    select * from {{ ref_rebuilt('int_registered_population') }}
)

select site_code, period_end, person_id, 'overall' as breakdown, 'overall' as breakdown_value from p
union all
select site_code, period_end, person_id, 'imd_quintile', coalesce(cast(imd_quintile as varchar), 'unknown') from p
union all
select site_code, period_end, person_id, 'core20', core20 from p
union all
select site_code, period_end, person_id, 'ethnicity', ethnic_group from p
union all
select site_code, period_end, person_id, 'sex', sex from p
union all
select site_code, period_end, person_id, 'core20_ethnicity', core20 || '|' || ethnic_group from p
union all
select site_code, period_end, person_id, 'plus_group', plus_group from {{ ref_rebuilt('int_plus_group_members') }}
union all
select site_code, period_end, person_id, 'practice', practice_code from p
union all
select site_code, period_end, person_id, 'pcn', coalesce(pcn_code, 'unknown') from p
