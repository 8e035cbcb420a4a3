"""Running the pipeline in process: the same Definitions the UI shows, on a persistent Dagster
instance (DAGSTER_HOME if set, else C20P5_WORK_DIR/dagster) so runs appear in `dagster dev`.

`run_nightly` runs what is due and publishes every site-period (what the schedule runs); `run_backfill`
runs a range of months for one site or every site as one run; `submit_backfill` hands the same
range to dagster-daemon as a Dagster backfill (what the UI's "Materialize" over partitions does).
"""
from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import dagster as dg
import duckdb

from orchestration.alerts import LAUNCHED_BY, failure_summary, run_failure_details, send_alert
from orchestration.jobs import TRIGGER
from orchestration.partitions import (AS_OF, FIRST_PERIOD, FULL_REFRESH, LONDON, PUBLISH, REPORTING, due_range, is_period,
                                      loaded_submissions, range_tags, rectangle, register_sites)
from orchestration.progress import ProgressLines
from orchestration.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from checks.asset_checks import Freshness

# Written to C20P5_WORK_DIR/dagster/dagster.yaml when that instance is first used (see docs/operations.md).
INSTANCE_YAML = """\
# Dagster instance of the Core20PLUS5 pipeline (written by c20p5; use this folder as DAGSTER_HOME).
concurrency:
  runs:
    # Every run writes the one private build database (DuckDB: one writer at a time), so runs
    # started by the schedule, the sensor and backfills queue rather than wait on its lock.
    max_concurrent_runs: 1
telemetry:
  enabled: false
"""


@dataclass
class RunOutcome:
    success: bool
    run_id: str
    warehouse: str
    publication: str
    published: int = 0
    withheld: list[dict] = field(default_factory=list)
    error: str | None = None
    partitions: str = "none"
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.run_id == "-":
            return "\n".join(["no run started", *self.notes])
        if not self.success:  # a step after the publish (the reports) can fail too: say which is true
            written = self.publication not in ("none", "unchanged")
            kept = (f"publication {self.publication} was written to {self.warehouse} before the failure" if written
                    else f"the last publication in {self.warehouse} is unchanged")
            return f"run {self.run_id} FAILED: {self.error}\n{kept}"
        lines = [f"run {self.run_id} succeeded (partitions {self.partitions})", f"warehouse: {self.warehouse}",
                 f"publication: {self.publication}; {self.published} site-period(s) published"]
        lines += [f"withheld {w['site_code']} {w['period_end']}: {w['reason']}" for w in self.withheld]
        return "\n".join(lines + self.notes)


def instance_for(settings: Settings) -> dg.DagsterInstance:
    """DAGSTER_HOME's instance, else one under C20P5_WORK_DIR/dagster with INSTANCE_YAML
    (one run at a time: every run writes the same build database)."""
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    home = settings.work_dir / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text(INSTANCE_YAML)
    return dg.DagsterInstance.local_temp(tempdir=str(home))


def run_nightly(settings: Settings | None = None, progress: TextIO | None = None,
                full_refresh: bool = False) -> RunOutcome:
    """Run whatever is due once, as the schedule does, and report what was published (with a line
    per step to `progress` as it goes, if given); `full_refresh` rebuilds every period in dbt."""
    settings = settings or load_settings()
    with instance_for(settings) as instance:
        keys = due_range(settings, loaded_submissions(settings), register_sites(instance))
        if keys is None:
            return RunOutcome(True, "-", settings.warehouse_label, "unchanged",
                              notes=[f"nothing landed in {settings.landing_dir} or loaded yet"])
        tags = {TRIGGER: "cli", PUBLISH: "all", **({FULL_REFRESH: "true"} if full_refresh else {})}
        return _execute(settings, instance, keys, tags, progress)


def run_backfill(first: str, last: str, site_code: str | None = None,
                 settings: Settings | None = None, progress: TextIO | None = None) -> RunOutcome:
    """Months first..last (YYYY-MM) for one site or every site, as one run."""
    settings = settings or load_settings()
    with instance_for(settings) as instance:
        keys = _backfill_range(instance, first, last, site_code)
        return _execute(settings, instance, keys,
                        {TRIGGER: "backfill", "c20p5/backfill": f"{first}..{last} {site_code or 'all'}"}, progress)


