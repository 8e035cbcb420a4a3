{{ config(materialized='table') }}  {#- not keyed by period: rebuilt whole every time #}
-- The indicator catalogue as published (`evaluation.indicators`).
select
    indicator_id, indicator_name, clinical_area, population, denominator_definition, numerator_definition,
    unit, direction, cast(target as double precision) as target, source_dataset, codelists, age_bands, scope, standardised_from
from {{ ref('indicators') }}
