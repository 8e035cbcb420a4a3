"""The submission sensor on its own (no runs): what counts as complete, and what it leaves alone."""
from __future__ import annotations

from datetime import date

import dagster as dg
import polars as pl
import pytest

from assets.generator import write_submission
from checks.schemas import FILE_COLUMNS
from orchestration import sensors
from orchestration.sensors import load_cursor, submission_sensor
from orchestration.settings import Settings


def empty_submission(settings: Settings, site: str = "lsc", period_end: date = date(2026, 10, 31)):
    frames = {k: pl.DataFrame(schema={c: pl.Utf8 for c in cols}) for k, cols in FILE_COLUMNS.items()}
    return write_submission(settings.landing_dir, site, period_end, frames)


def evaluate(instance: dg.DagsterInstance, cursor: str | None = None) -> dg.SensorResult:
    return submission_sensor(dg.build_sensor_context(instance=instance, cursor=cursor))


def test_a_submission_still_arriving_is_waited_for(isolated_settings: Settings,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    folder = empty_submission(isolated_settings)
    events = folder / "events.csv"
    complete = events.read_bytes()
    events.write_bytes(complete[:5])  # the transfer has not finished this file yet
    with dg.instance_for_test() as instance:
        waiting = evaluate(instance)
        assert not waiting.run_requests and "still arriving" in waiting.skip_reason.skip_message
        assert "events.csv" in waiting.skip_reason.skip_message
        events.write_bytes(complete)
        [request] = evaluate(instance, waiting.cursor).run_requests
        assert request.partition_key == "2026-10|lsc"


def test_a_submission_that_never_completes_is_handed_over_to_be_quarantined(
        isolated_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = empty_submission(isolated_settings)
    (folder / "events.csv").write_text("garbage\n")
    monkeypatch.setattr(sensors, "SETTLE_SECONDS", 0)
    with dg.instance_for_test() as instance:
        assert len(evaluate(instance).run_requests) == 1


def test_folders_no_partition_can_cover_are_left_to_the_nightly_run(isolated_settings: Settings) -> None:
    empty_submission(isolated_settings, site="nowhere")
    with dg.instance_for_test() as instance:
        result = evaluate(instance)
    assert not result.run_requests and "not a registry site" in result.skip_reason.skip_message


def test_the_earlier_cursor_format_is_read() -> None:
    assert load_cursor('["lsc/2026-10/0123456789ab"]') == {"lsc/2026-10": {"sha": "0123456789ab", "mtime": None}}
    assert load_cursor(None) == {}


def test_the_registry_sites_become_partitions_through_the_sensor(isolated_settings: Settings) -> None:
    from orchestration.partitions import SITE_PARTITIONS, registry_sites
    with dg.instance_for_test() as instance:
        [request] = evaluate(instance).dynamic_partitions_requests
        assert (request.partitions_def_name, list(request.partition_keys)) == (SITE_PARTITIONS, registry_sites())
        instance.add_dynamic_partitions(SITE_PARTITIONS, registry_sites())
        assert not evaluate(instance).dynamic_partitions_requests
