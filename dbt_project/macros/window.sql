{# The 12-month reporting window of SPEC §5: (period_end - 12 months, period_end]. #}
{% macro in_window(date_col, period_end_col, months=12) -%}
    ({{ date_col }} > {{ period_end_col }} - interval {{ months }} month and {{ date_col }} <= {{ period_end_col }})
{%- endmacro %}

{# Age in whole years at period_end from a birth month (first of the month): period_end is a month end,
   so anyone born in or before period_end's month has had their birthday by then. #}
{% macro age_at(birth_month_col, period_end_col) -%}
    (year({{ period_end_col }}) - year({{ birth_month_col }})
     - case when month({{ period_end_col }}) < month({{ birth_month_col }}) then 1 else 0 end)
{%- endmacro %}
