{{ config(materialized='table') }}  {#- not keyed by period: rebuilt whole every time #}
-- The site registry as published (`evaluation.sites`), with the size of each site's geography.
select
    s.site_code, s.site_name, s.programme, s.geography_kind, s.geography_codes,
    (select string_agg(plus_group, ';' order by plus_group) from {{ source('reference', 'site_plus_groups') }} g
     where g.site_code = s.site_code) as plus_groups,
    (select count(*) from {{ source('reference', 'site_practices') }} p where p.site_code = s.site_code) as practices
from {{ source('reference', 'sites') }} as s
