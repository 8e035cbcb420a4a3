"""Disk and lock trouble (issue 7, part 5): each fails with a clear message and leaves the last
publication intact; once the trouble is gone the next publish completes.

- The build database locked by another process (a subprocess holding a DuckDB write connection on
  C20P5_WORK_DIR/build.duckdb) during `c20p5 run`, then released: tests/faults/locked.py, in the
  background (the run waits for the lock, then each retry of the step waits again;
  C20P5_LOCK_TIMEOUT_SECONDS=2).
- The warehouse directory read-only. The tests run as root here, and root ignores file modes, so
  `chmod` would prove nothing: the directory is bind-mounted read-only onto itself (`mount --bind`,
  then `mount -o remount,bind,ro`), which stops root too. Not root: chmod 0555. Neither possible:
  skipped with the reason. On PostgreSQL the analogue is a database whose transactions are
  read-only (`default_transaction_read_only`). And a plain file where the directory should be.
- The disk full: the warehouse directory on a 20 MB tmpfs, filled up by another file.
- The DuckDB publisher lock held by another process (a stuck publisher): the next publish waits its
  turn, writes nothing meanwhile, and completes once the lock is released.
"""
from __future__ import annotations

import os
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from assets.publish import write_publication
from orchestration.settings import load_settings
from tests.faults.support import PYTHON, duck_tables, env_for, pg_tables, subprocess_env, table_checksums
from tests.warehouse.conftest import new_database
from tests.warehouse.factory import make_publication

pytestmark = pytest.mark.slow


def settings_for(root: Path, warehouse: str | None = None):
    return load_settings(env_for(root) | ({"C20P5_WAREHOUSE_URL": warehouse} if warehouse else {}))


def duck_state(path: Path) -> dict[str, str]:
    return table_checksums(duck_tables(path), drop=set())


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in (".evaluation.duckdb.lock", "evaluation.duckdb"))


# --- the build database locked -------------------------------------------------------------------------

def test_build_database_locked_by_another_process(locked_run: dict) -> None:
    locked = locked_run["locked"]
    assert locked["returncode"] == 1, locked["stdout"]  # the run failed (exit code 1: failed)
    assert "FAILED" in locked["stdout"] and "is unchanged" in locked["stdout"], locked["stdout"]
    assert locked["after"] == locked_run["before"]  # the last publication is intact, to the byte
    # the run log says what is wrong, where, and what to do
    clear = [line for line in locked["stderr"].splitlines() if "in use by another process" in line
             and locked_run["build_db"] in line and "stop the other process" in line]
    assert clear, locked["stderr"][-3000:]


def test_the_next_run_completes_once_the_lock_is_gone(locked_run: dict) -> None:
    released = locked_run["released"]
    assert released["returncode"] == 0, released["stdout"] + released["stderr"][-2000:]
    assert "publication: 2" in released["stdout"] and released["after"] != locked_run["before"]


def test_c20p5_run_itself_says_the_build_database_is_locked(locked_run: dict) -> None:
    stdout = locked_run["locked"]["stdout"]
    assert "in use by another process" in stdout, stdout


# --- the warehouse directory read-only ------------------------------------------------------------------

