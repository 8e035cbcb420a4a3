"""Unattended operation through Dagster's own APIs, on one small generated landing zone and one real
Dagster instance in a temporary folder (as `dagster dev` / dagster-daemon would use it).

The night of 2026-11-24: the schedule runs twice (09 for every site, 10 for two; burnley_east's 10
is corrupt and quarantined). Then lsc's 10 lands and the sensor starts one run for it. After a
restart, lsc re-delivers it identically (skipped), then corrected: the sensor asks for a run of
that site-month, and `c20p5 backfill` of lsc's two months (one command, one run) rebuilds it,
replacing the earlier snapshot and republishing. Four pipeline runs in all, to keep the time down."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from assets.generator import generate_landing
from assets.marts import target_for
from assets.submissions import sha256_file
from assets.warehouse import connect_warehouse
from orchestration import cli
from orchestration.partitions import AS_OF, LONDON
from orchestration.runner import instance_for
from orchestration.schedules import nightly_schedule
from orchestration.sensors import submission_sensor
from orchestration.settings import Settings, load_settings
from tests.conftest import env_for
from tests.operations.conftest import (Webhook, apply, check_results, execute, log_messages,
                                       materialization_metadata, publication_metadata)

pytestmark = pytest.mark.slow
NIGHT = datetime(2026, 11, 24, 2, 0, tzinfo=LONDON)
NIGHT_DATE = "2026-11-24"
BAD = "burnley_east"  # its 2026-10 patients.csv has an unknown sex code on line 6


@dataclass
class Ops:
    settings: Settings
    source: Path
    home: Path
    ticks: list = field(default_factory=list)
    sensor: dict = field(default_factory=dict)
    runs: dict[str, dg.ExecuteInProcessResult] = field(default_factory=dict)
    snaps: dict[str, dict[str, pd.DataFrame]] = field(default_factory=dict)
    logs: dict[str, list[str]] = field(default_factory=dict)
    checks: dict[str, dict] = field(default_factory=dict)
    cli: dict[str, object] = field(default_factory=dict)
    backfills: list = field(default_factory=list)


def snapshot(warehouse: str) -> dict[str, pd.DataFrame]:
    con = connect_warehouse(warehouse)
    try:
        tables = con.execute("""select table_schema, table_name from information_schema.tables
                                where table_catalog = 'warehouse' order by 1, 2""").fetchall()
        return {f"{s}.{t}": con.execute(f'select * from "{s}"."{t}"').df() for s, t in tables}
    finally:
        con.close()


def deliver(source: Path, landing: Path, site: str, period: str, preserve_times: bool = True) -> None:
    """Copy a site's monthly folder into the landing zone, as the site's transfer would."""
    target = landing / "sites" / site / period
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source / "sites" / site / period, target,
                    copy_function=shutil.copy2 if preserve_times else shutil.copyfile)


def rewrite(folder: Path, edit_line, first: int, last: int) -> None:
    """Edit data lines first..last of patients.csv and keep the manifest consistent with it."""
    path = folder / "patients.csv"
    lines = path.read_text().splitlines(keepends=True)
    for i in range(first, last + 1):
        cols = lines[i].rstrip("\n").split(",")
        lines[i] = ",".join(edit_line(cols)) + "\n"
    path.write_text("".join(lines))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["patients.csv"]["sha256"] = sha256_file(path)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def set_column(index: int, value: str):
    def edit(cols: list[str]) -> list[str]:
        cols[index] = value
        return cols
    return edit


def record(ops: Ops, name: str, result: dg.ExecuteInProcessResult, instance: dg.DagsterInstance) -> None:
    assert result.success, name
    ops.runs[name] = result
    ops.snaps[name] = snapshot(ops.settings.warehouse_url)
    ops.logs[name] = log_messages(instance, result.run_id)
    ops.checks[name] = check_results(instance, result.run_id)


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory, webhook: Webhook) -> Ops:
    root = tmp_path_factory.mktemp("operations")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env_for(root).items():
            mp.setenv(key, value)
        mp.setenv("C20P5_ALERT_WEBHOOK", webhook.url)
        mp.delenv("DAGSTER_HOME", raising=False)
        settings = load_settings()
        source = root / "source" / "landing"
        generate_landing(replace(settings, landing_dir=source), people_per_site=300, months=2,
                         last_period=date(2026, 10, 31), seed=1)
        rewrite(source / "sites" / BAD / "2026-10", set_column(3, "X"), 5, 5)
        for site, period in [(s.site_code, "2026-09") for s in settings.sites] + [("blackpool_central", "2026-10"),
                                                                                   (BAD, "2026-10")]:
            deliver(source, settings.landing_dir, site, period)
        ops = Ops(settings, source, settings.work_dir / "dagster")
        yield from _night(ops, settings)


def _night(ops: Ops, settings: Settings):
    landing = settings.landing_dir
    with instance_for(settings) as instance:
        for i, name in enumerate(("schedule_1", "schedule_2")):  # the schedule, twice in one night
            tick = nightly_schedule(dg.build_schedule_context(instance=instance,
                                                              scheduled_execution_time=NIGHT + timedelta(minutes=i)))
            ops.ticks.append(tick)
            record(ops, name, execute(tick, instance), instance)
        ops.cli["status_1"] = _status()
        ops.sensor["after_schedule"] = apply(submission_sensor(dg.build_sensor_context(instance=instance)), instance)
        deliver(ops.source, landing, "lsc", "2026-10")
        first = apply(submission_sensor(dg.build_sensor_context(instance=instance,
                                                                cursor=ops.sensor["after_schedule"].cursor)), instance)
        ops.sensor["lsc_new"] = first
        ops.sensor["lsc_new_again"] = apply(submission_sensor(dg.build_sensor_context(instance=instance,
                                                                                      cursor=first.cursor)), instance)
        record(ops, "sensor_new", execute(first.run_requests[0], instance, **{AS_OF: NIGHT_DATE}), instance)
    with instance_for(settings) as instance:  # the daemon restarted
        cursor = ops.sensor["lsc_new_again"].cursor
        ops.sensor["restart"] = apply(submission_sensor(dg.build_sensor_context(instance=instance, cursor=cursor)),
                                      instance)
        ops.sensor["restart_cursor_lost"] = apply(submission_sensor(dg.build_sensor_context(instance=instance)),
                                                  instance)
        deliver(ops.source, landing, "lsc", "2026-10", preserve_times=False)  # the same files, sent again
        ops.sensor["identical"] = apply(submission_sensor(dg.build_sensor_context(instance=instance, cursor=cursor)),
                                        instance)
        rewrite(landing / "sites" / "lsc" / "2026-10", set_column(5, "Z"), 1, 120)  # corrected ethnicity codes
        ops.sensor["corrected"] = apply(submission_sensor(dg.build_sensor_context(
            instance=instance, cursor=ops.sensor["identical"].cursor)), instance)
        ops.cli["backfill"] = cli.main(["backfill", "--from", "2026-09", "--to", "2026-10", "--site", "lsc"])
        ops.snaps["backfill"] = snapshot(settings.warehouse_url)
        run = instance.get_runs(limit=1)[0]
        ops.cli["backfill_run"] = run
        ops.logs["backfill"] = log_messages(instance, run.run_id)
        ops.cli["submit"] = cli.main(["backfill", "--from", "2026-09", "--to", "2026-10", "--submit"])
        ops.backfills = instance.get_backfills()
        ops.cli["status_2"] = _status()
        builds = _dbt_builds(settings)
        record(ops, "checks_only", _check_only(instance, MART_CHECK), instance)  # the UI's "Execute checks"
        ops.cli["dbt_builds"] = (builds, _dbt_builds(settings))
    yield ops


MART_CHECK = "unique_combination_of_columns_fct_indicator_values"


def _check_only(instance: dg.DagsterInstance, prefix: str) -> dg.ExecuteInProcessResult:
    from orchestration.definitions import defs
    [check] = [k for k in defs.resolve_asset_graph().asset_check_keys if k.name.startswith(prefix)]
    job = defs.resolve_job_def("nightly_refresh").get_subset(asset_selection=set(), asset_check_selection={check})
    return job.execute_in_process(instance=instance, raise_on_error=False, partition_key="2026-10|lsc")


def _dbt_builds(settings: Settings) -> int:
    with duckdb.connect(str(settings.build_db_path), read_only=True) as con:
        return con.execute("select count(*) from audit.dbt_builds").fetchone()[0]


def _status() -> tuple[int, list[str]]:
    """`c20p5 status`, as printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["status"])
    return code, out.getvalue().strip().splitlines()


