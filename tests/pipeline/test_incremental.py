"""Incremental dbt builds through Dagster: nights that rebuild only the changed periods leave every
period-keyed model equal to one full build of the same landing zone.

Night 1 loads two months for three sites (a full refresh: no earlier build); night 2 adds a month
(rebuilds that month); night 3 re-delivers one site's first month with fewer events (rebuilds from that
month through the latest, for every site); night 4 has nothing new (rebuilds the latest month only).
A fresh work directory then builds the final landing zone in full (twice: the second is asked for, as
`c20p5 run --full-refresh` does), and the two build databases must hold the same rows in every
period-keyed model, to the last bit."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from assets.generator import generate_landing
from assets.incremental import incremental_relations
from assets.marts import DBT_PROJECT
from assets.submissions import sha256_file
from assets.warehouse import connect_warehouse
from orchestration.runner import run_nightly
from tests.pipeline.test_nightly import copy_period, use_env

pytestmark = pytest.mark.slow
PERIODS = ("2026-09", "2026-10", "2026-11")
CORRECTED = ("burnley_east", "2026-09")


def drop_last_events(folder: Path, rows: int) -> None:
    """A re-delivery: the same submission less its last `rows` events, with a manifest to match."""
    path = folder / "events.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-rows]))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["events.csv"].update(rows=len(lines) - 1 - rows, sha256=sha256_file(path))
    manifest["created_at"] = "2026-12-01T09:00:00Z"
    (folder / "manifest.json").write_text(json.dumps(manifest))


def looked_at(build_db: Path) -> dict[str, dict[tuple[str, str], str]]:
    """Per consumer of the marts (GX, the publish), what it has recorded of each site-period."""
    con = duckdb.connect(str(build_db), read_only=True)
    try:
        rows = con.execute("select consumer, site_code, period_end, cast(recorded_at as varchar) from audit.mart_seen")
        out: dict[str, dict] = {}
        for consumer, site, period, at in rows.fetchall():
            out.setdefault(consumer, {})[(site, period)] = at
        return out
    finally:
        con.close()


def newly(before: dict, after: dict) -> dict[str, set[tuple[str, str]]]:
    """The site-periods each consumer looked at (and passed) between two records."""
    return {c: {k for k, at in seen.items() if before.get(c, {}).get(k) != at} for c, seen in after.items()}


def builds(build_db: Path) -> list[tuple]:
    con = duckdb.connect(str(build_db), read_only=True)
    try:
        return con.execute("""select cast(rebuild_from as varchar), reason, finished_at is not null
                              from audit.dbt_builds order by build_id""").fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("incremental")
    with pytest.MonkeyPatch.context() as mp:
        settings = use_env(mp, root / "nightly")
        source = root / "source" / "landing"
        generate_landing(replace(settings, landing_dir=source), people_per_site=500, months=3,
                         last_period=date(2026, 11, 30), seed=5)
        outcomes, seen = [], []

        def night() -> None:
            outcomes.append(run_nightly())
            seen.append(looked_at(settings.build_db_path))
        for period in PERIODS[:2]:
            copy_period(source, settings.landing_dir, period)
        night()
        copy_period(source, settings.landing_dir, PERIODS[2])
        night()
        drop_last_events(settings.landing_dir / "sites" / CORRECTED[0] / CORRECTED[1], rows=400)
        night()
        night()
        full = use_env(mp, root / "full")
        shutil.copytree(settings.landing_dir, full.landing_dir)
        outcomes.append(run_nightly())
        outcomes.append(run_nightly(full_refresh=True))  # `c20p5 run --full-refresh`
    assert all(o.success for o in outcomes), [o.describe() for o in outcomes]
    yield settings, full, outcomes, seen


def test_each_night_rebuilds_from_the_earliest_changed_period(nights) -> None:
    nightly, full, _, _ = nights
    assert builds(nightly.build_db_path) == [
        (None, "no earlier build", True),
        ("2026-11-30", "the run's first period", True),
        ("2026-09-30", "the run's first period", True),  # the re-delivery is due, so the run starts there
        ("2026-11-30", "the run's first period", True),
    ]
    assert builds(full.build_db_path) == [(None, "no earlier build", True), (None, "asked for", True)]


def test_incremental_models_equal_one_full_build(nights) -> None:
    nightly, full, _, _ = nights
    relations = incremental_relations(json.loads(DBT_PROJECT.manifest_path.read_text()))
    assert len(relations) > 25 and ("marts", "fct_indicator_values") in relations
    relations.append(("marts", "int_inequality_statistics"))  # a table keeping its earlier periods' rows
    con = duckdb.connect()
    try:
        con.execute(f"attach '{nightly.build_db_path}' as nightly (read_only)")
        con.execute(f"attach '{full.build_db_path}' as full_build (read_only)")
        for schema, table in relations:
            a, b = f'nightly."{schema}"."{table}"', f'full_build."{schema}"."{table}"'
            n = con.execute(f"select count(*) from {b}").fetchone()[0]
            extra = con.execute(f"select count(*) from (select * from {a} except all select * from {b})").fetchone()[0]
            lost = con.execute(f"select count(*) from (select * from {b} except all select * from {a})").fetchone()[0]
            assert (extra, lost) == (0, 0), f"{schema}.{table}: {extra} rows only incremental, {lost} only full of {n}"
            assert n > 0, f"{schema}.{table} is empty"
        periods = con.execute(f"""select count(distinct period_end) from nightly."{relations[0][0]}"."{relations[0][1]}" """)
        assert periods.fetchone()[0] == 3
    finally:
        con.close()


def test_only_full_refreshes_run_the_dbt_unit_tests(nights) -> None:
    """An incremental build runs the code of the last good build, whose unit tests passed."""
    nightly, full, _, _ = nights
    def unit_tests(settings) -> int:
        latest = max((settings.work_dir / "dbt").glob("vars-*/run_results.json"), key=lambda p: p.stat().st_mtime)
        return sum(r["unique_id"].startswith("unit_test.") for r in json.loads(latest.read_text())["results"])
    assert unit_tests(nightly) == 0 and unit_tests(full) > 10


def test_the_correction_reached_the_models(nights) -> None:
    """The re-delivered month really changed (so the equality above is not of two stale copies)."""
    nightly, _, _, _ = nights
    con = duckdb.connect(str(nightly.build_db_path), read_only=True)
    try:
        site, period = CORRECTED
        raw = con.execute("select count(*) from raw.events where site_code = ? and period_end = cast(? as date)",
                          [site, f"{period}-30"]).fetchone()[0]
        original = sum(1 for _ in open(nightly.landing_dir.parent.parent / "source" / "landing" / "sites" / site
                                       / period / "events.csv")) - 1
        assert raw == original - 400
    finally:
        con.close()


SITES = ("lsc", "blackpool_central", "burnley_east")
CONSUMERS = ("great_expectations", "publish")


def latest_rows(warehouse: Path) -> dict[str, pd.DataFrame]:
    """What readers see, less the publication ids (which differ by how the rows got there)."""
    con = connect_warehouse(warehouse)
    try:
        return {t: con.execute(f"select * exclude (publication_id) from evaluation.{t} order by all").df()
                for t in ("indicator_values", "inequality_summary")}
    finally:
        con.close()


def test_checks_and_publish_look_only_at_site_periods_whose_rows_changed(nights) -> None:
    _, _, outcomes, seen = nights
    night1, night2, night3, night4 = (newly(a, b) for a, b in zip([{}] + seen, seen))
    first = {(s, p) for s in SITES for p in ("2026-09-30", "2026-10-31")}
    assert all(night1[c] == first for c in CONSUMERS)
    # a new month changes only that month's rows: the earlier months are neither validated nor compared
    assert all(night2[c] == {(s, "2026-11-30") for s in SITES} for c in CONSUMERS)
    # the corrected month is looked at again, and everything else its change reached (the all-sites
    # comparators of that month, the site's trends after it), but not every site-period
    for c in CONSUMERS:
        assert ("burnley_east", "2026-09-30") in night3[c] and night3[c] != first | {(s, "2026-11-30") for s in SITES}
    # nothing new: the latest month is rebuilt, its rows come out the same, nothing is looked at again
    assert night4 == {c: set() for c in CONSUMERS}
    # the full builds: the first publishes everything, the asked-for full refresh finds nothing changed
    assert [o.publication for o in outcomes] == ["1", "2", "3", "unchanged", "1", "unchanged"]


def test_the_incremental_warehouse_shows_what_one_full_build_publishes(nights) -> None:
    nightly, full, _, _ = nights
    mine, theirs = latest_rows(Path(nightly.warehouse_url)), latest_rows(Path(full.warehouse_url))
    for table, frame in theirs.items():
        assert len(frame) > 100
        pd.testing.assert_frame_equal(mine[table], frame, obj=table)