def _backfill_range(instance: dg.DagsterInstance, first: str, last: str, site_code: str | None) -> dg.PartitionKeyRange:
    for period in (first, last):
        if not is_period(period):
            raise SettingsError(f"{period!r} is not a reporting month (YYYY-MM, {FIRST_PERIOD} to the current month)")
    if first > last:
        raise SettingsError(f"--from {first} is after --to {last}")
    sites = register_sites(instance)
    if site_code is not None and site_code not in sites:
        raise SettingsError(f"site {site_code!r} is not in the site registry ({', '.join(sites)})")
    return rectangle(first, last, [site_code] if site_code else sites)


def _execute(settings: Settings, instance: dg.DagsterInstance, keys: dg.PartitionKeyRange,
             tags: dict[str, str], progress: TextIO | None = None) -> RunOutcome:
    from orchestration.definitions import defs
    job = defs.resolve_job_def("nightly_refresh")
    tags = {**range_tags(keys), LAUNCHED_BY: "cli", AS_OF: _today(), **tags}
    run_id = str(uuid.uuid4())
    with _watched(settings, instance, run_id, progress) as stdout_log:
        result = job.execute_in_process(instance=instance, raise_on_error=False, tags=tags, run_id=run_id, run_config={
            "loggers": {"console": {"config": {"log_level": settings.log_level}}}})
    outcome = _outcome(result, settings)
    if stdout_log:
        outcome.notes.append(f"dbt output of this run: {stdout_log}")
    outcome.partitions = f"{keys.start}..{keys.end}"
    if not outcome.success:
        details = run_failure_details(result.run_id, job.name, tags, outcome.error or "", {})
        outcome.notes.append(f"alert: {send_alert(settings, 'run_failure', failure_summary(details), details)}")
    return outcome


@contextmanager
def _watched(settings: Settings, instance: dg.DagsterInstance, run_id: str,
             progress: TextIO | None) -> Iterator[Path | None]:
    """With `progress`: a line there per step, and what the steps print (dbt echoes every node it
    runs) kept in C20P5_WORK_DIR/logs/run-<id>.log instead of mixed into those lines."""
    if progress is None:
        yield None
        return
    log = settings.work_dir / "logs" / f"run-{run_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as sink, ProgressLines(instance, run_id, progress), redirect_stdout(sink):
        yield log


def _today() -> str:
    return datetime.now(LONDON).date().isoformat()


def _outcome(result: dg.ExecuteInProcessResult, settings: Settings) -> RunOutcome:
    outcome = RunOutcome(result.success, result.run_id, settings.warehouse_label, "none")

    def failure_text(error) -> str:
        """A step failure's own message and what caused it: the first error down its cause chain that is
        not one of Dagster's wrappers (with retries the step's own message is only "Exceeded max_retries
        of 3", before them "Error occurred while executing op ..."), unless our own message says it."""
        def wrapper(e) -> bool:
            return (e.cls_name or "").startswith(("Dagster", "RetryRequested"))
        own, cause = error.message.strip(), error.cause or error.context
        while cause is not None and wrapper(cause):
            cause = cause.cause or cause.context
        if cause is None:
            return own
        name, text = cause.cls_name or "error", cause.message.strip()
        text = text.split(f"{name}: ", 1)[1] if f"{name}: " in text else text  # without "module.Class: "
        return own if not wrapper(error) and text in own else f"{own} (caused by {name}: {text})"

    if not result.success:
        failures = [e for e in result.all_events if e.is_step_failure]
        outcome.error = "; ".join(f"{e.step_key}: {failure_text(e.event_specific_data.error)}"
                                  for e in failures) or "see the Dagster run log"
    for event in result.get_asset_materialization_events():  # on failure too: the publish may have run
        mat = event.event_specific_data.materialization
        if mat.asset_key == dg.AssetKey("warehouse_publication"):
            meta = mat.metadata
            outcome.publication = str(meta["publication_id"].value)
            outcome.published = int(meta["site_periods_published"].value)
            outcome.withheld = list(meta["withheld"].value)
            break  # a range run records the same materialization once per partition
    return outcome