# ---------------------------------------------------------------------------------------------
# Schedule and partitions
# ---------------------------------------------------------------------------------------------

def test_the_schedule_runs_every_period_landed_for_every_site(ops: Ops) -> None:
    tick = ops.ticks[0]
    assert tick.tags["dagster/asset_partition_range_start"] == "2026-09|lsc"
    assert tick.tags["dagster/asset_partition_range_end"] == "2026-10|burnley_east"
    assert tick.tags[AS_OF] == NIGHT_DATE and tick.tags["c20p5/trigger"] == "schedule"
    assert tick.tags["c20p5/publish"] == "all"
    meta = publication_metadata(ops.runs["schedule_1"])
    assert meta["publication_id"] == 1 and meta["site_periods_published"] == 4
    assert [(w["site_code"], w["period_end"]) for w in meta["withheld"]] == [(BAD, "2026-10-31")]


def test_running_the_schedule_twice_in_a_night_writes_nothing(ops: Ops) -> None:
    # nothing new the second time: only the latest month is run, every site-period is checked for changes
    assert ops.ticks[1].tags["dagster/asset_partition_range_start"] == "2026-10|lsc"
    assert ops.ticks[1].tags["dagster/asset_partition_range_end"] == "2026-10|burnley_east"
    meta = publication_metadata(ops.runs["schedule_2"])
    assert meta["publication_id"] == "unchanged" and meta["changed"] == []
    assert len(meta["unchanged_site_periods"]) == 4
    for table, frame in ops.snaps["schedule_1"].items():
        pd.testing.assert_frame_equal(frame, ops.snaps["schedule_2"][table], obj=table)


