"""Crash during publish (issue 7, part 2): SIGKILL the publishing process at many moments, on both
targets. After every kill the warehouse holds exactly the old or exactly the new publication, and the
next publish completes the work.

Each trial forks a publisher (tests/faults/publisher.py) that calls assets.publish.write_publication
with a small pickled Publication, and kills it: every other trial after a delay spread over 0-150% of
a publish (measured first, uninterrupted), the others 0-5 ms after the publisher entered a given
phase (copy, load, refreshes, commit, checkpoint, fsync, rename, index, grants, done), so that every
phase is hit however fast the machine is at the time. The expected states come from publishing the
same sequence, uninterrupted, into a reference warehouse of the same kind; states are compared by
checksums of every table in every schema (only `published_at` left out: it is the clock).
"""
from __future__ import annotations

import pickle
import random
import time
from collections import Counter
from pathlib import Path

import pytest

from assets.warehouse import publish_duckdb, publish_postgres
from tests.faults.publisher import Zygote
from tests.faults.support import duck_tables, pg_tables, table_checksums
from tests.warehouse.conftest import new_database
from tests.warehouse.factory import make_publication

pytestmark = pytest.mark.slow

TRIALS = 18          # per target (36 kills in all): half at a time, half just after a phase began
# Phases of each publish path (markers written by tests/faults/publisher.py), in order.
PHASES = {"duckdb": ("start", "load", "refresh_latest", "refresh_site_schemas", "duckdb:commit", "duckdb:checkpoint",
                     "duckdb:fsync", "duckdb:rename", "done"),
          "postgresql": ("start", "load", "refresh_latest", "refresh_site_schemas", "pg:index", "pg:grants",
                         "pg:commit", "done")}
SITES = ("aa", "bb", "cc")
CHAIN = TRIALS + 2   # publications prepared: each kill that lands after the commit moves on to the next


def variant(k: int):
    """Publication k of the chain; every third withholds a site-period, to vary what is written."""
    return make_publication(sites=SITES, variant=k, withheld=(("cc", "2026-10-31"),) if k % 3 == 2 else ())


class Warehouse:
    """One target: where the zygote publishes, and how to read its state."""

    def __init__(self, kind: str, where: str, reference: str):
        self.kind, self.where, self.reference = kind, where, reference

    def state(self, where: str | None = None) -> dict[str, str]:
        where = where or self.where
        tables = duck_tables(where) if self.kind == "duckdb" else pg_tables(where)
        return table_checksums(tables, drop={"published_at"})

    def publish_reference(self, pub) -> None:
        if self.kind == "duckdb":
            publish_duckdb(Path(self.reference), pub, retention=0)
        else:
            publish_postgres(self.reference, pub, retention=0)


class ReferenceStates:
    """states[k]: the checksums after publications 0..k, published uninterrupted into the reference
    warehouse (lazily: only as far as the kill trials get)."""

    def __init__(self, warehouse: Warehouse):
        self.warehouse, self.states = warehouse, []

    def __getitem__(self, k: int) -> dict[str, str]:
        while len(self.states) <= k:
            self.warehouse.publish_reference(variant(len(self.states)))
            self.states.append(self.warehouse.state(self.warehouse.reference))
            assert self.states[-1] not in self.states[:-1]
        return self.states[k]


