"""The Dagster definitions load, with every asset, check, job and schedule the UI should show."""
import dagster as dg

from checks.schemas import FILE_KINDS
from orchestration.definitions import defs


def test_definitions_load_with_the_whole_graph() -> None:
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"reference_data", "landed_submissions", "staged_extracts", "warehouse_publication",
            "marts/fct_indicator_values", "marts/fct_inequality_summary"} <= keys
    assert "raw_extracts" in keys
    checks = {k.name for k in graph.asset_check_keys}
    assert {f"{k}_schema" for k in FILE_KINDS} | {"great_expectations_marts"} <= checks
    assert any(name.startswith("unique_combination_of_columns_fct_indicator_values") for name in checks)


def test_only_the_marts_are_dagster_assets_and_they_depend_on_what_they_are_built_from() -> None:
    """The staging and intermediate models are built in the same dbt step but are no assets (each would
    cost one event per partition); a mart's parents are the ingest assets and seeds it reads, through
    them, so the dbt step still runs after the ingest."""
    from assets.marts import MANIFEST, dbt_models
    marts = {("marts", n["name"]) for n in MANIFEST["nodes"].values()
             if n["resource_type"] == "model" and n["original_file_path"].startswith("models/marts/")}
    hidden = {n["name"] for n in MANIFEST["nodes"].values()
              if n["resource_type"] == "model" and not n["original_file_path"].startswith("models/marts/")}
    assert {tuple(k.path) for k in dbt_models.keys} == marts and len(hidden) > 30
    graph = defs.resolve_asset_graph()
    parents = {k.to_user_string() for k in graph.get(dg.AssetKey(["marts", "int_indicator_statistics"])).parent_keys}
    assert {"staged_extracts", "reference_data", "seeds/indicators"} <= parents
    assert not any(p.split("/")[-1] in hidden for p in parents)
    checks = {k.name for k in dbt_models.check_keys}
    assert checks and all(any(m in c for _, m in marts) for c in checks), checks


def test_publish_waits_for_every_mart_and_the_blocking_checks() -> None:
    graph = defs.resolve_asset_graph()
    parents = {k.to_user_string() for k in graph.get(dg.AssetKey("warehouse_publication")).parent_keys}
    assert {"marts/fct_indicator_values", "marts/fct_inequality_summary", "marts/dim_indicators",
            "marts/dim_sites", "staged_extracts"} <= parents
    from assets.ingest import extract_schemas
    from checks.asset_checks import great_expectations_marts
    assert all(spec.blocking for c in [extract_schemas, great_expectations_marts] for spec in c.check_specs)
    job = defs.resolve_job_def("nightly_refresh")
    assert job.executor_def.name == "in_process"


def test_the_staged_extracts_wait_for_the_schema_checks_and_the_publish_for_great_expectations() -> None:
    """Blocking checks as steps the next asset waits on: the six schema checks are one step, on the one
    raw_extracts asset (a partitioned asset costs an event per site-month in every run)."""
    from dagster._core.execution.api import create_execution_plan
    plan = create_execution_plan(defs.resolve_job_def("nightly_refresh"))
    waits = {step.key: {h.step_key for i in step.step_inputs for h in i.get_step_output_handle_dependencies()}
             for step in plan.get_all_steps_in_topo_order()}
    assert waits["extract_schemas"] == {"raw_extracts"}
    assert "extract_schemas" in waits["staged_extracts"]
    assert "marts__fct_indicator_values_great_expectations_marts" in waits["warehouse_publication"]


def test_nightly_schedule_runs_at_two_in_london() -> None:
    schedule = defs.resolve_schedule_def("nightly_refresh_0200")
    assert schedule.cron_schedule == "0 2 * * *" and schedule.execution_timezone == "Europe/London"


def test_submission_sensor_requests_one_run_per_new_submission(isolated_settings) -> None:
    from datetime import date

    import polars as pl

    from assets.generator import write_submission
    from checks.schemas import FILE_COLUMNS

    sensor = defs.resolve_sensor_def("submission_sensor")
    with dg.instance_for_test() as instance:
        empty = sensor(dg.build_sensor_context(instance=instance))
        assert not empty.run_requests
        frames = {k: pl.DataFrame(schema={c: pl.Utf8 for c in cols}) for k, cols in FILE_COLUMNS.items()}
        write_submission(isolated_settings.landing_dir, "lsc", date(2026, 10, 31), frames)
        first = sensor(dg.build_sensor_context(instance=instance, cursor=empty.cursor))
        assert len(first.run_requests) == 1 and "lsc/2026-10" in first.run_requests[0].run_key
        again = sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor))
        assert not again.run_requests  # the same submission is not new twice


def test_sqlite_connections_commit_without_an_fsync_each(tmp_path) -> None:
    """Dagster's SQLite event log: every new connection gets synchronous = NORMAL (1; SQLite's default is
    FULL, 2), which in WAL mode keeps committed events through a process crash (orchestration/event_log.py)."""
    import sqlalchemy

    import orchestration.definitions  # noqa: F401 (installs the listener, as every step process does)
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'events.db'}", poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("pragma synchronous").scalar() == 1