def _dbt_call(logs: list[str]) -> tuple[str, dict, str]:
    """(what it rebuilt, --vars, parse) from the dbt step's log line."""
    line = next(m for m in logs if m.startswith("dbt build of "))
    plan, rest = line.removeprefix("dbt build of ").split(" --vars ", 1)
    dbt_vars, parse = rest.rsplit(": ", 1)
    return plan, json.loads(dbt_vars), parse


def test_dbt_gets_the_partitions_as_vars_and_rebuilds_only_what_changed(ops: Ops) -> None:
    sites = ["lsc", "blackpool_central", "burnley_east"]
    plan, dbt_vars, parse = _dbt_call(ops.logs["schedule_1"])
    assert (plan, dbt_vars, parse) == ("full refresh (no earlier build)",
                                       {"period_end": "2026-10-31", "site_codes": sites}, "new vars, full parse")
    # nothing new the second time: only the latest month is rebuilt, for every site
    plan, dbt_vars, _ = _dbt_call(ops.logs["schedule_2"])
    assert plan == "periods from 2026-10-31 (the run's first period)"
    assert dbt_vars == {"period_end": "2026-10-31", "site_codes": sites, "rebuild_from": "2026-10-31"}
    plan, dbt_vars, _ = _dbt_call(ops.logs["sensor_new"])
    assert plan == "periods from 2026-10-31 (the run's first period)"
    assert dbt_vars == {"period_start": "2026-10-31", "period_end": "2026-10-31", "site_codes": ["lsc"],
                        "site_code": "lsc", "rebuild_from": "2026-10-31"}
    plan, dbt_vars, _ = _dbt_call(ops.logs["backfill"])  # lsc 2026-09..10: the earlier month and all after it
    assert plan.startswith("periods from 2026-09-30") and dbt_vars["rebuild_from"] == "2026-09-30"


def test_a_mart_check_can_be_run_alone_and_builds_nothing(ops: Ops) -> None:
    """Only the marts are Dagster assets; their dbt tests are its checks and can be run on their own
    (dbt test of that mart): no materialization, no dbt build recorded."""
    run = ops.runs["checks_only"]
    [(name, result)] = ops.checks["checks_only"].items()
    assert name.startswith(MART_CHECK) and result.passed
    assert not run.get_asset_materialization_events()
    before, after = ops.cli["dbt_builds"]
    assert before == after > 0


def test_the_parse_is_reused_for_the_same_vars(ops: Ops) -> None:
    """Each set of vars keeps its own target directory and partial parse, so the next night with the
    same vars (the same latest month, nothing older changed) parses only what changed."""
    _, dbt_vars, _ = _dbt_call(ops.logs["schedule_2"])
    target = target_for(ops.settings.work_dir, dict(reversed(list(dbt_vars.items()))))
    assert (target / "partial_parse.msgpack").exists() and (target / "manifest.json").exists()
    assert target == target_for(ops.settings.work_dir, dbt_vars)
    assert target != target_for(ops.settings.work_dir, {**dbt_vars, "rebuild_from": "2026-09-30"})


