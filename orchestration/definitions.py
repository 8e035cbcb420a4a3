"""The one Dagster `Definitions` of the project (`dagster dev -w workspace.yaml` loads it)."""
import dagster as dg

import orchestration.event_log  # noqa: F401 (SQLite event log commits without an fsync each; see there)
from assets.ingest import extract_schemas, landed_submissions, raw_extracts, reference_data, staged_extracts
from assets.marts import dbt_models, dbt_resource
from assets.publish import warehouse_publication
from assets.reports import evaluation_reports
from checks.asset_checks import FRESHNESS_CHECKS, great_expectations_marts
from orchestration.jobs import nightly_job
from orchestration.resources import PipelineResource
from orchestration.schedules import nightly_schedule
from orchestration.sensors import run_failure_alert, submission_sensor

defs = dg.Definitions(
    assets=[reference_data, landed_submissions, raw_extracts, staged_extracts, dbt_models, warehouse_publication,
            evaluation_reports],
    asset_checks=[extract_schemas, great_expectations_marts, *FRESHNESS_CHECKS],
    jobs=[nightly_job],
    schedules=[nightly_schedule],
    sensors=[submission_sensor, run_failure_alert],
    resources={"pipeline": PipelineResource(), "dbt": dbt_resource()},
)
