"""The build database locked by another process, through `c20p5 run`, in a subprocess
(`python -m tests.faults.locked <root>`; conftest.py starts it with the session: it mostly waits).

In its own environment (C20P5_* at <root>, C20P5_LOCK_TIMEOUT_SECONDS short), for one site of the
shipped registry: month 1 lands and `c20p5 run` publishes it (the last good publication); month 2
lands; a helper process holds a write connection on the build database; `c20p5 run` (fails); the
helper lets go; `c20p5 run` (completes the work); `c20p5 run` again (the same inputs: nothing new).
Writes `result.json`: each run's exit code and output, and the warehouse's table checksums (and file
sha256) before and after each.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import replace
from datetime import date
from pathlib import Path

from orchestration.settings import PROJECT_ROOT
from tests.faults.cases import PERIOD_1, PERIOD_2
from tests.faults.support import PYTHON, copy_period, duck_tables, table_checksums

HOLD_BUILD_DB = """
import duckdb, sys
con = duckdb.connect(sys.argv[1])  # a write connection: DuckDB lets one process write a file
con.execute("create table if not exists held (x int)")
print("ready", flush=True)
sys.stdin.read()  # until our stdin is closed
"""


def main(root: Path) -> None:
    from assets.generator import generate_landing
    from orchestration.settings import load_settings

    settings = load_settings()
    source = root / "source" / "landing"
    generate_landing(replace(settings, landing_dir=source), people_per_site=150, months=2,
                     last_period=date(2026, 10, 31), seed=11, sites=settings.sites[-1:])

    def state() -> dict:
        return {"tables": table_checksums(duck_tables(settings.warehouse_url), drop=set()),
                "sha256": hashlib.sha256(Path(settings.warehouse_url).read_bytes()).hexdigest()}

    def c20p5_run() -> dict:
        done = subprocess.run([PYTHON, "-m", "orchestration.cli", "run"], capture_output=True, text=True,
                              cwd=PROJECT_ROOT, timeout=900)
        return {"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr, "after": state()}

    copy_period(source, settings.landing_dir, PERIOD_1)
    first = c20p5_run()  # the last good publication
    assert first["returncode"] == 0 and "publication: 1" in first["stdout"], first["stdout"] + first["stderr"][-3000:]
    copy_period(source, settings.landing_dir, PERIOD_2)
    result = {"build_db": str(settings.build_db_path), "before": state()}
    holder = subprocess.Popen([PYTHON, "-c", HOLD_BUILD_DB, str(settings.build_db_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
    try:
        assert holder.stdout.readline().strip() == "ready"
        result["locked"] = c20p5_run()
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    result["released"] = c20p5_run()
    result["again"] = c20p5_run()
    (root / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
