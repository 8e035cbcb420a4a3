-- The catalogue (seeds/indicators.csv) and the SQL agree: every catalogue indicator is either in
-- person_indicator_models() or an area-based model, and every modelled indicator is catalogued.
{%- set modelled = person_indicator_models().keys() | list + ['KNIFE_CRIME_RATE'] %}
with modelled (indicator_id) as (
    values {% for i in modelled %}('{{ i }}'){% if not loop.last %}, {% endif %}{% endfor %}
)

select 'in catalogue without SQL' as problem, indicator_id from {{ ref('dim_indicators') }}
where indicator_id not in (select indicator_id from modelled) and standardised_from is null
union all
select 'SQL without catalogue row', indicator_id from modelled
where indicator_id not in (select indicator_id from {{ ref('dim_indicators') }})
union all
select 'published but not catalogued', indicator_id from {{ ref('fct_indicator_values') }}
where indicator_id not in (select indicator_id from {{ ref('dim_indicators') }})
