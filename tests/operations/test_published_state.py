"""The publish writes only a change: what readers see, read back from either warehouse target,
must be recognised as equal to the publication that wrote it, and a change as a change."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from assets.publish import FRESHNESS_STAGE, _publication_state, latest_publications, published_state
from orchestration.partitions import Scope
from orchestration.settings import load_settings
from tests.warehouse.conftest import DuckTarget, Target, pg_db, pg_server, target  # noqa: F401 (fixtures)
from tests.warehouse.factory import PERIODS, make_publication

SCOPE = Scope(tuple(p[:7] for p in PERIODS), ("aa", "bb"))


def with_freshness(pub, passed: dict[str, bool]):
    rows = pd.DataFrame([{"run_id": pub.run_id, "site_code": s, "period_end": PERIODS[-1], "stage": FRESHNESS_STAGE,
                          "check_name": "submission_freshness", "severity": "warning", "passed": ok, "file": None,
                          "row": None, "column": None, "message": "m"} for s, ok in passed.items()])
    pub.data_quality = pd.concat([pub.data_quality, rows], ignore_index=True).astype({"row": "Int64"})
    return pub


def state_of(t: Target, tmp_path: Path) -> dict:
    url = str(t.path) if isinstance(t, DuckTarget) else t.db.publisher_url
    return published_state(load_settings({"C20P5_WAREHOUSE_URL": url, "C20P5_WORK_DIR": str(tmp_path)}), SCOPE)


def test_what_was_published_reads_back_as_unchanged(target: Target, tmp_path: Path) -> None:
    assert state_of(target, tmp_path) == {}
    pub = with_freshness(make_publication(), {"aa": True, "bb": False})
    target.publish(pub)
    assert state_of(target, tmp_path) == _publication_state(pub)


def test_a_changed_site_period_or_verdict_reads_as_a_change(target: Target, tmp_path: Path) -> None:
    target.publish(with_freshness(make_publication(), {"aa": True, "bb": True}))
    now = state_of(target, tmp_path)
    other = with_freshness(make_publication(variant=1), {"aa": True, "bb": False})
    changed = {k for k, v in _publication_state(other).items() if now.get(k) != v}
    assert {("indicator_values", "aa", "2026-09-30"), ("freshness", "bb", "*")} <= changed
    assert ("freshness", "aa", "*") not in changed and ("indicators", "*", "*") not in changed


def test_a_partial_publication_leaves_the_other_sites_state_as_it_was(target: Target, tmp_path: Path) -> None:
    full = with_freshness(make_publication(), {"aa": True, "bb": False})
    target.publish(full)
    partial = with_freshness(make_publication(sites=("aa",), variant=2), {"aa": False})
    target.publish(partial)
    now = state_of(target, tmp_path)
    assert now[("freshness", "bb", "*")] == _publication_state(full)[("freshness", "bb", "*")]
    assert now[("freshness", "aa", "*")] == _publication_state(partial)[("freshness", "aa", "*")]
    assert now[("indicator_values", "bb", "2026-10-31")] == _publication_state(full)[("indicator_values", "bb", "2026-10-31")]


def test_the_latest_publication_of_each_site_period_and_a_keyed_read(target: Target, tmp_path: Path) -> None:
    """What the publish records and compares (assets/changes.py): the publication holding each site-period's
    rows in either warehouse, and the published rows of only the site-periods asked for."""
    url = str(target.path) if isinstance(target, DuckTarget) else target.db.publisher_url
    settings = load_settings({"C20P5_WAREHOUSE_URL": url, "C20P5_WORK_DIR": str(tmp_path)})
    assert latest_publications(settings, ["aa", "bb"]) == {}
    target.publish(with_freshness(make_publication(), {"aa": True, "bb": False}))
    target.publish(with_freshness(make_publication(sites=("aa",), variant=2), {"aa": False}))
    latest = latest_publications(settings, ["aa", "bb"])
    assert latest == {(s, p): 2 if s == "aa" else 1 for s in ("aa", "bb") for p in PERIODS}
    assert latest_publications(settings, ["bb"]) == {("bb", p): 1 for p in PERIODS}
    keyed = published_state(settings, SCOPE, {("aa", PERIODS[0])})
    assert {(s, p) for t, s, p in keyed if t in ("indicator_values", "inequality_summary")} == {("aa", PERIODS[0])}
    assert keyed[("indicator_values", "aa", PERIODS[0])] == state_of(target, tmp_path)[("indicator_values", "aa", PERIODS[0])]
