{# Incremental builds by period (docs/performance.md, "Incremental dbt").

   Every model keyed by period_end is an `incremental` table (dbt_project.yml). The orchestration
   (assets/incremental.py) passes `--vars {rebuild_from: <period_end>}` when only the periods from that
   one on changed since the last good build; otherwise it passes no rebuild_from and --full-refresh.
   Periods are independent snapshots except where a model looks across them (the all-sites comparator
   within a period; the SPC of a month, over the months before it), so rebuilding every site's periods
   from the earliest changed one through the latest gives the same tables as a full build.

   Without rebuild_from an incremental model still rebuilds every period (delete all, insert all), so a
   plain `dbt build` is always right. #}

{# The first period_end rebuilt, or none for every period. A unit test always sees its whole fixture:
   it checks the model's logic, not which periods a night rebuilds. #}
{% macro rebuild_from() -%}
    {{ return(none if model.resource_type == 'unit_test' else (var('rebuild_from', none) or none)) }}
{%- endmacro %}

{# A period-keyed model (ref) as its periods being rebuilt: the whole relation on a full build.
   Every ref to a period-keyed model goes through this, so an incremental model computes only those
   periods; `alias` names it in the query (PostgreSQL 15 needs one for a subquery). #}
{% macro ref_rebuilt(model_name, alias=none) -%}
    {%- set relation = ref(model_name) -%}
    {%- set since = rebuild_from() -%}
    {%- if since -%}
        (select * from {{ relation }} where period_end >= {{ period_literal(since) }}) as {{ alias or model_name }}
    {%- else -%}
        {{ relation }}{% if alias %} as {{ alias }}{% endif %}
    {%- endif -%}
{%- endmacro %}

{% macro period_literal(iso_date) -%}
    {%- if not modules.re.fullmatch('[0-9]{4}-[0-9]{2}-[0-9]{2}', iso_date | string) -%}
        {{ exceptions.raise_compiler_error("rebuild_from must be an ISO date (YYYY-MM-DD), got " ~ iso_date) }}
    {%- endif -%}
    cast('{{ iso_date }}' as date)
{%- endmacro %}

{# Pre-hook of every incremental model, inside the model's transaction: drop the periods about to be
   inserted again (all of them without rebuild_from). Deleting rather than merging on a key means a
   site-period that now has no rows loses its old ones. A model that does not exist yet cannot be built
   from some periods only: that needs a full refresh, which the orchestration asks for. #}
{% macro delete_rebuilt_periods() -%}
    {%- if model.config.materialized != 'incremental' -%}
        {{ return('') }}
    {%- endif -%}
    {%- set since = rebuild_from() -%}
    {%- if is_incremental() -%}
        delete from {{ this }}{% if since %} where period_end >= {{ period_literal(since) }}{% endif %}
    {%- elif since and execute -%}
        {{ exceptions.raise_compiler_error(this ~ " does not exist (or --full-refresh was given), so it cannot be "
            ~ "rebuilt from " ~ since ~ " only: run a full refresh, without the rebuild_from var") }}
    {%- endif -%}
{%- endmacro %}
