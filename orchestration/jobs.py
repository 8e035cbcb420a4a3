"""Jobs. The nightly job materialises every asset (ingest -> dbt -> checks -> publish) in one
process: the build database has one writer, and blocking checks gate the publish in the same run."""
import dagster as dg

nightly_job = dg.define_asset_job(
    name="nightly_refresh",
    selection=dg.AssetSelection.all(),
    description="Ingest every complete submission, build the marts, check them, publish what passed.",
    executor_def=dg.in_process_executor,
)