@contextmanager
def read_only(directory: Path) -> Iterator[str]:
    """Make `directory` unwritable even for root; yields the technique used."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield "chmod 0555 (not root)"
        finally:
            directory.chmod(0o755)
        return
    bind = subprocess.run(["mount", "--bind", str(directory), str(directory)], capture_output=True, text=True)
    if bind.returncode:
        pytest.skip(f"running as root, where chmod does not stop writes, and bind mounts are not permitted: "
                    f"{bind.stderr.strip()}")
    try:
        ro = subprocess.run(["mount", "-o", "remount,bind,ro", str(directory)], capture_output=True, text=True)
        if ro.returncode:
            pytest.skip(f"cannot remount read-only: {ro.stderr.strip()}")
        yield "read-only bind mount"
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def test_warehouse_directory_read_only_duckdb(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    path = Path(settings.warehouse_url)
    assert write_publication(settings, make_publication(variant=0)) == 1
    before = duck_state(path)
    with read_only(path.parent) as how:
        with pytest.raises(OSError) as failure:
            write_publication(settings, make_publication(variant=1))
        assert duck_state(path) == before  # still readable, and unchanged
    message = str(failure.value)
    assert "Read-only file system" in message or "Permission denied" in message, (how, message)
    assert str(path.parent) in message, message  # says where
    assert duck_state(path) == before and leftovers(path.parent) == []
    assert write_publication(settings, make_publication(variant=1)) == 2  # writable again: the next run works


def test_warehouse_read_only_postgresql(tmp_path: Path, pg_server: str) -> None:
    with new_database(pg_server) as db:
        settings = settings_for(tmp_path, db.publisher_url)
        assert write_publication(settings, make_publication(variant=0)) == 1
        before = table_checksums(pg_tables(db.publisher_url), drop=set())
        with psycopg.connect(pg_server, autocommit=True) as admin:  # (not from inside the database itself)
            admin.execute(f"alter database {db.name} set default_transaction_read_only = on")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction) as failure:
            write_publication(settings, make_publication(variant=1))
        assert "read-only transaction" in str(failure.value)
        assert table_checksums(pg_tables(db.publisher_url), drop=set()) == before
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(f"alter database {db.name} reset default_transaction_read_only")
        assert write_publication(settings, make_publication(variant=1)) == 2


def test_a_file_where_the_warehouse_directory_should_be(tmp_path: Path) -> None:
    """Another unwritable directory, and one that stops any user: a plain file in its place."""
    settings = replace(settings_for(tmp_path), warehouse_url=str(tmp_path / "nowhere" / "evaluation.duckdb"))
    (tmp_path / "nowhere").write_text("a file where the warehouse directory should be")
    with pytest.raises(OSError) as failure:
        write_publication(settings, make_publication(variant=0))
    assert str(tmp_path / "nowhere") in str(failure.value)


# --- the disk full --------------------------------------------------------------------------------------

@contextmanager
def small_filesystem(directory: Path, megabytes: int) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("a size-limited filesystem needs `mount -t tmpfs`, which needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "c20p5-disk-full", str(directory)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"mount -t tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(directory)], check=True)


@contextmanager
def full_disk(tmp_path: Path) -> Iterator[tuple]:
    """A warehouse with one publication on a 20 MB tmpfs, then filled by another file up to half a copy
    of the warehouse short; yields (settings, path, state before, the failed publish's exception)."""
    warehouse_dir = tmp_path / "warehouse"
    with small_filesystem(warehouse_dir, 20):
        settings = settings_for(tmp_path)
        path = Path(settings.warehouse_url)
        assert write_publication(settings, make_publication(variant=0)) == 1
        before = duck_state(path)
        stat = os.statvfs(warehouse_dir)
        with (warehouse_dir / "someone_elses_file").open("wb") as f:
            f.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - path.stat().st_size // 2))
        with pytest.raises(Exception) as failure:
            write_publication(settings, make_publication(variant=1))
        yield settings, path, before, failure.value


def test_disk_full_duckdb(tmp_path: Path) -> None:
    with full_disk(tmp_path) as (settings, path, before, error):
        assert "No space left on device" in str(error), repr(error)
        assert duck_state(path) == before
        (path.parent / "someone_elses_file").unlink()  # space again: the next run completes
        assert write_publication(settings, make_publication(variant=1)) == 2
        assert leftovers(path.parent) == []


def test_disk_full_leaves_no_half_copy(tmp_path: Path) -> None:
    with full_disk(tmp_path) as (settings, path, before, error):
        assert leftovers(path.parent) == ["someone_elses_file"]


# --- a stuck publisher ----------------------------------------------------------------------------------

@contextmanager
def holding(code: str, root: Path) -> Iterator[subprocess.Popen]:
    """A helper process that runs `code` (which prints 'ready' once it holds what it holds) until released."""
    proc = subprocess.Popen([PYTHON, "-c", textwrap.dedent(code)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=subprocess_env({}), cwd=root)
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.stdin.close()  # the helper waits on stdin: closing it releases what it holds
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_stuck_publisher_makes_the_next_wait_not_break(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    path = Path(settings.warehouse_url)
    assert write_publication(settings, make_publication(variant=0)) == 1
    before = duck_state(path)
    result: dict[str, object] = {}
    with holding(f"""
            import fcntl, sys
            handle = open({str(path.with_name('.evaluation.duckdb.lock'))!r}, "w")
            fcntl.flock(handle, fcntl.LOCK_EX)
            print("ready", flush=True)
            sys.stdin.read()
            """, tmp_path):
        worker = threading.Thread(
            target=lambda: result.update(id=write_publication(settings, make_publication(variant=1))))
        worker.start()
        time.sleep(1.5)
        assert worker.is_alive() and "id" not in result  # waiting its turn
        assert duck_state(path) == before
    worker.join(timeout=30)
    assert result.get("id") == 2
