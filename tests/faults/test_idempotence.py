"""Idempotence and replay (issue 7, part 4), by checksums of every table in every schema.

- Replaying last month's landing zone reproduces last month's publication: the fault scenario's run 1
  published month 1 of every site (33 sites); a fresh environment (its own landing zone, work
  directory and warehouse) given the same month-1 landing zone ran the nightly job in the background
  (conftest.py). Both warehouses hold the same rows in every table of every schema: the same inputs
  publish the same content. Only `published_at` and `run_id` differ (when, and by which run); values
  compare at 12 significant digits, like the publisher's own content_hash.
- Running again on the same inputs publishes nothing new: in the environment of the locked-build-
  database trial (tests/faults/locked.py), once the lock is gone, `c20p5 run` publishes, and `c20p5
  run` again reports "unchanged" and leaves the warehouse file byte for byte as it was.
"""
from __future__ import annotations

import json

import pytest

from tests.faults.cases import GOOD_SITES, REGISTERED
from tests.faults.conftest import FaultScenario
from tests.faults.support import duck_tables, table_checksums

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def replay(faults: FaultScenario) -> dict:
    run = faults.replay.wait()
    return {"run": run, "tables": duck_tables(faults.replay.warehouse)}


def test_replay_run_completes(replay: dict) -> None:
    run = replay["run"]
    assert run["success"], run["error"]
    assert run["publication"] == "1" and not run["withheld"]


def test_replaying_last_months_landing_zone_reproduces_its_publication(faults: FaultScenario, replay: dict) -> None:
    original = table_checksums(faults.before)
    replayed = table_checksums(replay["tables"])
    assert sorted(original) == sorted(replayed)  # the same tables in the same schemas
    assert len(original) > 6 * len(REGISTERED)  # evaluation and a schema per site: the comparison covers them all
    differing = sorted(t for t in original if original[t] != replayed[t])
    assert not differing, differing


def test_the_publication_records_the_same_inputs_and_content(faults: FaultScenario, replay: dict) -> None:
    a, b = faults.before["evaluation.publications"].iloc[-1], replay["tables"]["evaluation.publications"].iloc[-1]
    assert a.content_hash == b.content_hash
    mine, theirs = json.loads(a.input_checksums), json.loads(b.input_checksums)
    assert mine == theirs
    assert len(mine) == 1 + len(GOOD_SITES) + len(REGISTERED)  # reference data, each site's month-1 manifest


def test_the_reference_fingerprint_depends_on_content_only(faults: FaultScenario, replay: dict) -> None:
    """The replay read the police.uk feed from its own landing directory: the same bytes, elsewhere.
    (Until the fix, reference_fingerprint() hashed each file's path with its bytes.)"""
    mine, theirs = (root / "reference" / "police" for root in (faults.settings.landing_dir,
                                                                faults.replay.root / "landing"))
    assert mine != theirs and list(mine.glob("*.csv"))
    assert sorted(p.name for p in mine.glob("*.csv")) == sorted(p.name for p in theirs.glob("*.csv"))
    a, b = faults.before["evaluation.publications"].iloc[-1], replay["tables"]["evaluation.publications"].iloc[-1]
    assert json.loads(a.input_checksums)["reference"] == json.loads(b.input_checksums)["reference"]


def test_the_same_inputs_again_publish_nothing_new(locked_run: dict) -> None:
    first, again = locked_run["released"], locked_run["again"]
    assert first["returncode"] == 0 and "publication: 2" in first["stdout"], first["stdout"]
    assert again["returncode"] == 0 and "publication: unchanged" in again["stdout"], again["stdout"]
    assert again["after"]["sha256"] == first["after"]["sha256"]  # the warehouse file was not rewritten
