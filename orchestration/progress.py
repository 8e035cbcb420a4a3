"""Step progress of a Dagster run, read back from the run's event log: live lines while `c20p5 run`
works, and per-step timings once it is done (`c20p5 bench` splits a run into stages with them).

Read from the event log rather than hooked into the job, so the UI, the schedule and the sensor run
the very same job, and a polling reader never slows the run down.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TextIO

import dagster as dg

_STEP = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE,
         dg.DagsterEventType.STEP_UP_FOR_RETRY}
# Work done inside a long step (dbt yields one per model, seed and test as it finishes).
_WORK = {dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.ASSET_CHECK_EVALUATION,
         dg.DagsterEventType.ASSET_OBSERVATION}
_ENDS = {dg.DagsterEventType.STEP_SUCCESS: "done", dg.DagsterEventType.STEP_FAILURE: "FAILED",
         dg.DagsterEventType.STEP_UP_FOR_RETRY: "failed, retrying"}


@dataclass(frozen=True)
class StepTiming:
    step_key: str
    started: float
    finished: float
    outcome: str  # done | FAILED | failed, retrying | running

    @property
    def seconds(self) -> float:
        return self.finished - self.started


def step_timings(instance: dg.DagsterInstance, run_id: str) -> list[StepTiming]:
    """Each step of a finished run, in start order; a retried step counts from its first start."""
    starts: dict[str, float] = {}
    ends: dict[str, tuple[float, str]] = {}
    for record in instance.get_records_for_run(run_id, of_type=_STEP).records:
        entry = record.event_log_entry
        kind = entry.dagster_event.event_type
        if kind == dg.DagsterEventType.STEP_START:
            starts.setdefault(entry.step_key, entry.timestamp)
        else:
            ends[entry.step_key] = (entry.timestamp, _ENDS[kind])
    now = time.time()
    return sorted((StepTiming(key, t0, *ends.get(key, (now, "running"))) for key, t0 in starts.items()),
                  key=lambda s: s.started)


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m:3d}:{s:02d}"


class ProgressLines:
    """Prints a line as each step of `run_id` starts and ends, and a heartbeat line every `heartbeat`
    seconds while one step runs long (with how many materializations and check results it has stored)."""

    def __init__(self, instance: dg.DagsterInstance, run_id: str, out: TextIO, interval: float = 0.5,
                 heartbeat: float = 20.0) -> None:
        self.instance, self.run_id, self.out = instance, run_id, out
        self.interval, self.heartbeat = interval, heartbeat
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="c20p5-progress", daemon=True)
        self._cursor: str | None = None
        self._began = time.monotonic()
        self._running: dict[str, tuple[float, int]] = {}  # step -> (started at, work events)
        self._finished = 0
        self._last_beat = time.monotonic()

    def __enter__(self) -> ProgressLines:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._poll()  # whatever arrived after the last poll

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._poll()
            except Exception:  # a reader must never break the run it watches; the next poll retries
                continue
            self._beat()

    def _poll(self) -> None:
        while True:
            conn = self.instance.get_records_for_run(self.run_id, cursor=self._cursor, of_type=_STEP | _WORK,
                                                     limit=500)
            for record in conn.records:
                self._show(record.event_log_entry)
            self._cursor = conn.cursor
            if not conn.has_more:
                return

    def _show(self, entry: object) -> None:
        kind, step = entry.dagster_event.event_type, entry.step_key
        if kind in _WORK:
            if step in self._running:
                t0, n = self._running[step]
                self._running[step] = (t0, n + 1)
            return
        if kind == dg.DagsterEventType.STEP_START:
            self._running[step] = (entry.timestamp, 0)
            self._line(f"{step} ...")
            return
        t0, _ = self._running.pop(step, (entry.timestamp, 0))
        self._finished += kind == dg.DagsterEventType.STEP_SUCCESS
        self._line(f"{step} {_ENDS[kind]} in {entry.timestamp - t0:.1f} s ({self._finished} steps done)")

    def _beat(self) -> None:
        if not self._running or time.monotonic() - self._last_beat < self.heartbeat:
            return
        for step, (t0, n) in self._running.items():
            results = f", {n} results so far" if n else ""  # the dbt step's come as each mart is built
            self._line(f"{step} still running ({time.time() - t0:.0f} s{results})")

    def _line(self, text: str) -> None:
        self._last_beat = time.monotonic()
        print(f"[{_clock(time.monotonic() - self._began)}] {text}", file=self.out, flush=True)


__all__ = ["ProgressLines", "StepTiming", "step_timings"]
