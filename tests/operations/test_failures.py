"""Failures: a data error fails at once, naming file, row and column, and is never retried; a locked
build database is retried with backoff; a failed run reaches the webhook (through the run-failure
sensor, or from `c20p5 run` itself); without a webhook the alert is logged, nothing crashes."""
from __future__ import annotations

import errno
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from assets.generator import write_submission
from assets.ingest import reference_data
from checks.schemas import FILE_COLUMNS
from orchestration import alerts, cli
from orchestration.resources import BuildDatabaseLocked, PipelineResource
from orchestration.retries import is_transient
from orchestration.sensors import run_failure_alert
from orchestration.settings import SHIPPED_REFERENCE_DIR, Settings, load_settings
from tests.conftest import env_for
from tests.operations.conftest import Webhook

CENSUS = "census2021_lsoa21_age6_usual_residents.csv"
WHERE = f"reference/{CENSUS}, row 3, column usual_residents"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, webhook: Webhook) -> Settings:
    for key, value in env_for(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("C20P5_ALERT_WEBHOOK", webhook.url)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return load_settings()


def bad_reference(settings: Settings) -> None:
    """A newer census file in the landing zone with a word where a count belongs (data line 2)."""
    lines = (SHIPPED_REFERENCE_DIR / CENSUS).read_text().splitlines(keepends=True)
    lines[2] = lines[2].rsplit(",", 1)[0] + ",abc\n"
    target = settings.landing_dir / "reference" / CENSUS
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("".join(lines))


def step_events(result: dg.ExecuteInProcessResult) -> list[str]:
    return [e.event_type_value for e in result.all_events if e.is_step_event]


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    return next(e.event_specific_data.error.message for e in result.all_events if e.is_step_failure)


def alert_context(instance: dg.DagsterInstance, run_id: str) -> dg.RunFailureSensorContext:
    [record] = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert", dagster_instance=instance, dagster_run=instance.get_run_by_id(run_id),
        dagster_event=record.dagster_event).for_run_failure()


def test_a_data_error_fails_fast_and_the_failure_sensor_posts_it(settings: Settings, webhook: Webhook) -> None:
    bad_reference(settings)
    with dg.instance_for_test() as instance:
        result = dg.materialize([reference_data], instance=instance, raise_on_error=False,
                                resources={"pipeline": PipelineResource()})
        assert step_events(result) == ["STEP_START", "STEP_FAILURE"]  # no STEP_UP_FOR_RETRY
        assert WHERE in failure_message(result) and "value 'abc' is not a number" in failure_message(result)
        run_failure_alert(alert_context(instance, result.run_id))
    [alert] = [a for a in webhook.events("run_failure") if a["details"]["run_id"] == result.run_id]
    assert WHERE in alert["details"]["error"] and alert["details"]["ui_path"] == f"/runs/{result.run_id}"
    assert alert["text"].startswith("[c20p5] run ") and "failed" in alert["summary"]


def test_c20p5_run_alerts_on_its_own_failure_and_exits_1(settings: Settings, webhook: Webhook) -> None:
    frames = {k: pl.DataFrame(schema={c: pl.Utf8 for c in cols}) for k, cols in FILE_COLUMNS.items()}
    write_submission(settings.landing_dir, "lsc", date(2026, 10, 31), frames)
    bad_reference(settings)
    assert cli.main(["run"]) == cli.EXIT_FAILED
    [alert] = [a for a in webhook.events("run_failure") if a["details"]["trigger"] == "cli"]
    assert WHERE in alert["details"]["error"] and alert["details"]["partitions"] == "2026-10|lsc..2026-10|burnley_east"
    from orchestration.runner import instance_for
    with instance_for(settings) as instance:  # the failure sensor leaves c20p5's own runs to c20p5
        run_failure_alert(alert_context(instance, alert["details"]["run_id"]))
    assert len([a for a in webhook.events("run_failure") if a["details"]["run_id"] == alert["details"]["run_id"]]) == 1


def test_without_a_webhook_the_alert_is_logged(settings: Settings, webhook: Webhook,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("C20P5_ALERT_WEBHOOK")
    bad_reference(settings)
    before = len(webhook.received)
    with dg.instance_for_test() as instance:
        result = dg.materialize([reference_data], instance=instance, raise_on_error=False,
                                resources={"pipeline": PipelineResource()})
        run_failure_alert(alert_context(instance, result.run_id))  # no exception
    assert len(webhook.received) == before
    assert alerts.send_alert(load_settings(), "run_failure", "x", {}) == "logged: no webhook configured"


def test_an_unreachable_webhook_is_retried_then_logged(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alerts, "FIRST_WAIT_SECONDS", 0.01)
    unreachable = Settings(**{**settings.__dict__, "alert_webhook": "http://127.0.0.1:9/nothing-listens"})
    assert alerts.send_alert(unreachable, "run_failure", "x", {}).startswith("failed: ")


def test_a_locked_build_database_is_retried_with_backoff(settings: Settings) -> None:
    """Another process holds the build database; the step waits (lock timeout), fails as transient, is
    retried after the policy's backoff, and succeeds once the other process has let go."""
    settings.work_dir.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb; con = duckdb.connect({str(settings.build_db_path)!r}); "
                               "print('locked', flush=True); input()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with dg.instance_for_test() as instance:
        release = threading.Thread(target=_release_on_retry, args=(instance, holder), daemon=True)
        release.start()
        try:
            result = dg.materialize([reference_data], instance=instance, raise_on_error=False,
                                    resources={"pipeline": PipelineResource(lock_timeout_seconds=1.0)})
        finally:
            holder.kill()
    assert result.success
    events = step_events(result)
    assert events[:2] == ["STEP_START", "STEP_UP_FOR_RETRY"] and events[-1] == "STEP_SUCCESS"


def _release_on_retry(instance: dg.DagsterInstance, holder: subprocess.Popen, timeout: float = 60) -> None:
    """Let go of the lock as soon as the run has asked for a retry (as the other run would, finishing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in instance.get_runs(limit=1):
            if instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY):
                holder.stdin.write("\n")
                holder.stdin.flush()
                return
        time.sleep(0.05)


@pytest.mark.parametrize(("error", "transient"), [
    (BuildDatabaseLocked("build.duckdb", 1, RuntimeError("lock")), True),
    (duckdb.IOException('IO Error: Could not set lock on file "build.duckdb": Conflicting lock is held'), True),
    (OSError(errno.EBUSY, "Device or resource busy"), True),
    (ConnectionResetError("connection reset by peer"), True),
    (duckdb.ConversionException("Could not convert string 'abc' to INT32"), False),
    (ValueError("patients.csv, row 6, column sex: value 'X'"), False),
    (FileNotFoundError(errno.ENOENT, "No such file"), False),
])
def test_only_transient_io_errors_count_as_transient(error: Exception, transient: bool) -> None:
    assert is_transient(error) is transient