@pytest.fixture(params=["duckdb", "postgresql"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "duckdb":
        yield Warehouse("duckdb", str(tmp_path / "wh" / "evaluation.duckdb"),
                        str(tmp_path / "ref" / "evaluation.duckdb"))
        return
    server = request.getfixturevalue("pg_server")
    with new_database(server) as db, new_database(server) as ref:
        yield Warehouse("postgresql", db.publisher_url, ref.publisher_url)


def test_sigkill_during_publish_leaves_old_or_new(warehouse: Warehouse, tmp_path: Path) -> None:
    pickles = []
    for k in range(CHAIN + 1):
        path = tmp_path / f"pub-{k}.pickle"
        path.write_bytes(pickle.dumps(variant(k)))
        pickles.append(path)
    states = ReferenceStates(warehouse)

    zygote = Zygote(tmp_path)
    try:
        # publication 0, then one uninterrupted publish to measure how long a publish takes
        for k in (0, 1):
            trial = zygote.start(warehouse.where, pickles[k])
            assert zygote.finish(trial) == 0, trial.phases()
            assert warehouse.state() == states[k]
        duration = trial.phases()[-1][0] - trial.started
        current, outcomes, killed_in = 1, [], Counter()
        rng = random.Random(7)
        phases = PHASES[warehouse.kind]
        for i in range(TRIALS):
            trial = zygote.start(warehouse.where, pickles[current + 1])
            if i % 2:  # a delay spread evenly over 0-150% of a publish, jittered
                delay = duration * (i + rng.random()) / TRIALS * 1.5
                zygote.finish(trial, kill_after=delay)
            else:      # 0-5 ms after a phase began: each phase in turn, whatever the machine's speed
                delay = rng.uniform(0, 0.005)
                zygote.finish(trial, kill_after=delay, phase=phases[(i // 2) % len(phases)])
            phase = trial.last_phase()
            killed_in[phase.split(" ")[0]] += 1
            got = warehouse.state()
            if got == states[current]:
                outcomes.append("old")
            elif got == states[current + 1]:
                outcomes.append("new")
                current += 1
            else:
                changed = sorted(t for t in got if got.get(t) != states[current].get(t))
                pytest.fail(f"trial {i}: killed after {delay:.3f}s in phase {phase!r}, the warehouse is neither "
                            f"publication {current} nor {current + 1}; tables differing from the old: {changed}")
        # the next run completes the work, and (DuckDB) clears the copies the killed publishers left
        trial = zygote.start(warehouse.where, pickles[current + 1])
        assert zygote.finish(trial) == 0, trial.phases()
        assert warehouse.state() == states[current + 1]
        if warehouse.kind == "duckdb":  # no stray copy of the warehouse, nor its WAL, is left
            left = sorted(p.name for p in Path(warehouse.where).parent.iterdir())
            assert left == [".evaluation.duckdb.lock", "evaluation.duckdb"]
    finally:
        zygote.close()
    print(f"{warehouse.kind}: publish takes {duration:.2f}s; outcomes {Counter(outcomes)}; killed in {dict(killed_in)}")
    assert "error" not in killed_in, killed_in
    assert {"old", "new"} <= set(outcomes), outcomes
    assert len([p for p in killed_in if p not in ("done", "not")]) >= 5, killed_in  # many distinct moments


def test_a_killed_duckdb_publisher_leaves_nothing_behind(tmp_path: Path) -> None:
    where = tmp_path / "wh" / "evaluation.duckdb"
    pickles = []
    for k in range(2):
        pickles.append(tmp_path / f"pub-{k}.pickle")
        pickles[-1].write_bytes(pickle.dumps(variant(k)))
    zygote = Zygote(tmp_path)
    try:
        assert zygote.finish(zygote.start(str(where), pickles[0])) == 0
        for _ in range(5):  # kill it in its checkpoint: the copy's WAL is on disk then
            trial = zygote.start(str(where), pickles[1])
            while trial.last_phase() != "duckdb:checkpoint":
                assert not trial.last_phase().startswith(("done", "error")), trial.phases()
                time.sleep(0.002)
            zygote.finish(trial, kill_after=0)
            if list(where.parent.glob("*.tmp.wal")):
                break
        else:
            pytest.skip("no publisher was caught with its copy's WAL on disk")
        assert zygote.finish(zygote.start(str(where), pickles[1])) == 0
    finally:
        zygote.close()
    assert sorted(p.name for p in where.parent.iterdir()) == [".evaluation.duckdb.lock", "evaluation.duckdb"]
