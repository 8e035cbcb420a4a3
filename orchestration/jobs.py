"""Jobs. The nightly job materialises every asset (ingest -> dbt -> checks -> publish) in one
process: the build database has one writer, and blocking checks gate the publish in the same run.

It is partitioned by site and month (orchestration/partitions.py) and always launched for a
partition or a range of them: the schedule and `c20p5 run` for every site-period landed or loaded,
the submission sensor for one site's month, `c20p5 backfill` and the UI for any range."""
import dagster as dg

TRIGGER = "c20p5/trigger"  # schedule | sensor | cli | backfill (and "manual" when absent: the UI)

nightly_job = dg.define_asset_job(
    name="nightly_refresh",
    selection=dg.AssetSelection.all(),
    description="Ingest the partitions' complete submissions, build the marts, check them, publish what "
                "passed and changed.",
    executor_def=dg.in_process_executor,
)
