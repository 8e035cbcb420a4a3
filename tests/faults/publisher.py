"""Publishers in subprocesses that the tests can SIGKILL at any moment, and readers that query in a loop.

`Zygote` is one subprocess that imports the publish path once (assets.publish pulls in Dagster, ~2 s)
and then forks a fresh publisher per trial, so that dozens of kill trials cost no start-up each. A
forked publisher loads a pickled `Publication`, calls `assets.publish.write_publication` exactly as the
nightly job does, and writes phase markers (with CLOCK_MONOTONIC times) to a file as it goes: which
step of the publish it was in when it was killed. The zygote reaps a publisher only when told, so its
pid cannot be reused before the test has sent its SIGKILL.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from orchestration.settings import PROJECT_ROOT
from tests.faults.support import PYTHON, subprocess_env

ZYGOTE = r'''
import os, pickle, sys, time
import psycopg
import assets.warehouse as w
from assets.publish import write_publication
from orchestration.settings import load_settings

MARKS = None

def mark(name):
    MARKS.write(f"{time.monotonic():.6f} {name}\n")
    MARKS.flush()

def phase(name, fn):
    def wrapped(*args, **kwargs):
        mark(name)
        return fn(*args, **kwargs)
    return wrapped

# Phase markers around each step of both publish paths (assets/warehouse.py).
w.shutil.copy2 = phase("duckdb:copy", w.shutil.copy2)
w._write_copy = phase("duckdb:write_copy", w._write_copy)
w._fsync = phase("duckdb:fsync", w._fsync)
w.os.replace = phase("duckdb:rename", w.os.replace)
w._refresh_latest = phase("refresh_latest", w._refresh_latest)
w._refresh_site_schemas = phase("refresh_site_schemas", w._refresh_site_schemas)
w._index_history = phase("pg:index", w._index_history)
w.grant_access = phase("pg:grants", w.grant_access)
w._PgSession.load = phase("load", w._PgSession.load)
w._DuckSession.load = phase("load", w._DuckSession.load)
psycopg.Connection.commit = phase("pg:commit", psycopg.Connection.commit)


class MarkedConnection:
    """The DuckDB connection of the copy being written, marking its commit and checkpoint."""

    def __init__(self, con):
        self._con = con

    def execute(self, sql, *args):
        if sql in ("commit", "checkpoint"):
            mark(f"duckdb:{sql}")
        return self._con.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._con, name)


_connect = w.connect_warehouse
w.connect_warehouse = lambda path, read_only=True: MarkedConnection(_connect(path, read_only))
print("ready", flush=True)

while True:
    line = sys.stdin.readline().split()
    if not line:
        break
    if line[0] == "publish":
        url, pickle_path, marks_path = line[1:]
        pid = os.fork()
        if pid == 0:
            MARKS = open(marks_path, "w")
            try:
                mark("start")
                settings = load_settings({"C20P5_WAREHOUSE_URL": url})
                with open(pickle_path, "rb") as f:
                    pub = pickle.load(f)
                result = write_publication(settings, pub)
                mark(f"done {result}")
                os._exit(0)
            except BaseException as exc:
                mark(f"error {type(exc).__name__}: {exc}".replace("\n", " "))
                os._exit(1)
        print(pid, flush=True)
    elif line[0] == "reap":
        _, status = os.waitpid(int(line[1]), 0)
        print(status, flush=True)
'''


@dataclass
class Trial:
    pid: int
    marks: Path
    started: float  # CLOCK_MONOTONIC when the fork was requested

    def phases(self) -> list[tuple[float, str]]:
        out = []
        for line in self.marks.read_text().splitlines() if self.marks.exists() else []:
            t, name = line.split(" ", 1)
            out.append((float(t), name))
        return out

    def last_phase(self) -> str:
        phases = self.phases()
        return phases[-1][1] if phases else "not started"


class Zygote:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.count = 0
        self.proc = subprocess.Popen([PYTHON, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=(workdir / "zygote.log").open("w"), text=True, bufsize=1,
                                     env=subprocess_env({}), cwd=PROJECT_ROOT)
        assert self.proc.stdout.readline().strip() == "ready", (workdir / "zygote.log").read_text()

    def start(self, url: str, pub_pickle: Path) -> Trial:
        self.count += 1
        marks = self.workdir / f"trial-{self.count}.marks"
        started = time.monotonic()
        self.proc.stdin.write(f"publish {url} {pub_pickle} {marks}\n")
        return Trial(int(self.proc.stdout.readline()), marks, started)

    def finish(self, trial: Trial, kill_after: float | None = None, timeout: float = 60,
               phase: str | None = None) -> int:
        """SIGKILL the publisher `kill_after` seconds after it was started, or after it entered `phase`
        (None and None: let it finish); then reap it and return its wait status. Until reaped it is at
        worst a zombie, so the pid is still ours to signal."""
        if phase is not None:
            deadline = time.monotonic() + timeout
            while not any(n.startswith((phase, "done", "error")) for _, n in trial.phases()):
                assert time.monotonic() < deadline, f"publisher {trial.pid} stuck: {trial.phases()}"
                time.sleep(0.001)
            entered = next(t for t, n in trial.phases() if n.startswith((phase, "done", "error")))
            time.sleep(max(0.0, entered + (kill_after or 0.0) - time.monotonic()))
            os.kill(trial.pid, signal.SIGKILL)
        elif kill_after is not None:
            time.sleep(max(0.0, trial.started + kill_after - time.monotonic()))
            os.kill(trial.pid, signal.SIGKILL)
        else:
            deadline = time.monotonic() + timeout
            while not any(n.startswith(("done", "error")) for _, n in trial.phases()):
                assert time.monotonic() < deadline, f"publisher {trial.pid} did not finish: {trial.phases()}"
                time.sleep(0.02)
        self.proc.stdin.write(f"reap {trial.pid}\n")
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


READER = r'''
import json, sys, time, os
target, where, out_path, stop_path, sql, pause = sys.argv[1:7]
pause = float(pause)
out = open(out_path, "w")
if target == "duckdb":
    import duckdb
    def query():
        con = duckdb.connect()  # a new connection per query: it opens whichever file is current
        try:
            con.execute(f"attach '{where}' as warehouse (read_only)")
            con.execute("use warehouse")
            return con.execute(sql).fetchone()
        finally:
            con.close()
else:
    import psycopg
    con = psycopg.connect(where, autocommit=True)  # autocommit: each query is its own transaction
    def query():
        return con.execute(sql).fetchone()
while not os.path.exists(stop_path):
    try:
        row = [None if v is None else str(int(v)) for v in query()]
        out.write(json.dumps({"t": time.monotonic(), "row": row}) + "\n")
    except Exception as exc:
        out.write(json.dumps({"t": time.monotonic(), "error": f"{type(exc).__name__}: {exc}"}) + "\n")
    out.flush()
    time.sleep(pause)
'''


def start_reader(target: str, where: str, out: Path, stop: Path, sql: str, pause: float = 0.0) -> subprocess.Popen:
    """A reader process querying `sql` in a loop (a short `pause` between queries leaves the publisher
    some CPU on a small machine) until `stop` exists; one JSON line per query in `out`."""
    return subprocess.Popen([PYTHON, "-c", READER, target, where, str(out), str(stop), sql, str(pause)],
                            env=subprocess_env({}), cwd=PROJECT_ROOT, stderr=subprocess.PIPE)
