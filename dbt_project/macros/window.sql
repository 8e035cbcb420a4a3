{# The 12-month reporting window of SPEC §5: (period_end - 12 months, period_end]. dbt.dateadd keeps
   it portable (DuckDB and PostgreSQL). #}
{% macro in_window(date_col, period_end_col, months=12) -%}
    ({{ date_col }} > ({{ dbt.dateadd('month', -months, period_end_col) }}) and {{ date_col }} <= {{ period_end_col }})
{%- endmacro %}

{# Age in whole years at period_end from a birth month (first of the month): period_end is a month end,
   so anyone born in or before period_end's month has had their birthday by then. A bigint on every
   engine (PostgreSQL's extract gives numeric). #}
{% macro age_at(birth_month_col, period_end_col) -%}
    cast(extract(year from {{ period_end_col }}) - extract(year from {{ birth_month_col }})
         - case when extract(month from {{ period_end_col }}) < extract(month from {{ birth_month_col }}) then 1 else 0 end
         as bigint)
{%- endmacro %}
