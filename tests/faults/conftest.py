"""Fixtures of the fault suite: the shared fault scenario, the replay, the locked build database, and
the throwaway PostgreSQL cluster of tests/warehouse.

The slow parts start together with the session, as subprocesses, and the tests that need them are
moved to the end of tests/faults, so that everything else runs meanwhile:

- the scenario (tests/faults/scenario.py): a site registry with one PCN-based site per end-to-end
  fault case plus two good sites (real PCN codes), 150 people a site and two months generated here;
  run 1 publishes month 1; month 2 arrives with each fault site's submission broken in its own way
  (cases.py); run 2. Read by `faults` (test_bad_inputs, test_idempotence);
- the replay: a fresh environment given the same month-1 landing zone runs once (`faults.replay`);
- the locked run (tests/faults/locked.py): `c20p5 run` while another process holds the build
  database, then twice more once it lets go (`locked_run`; test_disk_and_locks, test_idempotence).
The HTML report pages are stubbed in these runs (`support.quick_report_pages`, see docs/reliability.md).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pandas as pd
import pytest

from tests.faults.cases import GOOD_SITES, PERIOD_1, REGISTERED, Case, Expect
from tests.faults.support import PYTHON, copy_period, duck_tables, env_for, subprocess_env, write_registry
from tests.warehouse.conftest import pg_server  # noqa: F401  (the throwaway cluster, reused)

PEOPLE_PER_SITE = 150
SEED = 11
PROJECT_ROOT = Path(__file__).parents[2]
HERE = Path(__file__).parent
LOCK_TIMEOUT_SECONDS = "2"  # how long a step waits for the locked build database (C20P5_LOCK_TIMEOUT_SECONDS)

REPLAY_SCRIPT = """
import hashlib, json, sys
import assets.reports
from orchestration.runner import run_nightly
from orchestration.settings import load_settings
from tests.faults.support import quick_report_pages
assets.reports.render_pages = quick_report_pages
settings, o = load_settings(), run_nightly()
json.dump({"success": o.success, "publication": o.publication, "error": o.error, "withheld": o.withheld},
          open(sys.argv[1], "w"))
"""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that read the background work go last within tests/faults: it runs meanwhile."""
    positions = [i for i, item in enumerate(items) if Path(str(item.fspath)).is_relative_to(HERE)]
    mine = sorted((items[i] for i in positions),
                  key=lambda item: bool({"faults", "locked_run"} & set(item.fixturenames)))
    for i, item in zip(positions, mine):
        items[i] = item


@dataclass
class Background:
    """A subprocess doing slow work in its own environment; its result file when it is done."""
    root: Path
    proc: subprocess.Popen
    result_file: Path
    log: Path

    @classmethod
    def start(cls, root: Path, args: list[str], env: dict[str, str]) -> Background:
        log = root / f"{root.name}.log"
        with log.open("w") as out:
            proc = subprocess.Popen([PYTHON, *args], stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT,
                                    env=subprocess_env(env), start_new_session=True)
        return cls(root, proc, root / "result.json", log)

    def wait(self, timeout: float = 1200) -> dict:
        self.proc.wait(timeout=timeout)
        assert self.proc.returncode == 0, self.log.read_text()[-4000:]
        return json.loads(self.result_file.read_text())

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse" / "evaluation.duckdb"

    def stop(self) -> None:
        """Kill it and whatever it started (its own process group, led by its pid) if still running."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@dataclass
class Jobs:
    scenario: Background | None = None
    replay: Background | None = None
    locked: Background | None = None
    scenario_root: Path | None = None
    pcns: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="session", autouse=True)
def background(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jobs]:
    items = [item for item in request.session.items if Path(str(item.fspath)).is_relative_to(HERE)]
    jobs = Jobs()
    try:
        if any("locked_run" in item.fixturenames for item in items):
            root = tmp_path_factory.mktemp("locked")
            jobs.locked = Background.start(root, ["-m", "tests.faults.locked", str(root)],
                                           env_for(root) | {"C20P5_LOCK_TIMEOUT_SECONDS": LOCK_TIMEOUT_SECONDS})
        if any("faults" in item.fixturenames for item in items):
            start_scenario(tmp_path_factory.mktemp("faults"), jobs)
        yield jobs
    finally:
        for job in (jobs.scenario, jobs.replay, jobs.locked):
            if job:
                job.stop()


def start_scenario(root: Path, jobs: Jobs) -> None:
    import orchestration.definitions  # noqa: F401  (dbt parse, if needed, before two processes race for it)
    from assets.generator import generate_landing
    from orchestration.settings import load_settings
    sites_file = root / "sites.yaml"
    jobs.pcns = write_registry(sites_file, [*GOOD_SITES, *REGISTERED], need_two_practices={"redelivery_corrected"})
    (root / "pcns.json").write_text(json.dumps(jobs.pcns))
    settings = load_settings(env_for(root, sites_file))
    source = root / "source" / "landing"
    generate_landing(replace(settings, landing_dir=source), people_per_site=PEOPLE_PER_SITE, months=2,
                     last_period=date(2026, 10, 31), seed=SEED)
    jobs.scenario_root = root
    jobs.scenario = Background.start(root, ["-m", "tests.faults.scenario", str(root)], env_for(root, sites_file))
    replay = root / "replay"
    copy_period(source, replay / "landing", PERIOD_1)
    jobs.replay = Background.start(replay, ["-c", REPLAY_SCRIPT, str(replay / "result.json")],
                                   env_for(replay, sites_file))


@dataclass
class FaultScenario:
    root: Path
    source: Path
    settings: object
    pcns: dict[str, str]
    runs: list                                 # the two runs' outcomes (RunOutcome fields)
    before: dict[str, pd.DataFrame]            # the warehouse after run 1
    after: dict[str, pd.DataFrame]             # ... and after run 2
    expected: dict[str, list[Expect]]
    hashes: dict[str, dict[str, str]]          # the planted folders, just before run 2
    audit: pd.DataFrame
    plant_errors: dict[str, str]
    replay: Background

    def build_db(self) -> duckdb.DuckDBPyConnection:
        return duckdb.connect(str(self.settings.build_db_path), read_only=True)

    def errors_report(self, case: Case) -> tuple[Path, dict]:
        """The quarantined folder of a case and its errors.json."""
        targets = sorted((self.settings.quarantine_dir / case.site).glob(f"{case.period}__*"))
        assert len(targets) == 1, f"{case.name}: expected one quarantined submission, found {targets}"
        return targets[0], json.loads((targets[0] / "errors.json").read_text())


@pytest.fixture(scope="session")
def faults(background: Jobs) -> FaultScenario:
    from orchestration.settings import load_settings
    root = background.scenario_root
    result = background.scenario.wait()
    settings = load_settings(env_for(root, root / "sites.yaml"))
    with duckdb.connect(str(settings.build_db_path), read_only=True) as con:
        audit = con.execute("select * from audit.submissions").df()
    return FaultScenario(
        root, root / "source" / "landing", settings, background.pcns,
        runs=[SimpleNamespace(**r) for r in result["runs"]],
        before=duck_tables(root / "before.duckdb"), after=duck_tables(settings.warehouse_url),
        expected={k: [Expect(**e) for e in v] for k, v in result["expected"].items()},
        hashes=result["hashes"], audit=audit, plant_errors=result["plant_errors"], replay=background.replay)


@pytest.fixture(scope="session")
def locked_run(background: Jobs) -> dict:
    return background.locked.wait()

