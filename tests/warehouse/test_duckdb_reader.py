"""A reader process holding the published DuckDB file open (read-only, querying in a loop) neither
stops a publish nor sees a mix: it keeps the old publication until it reconnects."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from assets.warehouse import connect_warehouse
from tests.warehouse.conftest import SIGNATURE, DuckTarget
from tests.warehouse.factory import make_publication

SITES = ("aa", "bb", "cc", "dd")
# The documented way in: attach under another name (file and schema are both `evaluation`), read-only.
READER = """
import duckdb, json, os, sys, time
path, flags, sql = sys.argv[1:4]
def connect():
    con = duckdb.connect()
    con.execute(f"attach '{path}' as warehouse (read_only)")
    con.execute("use warehouse")
    return con
con, reconnected = connect(), False
while not os.path.exists(flags + ".stop"):
    print(json.dumps([reconnected, *con.execute(sql).fetchone()], default=str), flush=True)
    if not reconnected and os.path.exists(flags + ".reconnect"):
        con.close()
        con, reconnected = connect(), True
    time.sleep(0.005)
"""


def signature(path: Path) -> list:
    con = connect_warehouse(path)
    try:
        return json.loads(json.dumps(list(con.execute(SIGNATURE).fetchone()), default=str))
    finally:
        con.close()


class Lines:
    """The reader's output, collected as it comes."""

    def __init__(self, proc: subprocess.Popen):
        self.items: list[list] = []
        self.thread = threading.Thread(target=lambda: [self.items.append(json.loads(x)) for x in proc.stdout])
        self.thread.start()

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.items) < count:
            assert time.monotonic() < deadline, f"reader produced {len(self.items)} lines, expected {count}"
            time.sleep(0.01)


def test_a_reader_holding_the_file_open_does_not_stop_a_publish(tmp_path: Path) -> None:
    target = DuckTarget(tmp_path / "warehouse" / "evaluation.duckdb")
    target.publish(make_publication(sites=SITES, variant=0))
    old = signature(target.path)
    flags = tmp_path / "reader"
    proc = subprocess.Popen([sys.executable, "-c", READER, str(target.path), str(flags), SIGNATURE],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = Lines(proc)
        lines.wait_for(3)
        assert target.publish(make_publication(sites=SITES, variant=1)) == 2
        new = signature(target.path)
        lines.wait_for(len(lines.items) + 10)   # still reading, from the file it opened
        flags.with_suffix(".reconnect").touch()
        lines.wait_for(len(lines.items) + 10)
    finally:
        flags.with_suffix(".stop").touch()
        proc.wait(timeout=30)
        lines.thread.join()
    assert proc.returncode == 0, proc.stderr.read()
    before = [row[1:] for row in lines.items if not row[0]]
    after = [row[1:] for row in lines.items if row[0]]
    assert new != old and len(before) >= 13 and len(after) >= 5
    assert all(row == old for row in before) and all(row == new for row in after)
