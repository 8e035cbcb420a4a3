{# Layer schemas keep their plain names (staging, intermediate, marts, seeds). #}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ custom_schema_name if custom_schema_name else target.schema }}
{%- endmacro %}