# ---------------------------------------------------------------------------------------------
# Sensor: once per submission, incremental, re-deliveries
# ---------------------------------------------------------------------------------------------

def test_sensor_does_not_restart_what_the_schedule_loaded(ops: Ops) -> None:
    result = ops.sensor["after_schedule"]
    assert not result.run_requests and "already loaded" in result.skip_reason.skip_message


def test_sensor_starts_one_run_for_the_new_submission(ops: Ops) -> None:
    [request] = ops.sensor["lsc_new"].run_requests
    assert request.partition_key == "2026-10|lsc" and request.run_key.startswith("lsc/2026-10/")
    assert request.tags["c20p5/delivery"] == "new"
    assert not ops.sensor["lsc_new_again"].run_requests


def test_sensor_state_survives_a_restart_even_without_its_cursor(ops: Ops) -> None:
    assert not ops.sensor["restart"].run_requests
    assert not ops.sensor["restart_cursor_lost"].run_requests  # the build database knows it is loaded


def test_a_new_month_for_one_site_leaves_the_other_sites_rows_untouched(ops: Ops) -> None:
    before, after = (ops.snaps[k]["evaluation.indicator_values"] for k in ("schedule_2", "sensor_new"))
    mine = (after.site_code == "lsc") & (after.period_end == pd.Timestamp("2026-10-31"))
    assert set(after[mine].publication_id) == {2}
    pd.testing.assert_frame_equal(before.reset_index(drop=True), after[~mine].reset_index(drop=True))
    publications = ops.snaps["sensor_new"]["evaluation.publications"]
    assert json.loads(publications.iloc[-1].sites_published) == ["lsc:2026-10-31"]


def test_the_run_says_what_it_skipped(ops: Ops) -> None:
    landed = materialization_metadata(ops.runs["sensor_new"], "landed_submissions")
    assert len(landed["new"]) == 1 and len(landed["outside_partitions_skipped"]) == 4
    meta = publication_metadata(ops.runs["sensor_new"])
    assert meta["partitions"] == "2026-10 x lsc"
    assert sorted(meta["outside_partitions_untouched"]) == sorted(
        ["lsc 2026-09-30", "blackpool_central 2026-09-30", "blackpool_central 2026-10-31", "burnley_east 2026-09-30"])
    assert any("outside its partitions left untouched" in m for m in ops.logs["sensor_new"])


def test_identical_redelivery_is_recognised_and_skipped(ops: Ops) -> None:
    result = ops.sensor["identical"]
    assert not result.run_requests and "identical re-delivery" in result.skip_reason.skip_message


def test_corrected_redelivery_starts_a_run_for_its_site_month(ops: Ops) -> None:
    [request] = ops.sensor["corrected"].run_requests
    assert request.partition_key == "2026-10|lsc" and request.tags["c20p5/delivery"] == "corrected"
    assert request.run_key != ops.sensor["lsc_new"].run_requests[0].run_key


def test_backfill_of_one_sites_months_is_one_command_and_one_run(ops: Ops) -> None:
    assert ops.cli["backfill"] == cli.EXIT_OK
    run = ops.cli["backfill_run"]
    assert run.tags["dagster/asset_partition_range_start"] == "2026-09|lsc"
    assert run.tags["dagster/asset_partition_range_end"] == "2026-10|lsc"
    assert run.tags["c20p5/trigger"] == "backfill"
    before, after = (ops.snaps[k]["evaluation.indicator_values"] for k in ("sensor_new", "backfill"))
    mine = after.site_code == "lsc"
    pd.testing.assert_frame_equal(before[before.site_code != "lsc"].reset_index(drop=True),
                                  after[~mine].reset_index(drop=True))
    # one publication for the run; the month whose rows did not change keeps the publication it came from
    october = after.period_end == pd.Timestamp("2026-10-31")
    assert set(after[mine & october].publication_id) == {3}
    assert set(after[mine & ~october].publication_id) == set(before[(before.site_code == "lsc") & ~october
                                                                     ].publication_id) == {1}
    assert any("1 site-period(s) published" in m and "skipped: 1 unchanged site-period(s)" in m
               for m in ops.logs["backfill"])
    assert any("1 already loaded (skipped)" in m for m in ops.logs["backfill"])  # lsc 2026-09