def submit_backfill(first: str, last: str, site_code: str | None = None,
                    settings: Settings | None = None) -> str:
    """Queue months first..last as a Dagster asset backfill (one run per rectangle, by the daemon)."""
    from dagster._core.execution.backfill import PartitionBackfill

    from orchestration.definitions import defs
    settings = settings or load_settings()
    graph = defs.resolve_asset_graph()
    selection = [k for k in graph.get_all_asset_keys() if graph.get(k).is_materializable]
    backfill_id = uuid.uuid4().hex[:8]
    with instance_for(settings) as instance:
        keys = REPORTING.get_partition_keys_in_range(_backfill_range(instance, first, last, site_code),
                                                     dynamic_partitions_store=instance)
        instance.add_backfill(PartitionBackfill.from_asset_partitions(
            backfill_id=backfill_id, asset_graph=graph, partition_names=keys, asset_selection=selection,
            backfill_timestamp=time.time(), tags={TRIGGER: "backfill", AS_OF: _today()},
            dynamic_partitions_store=instance, all_partitions=False, title=f"c20p5 backfill {first}..{last}",
            description=f"{site_code or 'all sites'}", run_config=None))
    return backfill_id


# ---------------------------------------------------------------------------------------------
# c20p5 status
# ---------------------------------------------------------------------------------------------

def site_status(settings: Settings | None = None) -> list[str]:
    """Per site: last received and last published period, freshness, and every period whose latest
    submission is in quarantine, with the reason and where it is (for `c20p5 status`)."""
    from checks.asset_checks import freshness
    from orchestration.resources import peek_build_db
    settings = settings or load_settings()
    today = datetime.now(LONDON).date()
    with peek_build_db(settings, timeout=30.0) as con:
        rows = _submission_rows(con)
        fresh = {s.site_code: freshness(con, s.site_code, today) for s in settings.sites} if con else {}
    published = _published_periods(settings)
    return [_status_line(site.site_code, rows.get(site.site_code, []), published.get(site.site_code),
                         fresh.get(site.site_code)) for site in settings.sites]


def _submission_rows(con: duckdb.DuckDBPyConnection | None) -> dict[str, list[tuple]]:
    if con is None:
        return {}
    try:
        rows = con.execute("""select site_code, period_end, status, reason, quarantine_path,
                                     coalesce(decided_at, received_at) as decided
                              from audit.submissions where status <> 'pending' order by site_code, period_end, decided""").fetchall()
    except duckdb.CatalogException:
        return {}
    out: dict[str, list[tuple]] = {}
    for r in rows:
        out.setdefault(r[0], []).append(r[1:])
    return out


def _status_line(code: str, rows: list[tuple], published: str | None, fresh: Freshness | None) -> str:
    received = max((r[0] for r in rows), default=None)
    latest: dict[str, tuple] = {}
    for period_end, status, reason, path, _at in rows:  # ordered by time: the last one per period wins
        if status in ("loaded", "rejected"):
            latest[period_end] = (status, reason, path)
    quarantined = [f"{p} ({reason}) -> {path}" for p, (status, reason, path) in sorted(latest.items())
                   if status == "rejected"]
    freshness_text = "" if fresh is None else f"; {_freshness_text(fresh)}"
    return (f"{code}: last received {received or '-'}; last published {published or '-'}"
            f"{freshness_text}; quarantined: {'; '.join(quarantined) or 'none'}")


def _freshness_text(fresh: Freshness) -> str:
    if fresh.last_period_end is None:
        return "OVERDUE: no submission accepted yet"
    return f"OVERDUE: next period was due by {fresh.due_by}" if fresh.overdue else f"next period due by {fresh.due_by}"


def _published_periods(settings: Settings) -> dict[str, str]:
    sql = "select site_code, cast(max(period_end) as varchar) from evaluation.indicator_values group by 1"
    if settings.warehouse_is_postgres:
        import psycopg
        try:
            with psycopg.connect(settings.warehouse_url) as pg, pg.cursor() as cur:
                cur.execute(sql)
                return dict(cur.fetchall())
        except psycopg.Error:
            return {}
    from assets.warehouse import connect_warehouse
    if not os.path.exists(settings.warehouse_url):
        return {}
    con = connect_warehouse(settings.warehouse_url)
    try:
        return dict(con.execute(sql).fetchall())
    except duckdb.CatalogException:
        return {}
    finally:
        con.close()


__all__ = ["run_nightly", "run_backfill", "submit_backfill", "site_status", "RunOutcome", "instance_for"]
