-- The full grid of cells each site publishes for each period, so a cell with no people shows as a
-- zero row rather than going missing (BI tools and evaluators compare like with like).
with periods as (
    select distinct site_code, period_end from {{ ref_rebuilt('int_registered_population') }}
),

fixed (breakdown, breakdown_value) as (
    values
        ('overall', 'overall'),
        ('imd_quintile', '1'), ('imd_quintile', '2'), ('imd_quintile', '3'),
        ('imd_quintile', '4'), ('imd_quintile', '5'), ('imd_quintile', 'unknown'),
        ('core20', 'core20'), ('core20', 'not_core20'), ('core20', 'unknown'),
        ('ethnicity', 'Asian'), ('ethnicity', 'Black'), ('ethnicity', 'Mixed'),
        ('ethnicity', 'White'), ('ethnicity', 'Other'), ('ethnicity', 'Not stated'),
        ('sex', 'Male'), ('sex', 'Female'), ('sex', 'Indeterminate'), ('sex', 'Unknown')
),

core20_ethnicity as (
    select 'core20_ethnicity' as breakdown, c.breakdown_value || '|' || e.breakdown_value as breakdown_value
    from fixed as c cross join fixed as e
    where c.breakdown = 'core20' and e.breakdown = 'ethnicity'
),

site_cells as (
    select g.site_code, 'plus_group' as breakdown, g.plus_group as breakdown_value
    from {{ source('reference', 'site_plus_groups') }} as g
    union all
    select sp.site_code, 'practice', sp.practice_code
    from {{ source('reference', 'site_practices') }} as sp
    union all
    select distinct sp.site_code, 'pcn', coalesce(sp.pcn_code, 'unknown')
    from {{ source('reference', 'site_practices') }} as sp
)

select p.site_code, p.period_end, f.breakdown, f.breakdown_value
from periods as p cross join (select * from fixed union all select * from core20_ethnicity) as f
union all
select p.site_code, p.period_end, s.breakdown, s.breakdown_value
from periods as p inner join site_cells as s using (site_code)