def test_the_corrected_redelivery_replaced_the_earlier_one_and_was_republished(ops: Ops) -> None:
    before, after = (ops.snaps[k]["evaluation.indicator_values"] for k in ("sensor_new", "backfill"))

    def ethnicity(frame: pd.DataFrame) -> pd.DataFrame:
        rows = frame[(frame.site_code == "lsc") & (frame.period_end == pd.Timestamp("2026-10-31"))
                     & (frame.breakdown == "ethnicity")]
        return rows.drop(columns="publication_id").reset_index(drop=True)
    assert not ethnicity(before).equals(ethnicity(after))
    with duckdb.connect(str(ops.settings.build_db_path), read_only=True) as con:
        states = con.execute("""select status from audit.submissions where site_code = 'lsc' and period = '2026-10'
                                order by decided_at""").fetchall()
    assert [s for (s,) in states] == ["superseded", "loaded"]


def test_backfill_can_be_queued_for_the_daemon(ops: Ops) -> None:
    assert ops.cli["submit"] == cli.EXIT_OK
    [backfill] = ops.backfills
    subset = backfill.asset_backfill_data.target_subset
    keys = subset.get_partitions_subset(dg.AssetKey("warehouse_publication")).get_partition_keys()
    assert sorted(keys) == sorted(f"{p}|{s}" for p in ("2026-09", "2026-10")
                                  for s in ("lsc", "blackpool_central", "burnley_east"))


# ---------------------------------------------------------------------------------------------
# Alerts, freshness, quarantine, status
# ---------------------------------------------------------------------------------------------

def test_withheld_site_notice_is_posted_as_json(ops: Ops, webhook: Webhook) -> None:
    [notice] = webhook.events("sites_withheld")
    assert notice["source"] == "c20p5" and notice["text"].startswith("[c20p5] 1 site-period(s) withheld")
    [withheld] = notice["details"]["withheld"]
    assert (withheld["site_code"], withheld["period_end"]) == (BAD, "2026-10-31")
    assert "patients.csv, row 6, column sex" in withheld["reason"]
    assert notice["details"]["run_id"] == ops.runs["schedule_1"].run_id
    assert publication_metadata(ops.runs["schedule_1"])["withheld_notice"] == "sent"


def test_freshness_is_checked_per_site_and_published(ops: Ops) -> None:
    checks = ops.checks["schedule_1"]
    assert not checks["freshness_lsc"].passed and checks["freshness_lsc"].severity == dg.AssetCheckSeverity.WARN
    assert "2026-11-04" in checks["freshness_lsc"].metadata["message"].value  # 2026-09-30 + 35 days
    assert checks["freshness_blackpool_central"].passed and not checks[f"freshness_{BAD}"].passed
    dq = ops.snaps["schedule_1"]["evaluation.data_quality"]
    fresh = dq[dq.stage == "freshness"].set_index("site_code")
    assert fresh.passed.to_dict() == {"lsc": False, "blackpool_central": True, BAD: False}
    # lsc's October arrives: the next publication records it on time (its sites only)
    dq = ops.snaps["sensor_new"]["evaluation.data_quality"]
    latest = dq[(dq.stage == "freshness") & (dq.publication_id == 2)]
    assert latest[["site_code", "passed"]].values.tolist() == [["lsc", True]]


def test_status_lists_received_published_and_quarantined_periods(ops: Ops) -> None:
    code, lines = ops.cli["status_1"]
    assert code == cli.EXIT_OK and len(lines) == 3
    status = dict(line.split(": ", 1) for line in lines)
    assert status["lsc"].startswith("last received 2026-09-30; last published 2026-09-30; OVERDUE")
    assert status["blackpool_central"].startswith("last received 2026-10-31; last published 2026-10-31")
    assert status[BAD].startswith("last received 2026-10-31; last published 2026-09-30")
    quarantined = status[BAD].split("quarantined: ", 1)[1]
    assert quarantined.startswith("2026-10-31 (patients.csv, row 6, column sex")
    folder = Path(quarantined.rsplit(" -> ", 1)[1])
    assert (folder / "errors.json").exists() and (folder / "submission" / "manifest.json").exists()
    _, lines = ops.cli["status_2"]
    status = dict(line.split(": ", 1) for line in lines)
    assert status["lsc"].startswith("last received 2026-10-31; last published 2026-10-31")
    assert status["lsc"].endswith("quarantined: none")
