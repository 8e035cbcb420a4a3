{# The 95% confidence limits of SPEC §7 (PHEindicatormethods' methods) as SQL expressions over double
   precision columns, for int_indicator_statistics. assets/statistics.py is the tested reference: these
   do the same arithmetic in the same order, so both give the same numbers (to the last bit, except
   where numpy's vectorised power on some CPUs is not the C library's; see docs/decisions.md). Plain
   SQL that DuckDB and PostgreSQL both run. tests/unit/test_statistics_sql.py checks them against the
   reference on a grid of counts. #}

{# z for a two-sided 95% interval: scipy.stats.norm.ppf(0.975), as assets/statistics.py has it. #}
{% macro z95() -%}
    cast(1.959963984540054 as double precision)
{%- endmacro %}

{# Wilson score limits of a proportion x/n on the 0..1 scale; null when n = 0. x = 0 and x = n give
   exactly 0 and 1, and round-off never leaves [0, 1] (as wilson_ci_arrays pins and clips them). #}
{% macro wilson_lower(x, n) -%}
    case when {{ n }} > 0 then
        case when {{ x }} = 0 then 0.0
             else greatest(0.0, least(1.0, (2.0 * {{ x }} + {{ z95() }} * {{ z95() }} - {{ _wilson_root(x, n) }})
                                           / (2.0 * ({{ n }} + {{ z95() }} * {{ z95() }})))) end
    end
{%- endmacro %}

{% macro wilson_upper(x, n) -%}
    case when {{ n }} > 0 then
        case when {{ x }} = {{ n }} then 1.0
             else greatest(0.0, least(1.0, (2.0 * {{ x }} + {{ z95() }} * {{ z95() }} + {{ _wilson_root(x, n) }})
                                           / (2.0 * ({{ n }} + {{ z95() }} * {{ z95() }})))) end
    end
{%- endmacro %}

{% macro _wilson_root(x, n) -%}
    {{ z95() }} * sqrt({{ z95() }} * {{ z95() }} + 4.0 * {{ x }} * (1.0 - {{ x }} / {{ n }}))
{%- endmacro %}

{# Byar's approximate limits of an observed count x (x > 0: only used from 10 up, where the exact
   Poisson limits of seeds/exact_poisson_limits.csv stop). #}
{% macro byar_lower(x) -%}
    ({{ x }} * power(1.0 - 1.0 / (9.0 * {{ x }}) - {{ z95() }} / (3.0 * sqrt({{ x }})), 3))
{%- endmacro %}

{% macro byar_upper(x) -%}
    (({{ x }} + 1.0) * power(1.0 - 1.0 / (9.0 * ({{ x }} + 1.0)) + {{ z95() }} / (3.0 * sqrt({{ x }} + 1.0)), 3))
{%- endmacro %}

{# Where an all-sites comparator must not be published (checks/disclosure.py comparator_disclosive):
   its combined numerator or denominator is in the suppressed range, or fewer than
   min_comparator_sites sites have people in the cell. The vars are checks/disclosure.py's constants
   (tests/unit/test_statistics_sql.py checks they agree). #}
{% macro comparator_disclosive(numerator, denominator, sites) -%}
    ({{ numerator }} between {{ var('suppress_min') }} and {{ var('suppress_max') }}
     or {{ denominator }} between {{ var('suppress_min') }} and {{ var('suppress_max') }}
     or {{ sites }} < {{ var('min_comparator_sites') }})
{%- endmacro %}

{# An aggregate: the float sum of a group's values added in the order numpy's np.sum adds a 1-D
   float64 array of up to 128 values (pairwise_sum in numpy's loops_utils.h.src): fewer than 8 values
   one after another; otherwise 8 interleaved partial sums over the largest multiple of 8 values,
   combined pairwise, then the rest one after another. assets/statistics.dsr() sums a cell's age bands
   that way, so this gives its bits, and the same bits whatever order the engine feeds the rows to
   the aggregate (a plain sum() promises neither). `position` is the row's 0-based place in the array
   and `size` the group's number of rows (window functions over the group), `max_size` the most rows
   a group can have (ESP2013: 19 age bands). Each place is picked with max(), and a place that is
   not there adds 0.0, which changes no sum. #}
{% macro numpy_sum(value, position, size, max_size=19) -%}
    {%- if max_size > 128 -%}
        {{ exceptions.raise_compiler_error("numpy_sum: numpy sums more than 128 values recursively, which this does not follow") }}
    {%- endif -%}
    {%- set blocked = '(' ~ size ~ ' - ' ~ size ~ ' % 8)' -%}
    {%- set lanes = [] -%}
    {%- for lane in range(8) -%}
        {%- set terms = [] -%}
        {%- for place in range(lane, max_size, 8) -%}
            {%- do terms.append('coalesce(max(case when ' ~ position ~ ' = ' ~ place ~ ' and ' ~ position ~ ' < ' ~ blocked
                                ~ ' then ' ~ value ~ ' end), 0.0)') -%}
        {%- endfor -%}
        {%- do lanes.append('(' ~ (terms | join(' + ') if terms else '0.0') ~ ')') -%}
    {%- endfor -%}
    (((({{ lanes[0] }} + {{ lanes[1] }}) + ({{ lanes[2] }} + {{ lanes[3] }}))
      + (({{ lanes[4] }} + {{ lanes[5] }}) + ({{ lanes[6] }} + {{ lanes[7] }})))
    {%- for rest in range(7) %}
      + coalesce(max(case when {{ position }} = {{ blocked }} + {{ rest }} then {{ value }} end), 0.0)
    {%- endfor -%}
    )
{%- endmacro %}
