"""Progress lines and step timings, read back from a real Dagster run's event log."""
from __future__ import annotations

import io
import re
import time

import dagster as dg

from orchestration.progress import ProgressLines, step_timings


@dg.asset
def slow_first() -> int:
    time.sleep(0.6)
    return 1


@dg.asset
def then_second(slow_first: int) -> int:
    return slow_first + 1


@dg.asset
def broken(then_second: int) -> int:
    raise RuntimeError("planted failure")


def _run(assets: list, out: io.StringIO) -> tuple[dg.DagsterInstance, str, bool]:
    instance = dg.DagsterInstance.ephemeral()
    run_id = "0" * 8 + "-0000-0000-0000-" + "0" * 12
    job = dg.define_asset_job("j", selection=dg.AssetSelection.all()).resolve(
        asset_graph=dg.Definitions(assets=assets).resolve_asset_graph())
    with ProgressLines(instance, run_id, out, interval=0.05, heartbeat=0.2):
        result = job.execute_in_process(instance=instance, run_id=run_id, raise_on_error=False)
    return instance, run_id, result.success


def test_a_line_as_each_step_starts_and_ends_in_order_with_heartbeats() -> None:
    out = io.StringIO()
    _run([slow_first, then_second], out)
    lines = out.getvalue().splitlines()
    assert all(re.match(r"^\[\s*\d+:\d\d\] ", line) for line in lines), lines
    texts = [line.split("] ", 1)[1] for line in lines]
    steps = [t for t in texts if "still running" not in t]
    assert steps[0] == "slow_first ..." and steps[1].startswith("slow_first done in 0.")
    assert steps[2] == "then_second ..." and steps[3].startswith("then_second done in ")
    assert steps[3].endswith("(2 steps done)")
    assert any(t.startswith("slow_first still running") for t in texts), texts  # 0.6 s > 0.2 s heartbeat


def test_a_failed_step_is_said_and_timed() -> None:
    out = io.StringIO()
    instance, run_id, ok = _run([slow_first, then_second, broken], out)
    assert not ok
    assert any(re.search(r"\] broken FAILED in \d", line) for line in out.getvalue().splitlines())
    timings = {t.step_key: t for t in step_timings(instance, run_id)}
    assert [t.step_key for t in step_timings(instance, run_id)] == ["slow_first", "then_second", "broken"]
    assert timings["broken"].outcome == "FAILED" and timings["then_second"].outcome == "done"
    assert 0.6 <= timings["slow_first"].seconds < 5
