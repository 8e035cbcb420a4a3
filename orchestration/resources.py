"""Dagster resources: the settings and the private build database."""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import duckdb

from orchestration.settings import Settings, load_settings

LOCK_RETRIES = 20
LOCK_WAIT_SECONDS = 0.5


class PipelineResource(dg.ConfigurableResource):
    """Settings come from the C20P5_* environment (orchestration/settings.py), read when used,
    so the UI, the CLI and the tests all run the same definitions."""

    def settings(self) -> Settings:
        return load_settings()

    @contextmanager
    def build_db(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The build database, one writer at a time: wait briefly if another process holds it."""
        settings = self.settings()
        settings.work_dir.mkdir(parents=True, exist_ok=True)
        con = _connect_with_retry(str(settings.build_db_path))
        try:
            for schema in ("audit", "pending", "raw", "ref"):
                con.execute(f"create schema if not exists {schema}")
            yield con
        finally:
            con.close()


def _connect_with_retry(path: str, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    for attempt in range(LOCK_RETRIES):
        try:
            return duckdb.connect(path, read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or attempt == LOCK_RETRIES - 1:
                raise BuildDatabaseLocked(path, exc) from exc
            time.sleep(LOCK_WAIT_SECONDS * (attempt + 1) / 4)
    raise AssertionError("unreachable")


class BuildDatabaseLocked(RuntimeError):
    def __init__(self, path: str, cause: Exception):
        super().__init__(f"the build database {path} is in use by another process and stayed locked "
                         f"({cause}); stop the other process (another run, or a client holding the file) and retry")
