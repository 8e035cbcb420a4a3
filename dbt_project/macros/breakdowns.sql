{#- The breakdown cells of SPEC §6 that follow from a person's attributes: the one place that says
    which of them a person falls in. PLUS groups are memberships, not attributes (a person may be in
    several), so they join on their own. Unknown is always its own value, never dropped.

    `relation` holds counts grouped by `keys` and the attributes `breakdown_attributes` lists, with
    additive `numerator` and `denominator`; each cell sums them. Grouped counts are unpivoted, not
    people: a table of one row per person and breakdown held nine rows per person-period, and its
    join with the indicators' persons was the dbt step's largest (docs/performance.md). -#}
{% macro breakdown_cells(relation, keys) %}
{%- set cells = [
    ('overall', none),
    ('imd_quintile', "coalesce(cast(imd_quintile as varchar), 'unknown')"),
    ('core20', 'core20'),
    ('ethnicity', 'ethnic_group'),
    ('sex', 'sex'),
    ('core20_ethnicity', "core20 || '|' || ethnic_group"),
    ('practice', 'practice_code'),
    ('pcn', "coalesce(pcn_code, 'unknown')"),
] %}
{%- set k = keys | join(', ') %}
{%- for breakdown, value in cells %}
select {{ k }}, '{{ breakdown }}' as breakdown, {{ value or "'overall'" }} as breakdown_value,
       sum(numerator) as numerator, cast(sum(denominator) as bigint) as denominator
from {{ relation }}
group by {{ k }}{{ ', ' ~ value if value }}
{% if not loop.last %}union all{% endif %}
{%- endfor %}
{% endmacro %}

{#- The person attributes (columns of int_registered_population) that `breakdown_cells` reads. -#}
{% macro breakdown_attributes(alias) -%}
    {{ alias }}.imd_quintile, {{ alias }}.core20, {{ alias }}.ethnic_group, {{ alias }}.sex,
    {{ alias }}.practice_code, {{ alias }}.pcn_code
{%- endmacro %}
