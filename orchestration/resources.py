"""Dagster resources: the settings and the private build database."""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import duckdb

from orchestration.settings import LOCK_TIMEOUT_SECONDS, Settings, load_settings

FIRST_WAIT_SECONDS, MAX_WAIT_SECONDS = 0.1, 15.0
# What a step's DuckDB may hold in memory before it spills to disk (DuckDB's own default is 80% of RAM).
# At 100k people the SQL rules over the run's 33 M staged event rows reached 7.9 GB without it, and the
# promotion's ordered insert 5 GB (it no longer sorts). Not every operator spills: at 1 M people a rule's
# EXISTS ran out of memory under this cap until it became a join (checks/rules.py, unknown_person).
BUILD_DB_MEMORY = "3GB"

log = dg.get_dagster_logger("c20p5")


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return con.execute("select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
                       [schema, table]).fetchone()[0] > 0


class PipelineResource(dg.ConfigurableResource):
    """Settings come from the C20P5_* environment (orchestration/settings.py), read when used,
    so the UI, the CLI and the tests all run the same definitions."""

    # How long a writer waits for another process's lock before its step is retried; None: the
    # setting C20P5_LOCK_TIMEOUT_SECONDS (default LOCK_TIMEOUT_SECONDS, 300 s).
    lock_timeout_seconds: float | None = None

    def settings(self) -> Settings:
        return load_settings()

    @contextmanager
    def build_db(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The build database, one writer at a time: wait (with backoff) while another process holds it."""
        settings = self.settings()
        settings.work_dir.mkdir(parents=True, exist_ok=True)
        timeout = settings.lock_timeout_seconds if self.lock_timeout_seconds is None else self.lock_timeout_seconds
        con = connect_with_backoff(str(settings.build_db_path), timeout=timeout)
        try:
            con.execute(f"set memory_limit = '{BUILD_DB_MEMORY}'")
            for schema in ("audit", "raw", "ref"):
                con.execute(f"create schema if not exists {schema}")
            yield con
        finally:
            con.close()


def connect_with_backoff(path: str, read_only: bool = False, timeout: float = LOCK_TIMEOUT_SECONDS
                         ) -> duckdb.DuckDBPyConnection:
    """DuckDB allows one writing process: a lock held elsewhere is waited out, doubling the pause each
    time (0.1 s .. 15 s) until `timeout`; then BuildDatabaseLocked, which the RetryPolicy retries."""
    deadline, wait = time.monotonic() + timeout, FIRST_WAIT_SECONDS
    while True:
        try:
            return duckdb.connect(path, read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise BuildDatabaseLocked(path, timeout, exc) from exc
            log.info("build database %s is locked by another process; waiting %.1f s", path, min(wait, left))
            time.sleep(min(wait, left))
            wait = min(wait * 2, MAX_WAIT_SECONDS)


@contextmanager
def peek_build_db(settings: Settings, timeout: float = 5.0) -> Iterator[duckdb.DuckDBPyConnection | None]:
    """A read-only look for sensors, schedules and `c20p5 status`: None if there is no build database
    yet; BuildDatabaseLocked if a run keeps it busy for longer than `timeout`."""
    path = settings.build_db_path
    if not path.exists():
        yield None
        return
    con = connect_with_backoff(str(path), read_only=True, timeout=timeout)
    try:
        yield con
    finally:
        con.close()


class BuildDatabaseLocked(RuntimeError):
    def __init__(self, path: str, timeout: float, cause: Exception):
        super().__init__(f"the build database {path} is in use by another process and stayed locked for "
                         f"{timeout:.0f} s ({cause}); another run is probably writing it: this step is retried "
                         "with backoff, or stop the other process (a run, or a client holding the file)")
