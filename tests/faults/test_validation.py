"""Every bad-input case at function level, fast: the submission checks in the order the ingest assets
run them (assets/ingest.py: manifest and checksums; per file the header, the load as text, pandera;
then the SQL rules), on each case's planted month-2 submission. This covers the variants that are not
in the end-to-end run (`pipeline=False` in cases.py) and pins every message in a few seconds.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import duckdb
import pytest

from assets.generator import generate_landing
from assets.reference import load_reference
from assets.submissions import (Submission, check_header, discover, load_pending, validate_pending_many,
                                verify_manifest)
from checks.issues import ERROR, Issue
from assets.staging import Staging
from checks.rules import Checked, rule_issues
from checks.schemas import FILE_KINDS
from orchestration.settings import load_settings
from tests.faults.cases import CASES, GOOD_SITES, PERIOD_2, PUBLISHED, REJECTED, Case, Plant
from tests.faults.support import copy_period, env_for, pcn_practices, write_registry

CHECKED = [c for c in CASES if c.period == PERIOD_2 and c.outcome in (REJECTED, PUBLISHED) and not c.warning]


def validate(con: duckdb.DuckDBPyConnection, sub: Submission, settings) -> list[Issue]:
    issues = verify_manifest(sub, settings)
    if any(i.severity == ERROR for i in issues):
        return issues
    staging = Staging(settings.staging_dir)
    for kind in FILE_KINDS:
        found = check_header(sub, kind) or load_pending(con, staging, sub, kind)
        issues += found or validate_pending_many(staging, [sub], kind)[sub.submission_id]
    if not any(i.severity == ERROR for i in issues):
        names = {k: sub.data_file(k).name for k in FILE_KINDS}
        checked = Checked(sub.submission_id, sub.site_code, sub.period_end, names)
        issues += rule_issues(con, staging, [checked])[sub.submission_id]
    return issues


@pytest.fixture(scope="module")
def findings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list, list[Issue]]]:
    root = tmp_path_factory.mktemp("validation")
    sites = [*GOOD_SITES, *(c.name for c in CHECKED if c.folder_site is None)]
    pcns = write_registry(root / "sites.yaml", sites)
    settings = load_settings(env_for(root, root / "sites.yaml"))
    source = root / "source" / "landing"
    generate_landing(replace(settings, landing_dir=source), people_per_site=150, months=1,
                     last_period=date(2026, 10, 31), seed=5,
                     sites=tuple(s for s in settings.sites if s.site_code in sites))
    copy_period(source, settings.landing_dir, PERIOD_2)
    other = pcn_practices()[pcns["good_a"]][0]
    expected = {c.name: c.plant(Plant(settings.landing_dir, source, c.name, other)) for c in CHECKED}
    con = duckdb.connect(str(root / "build.duckdb"))
    load_reference(con, settings)
    by_site = {sub.site_code: validate(con, sub, settings) for sub in discover(settings.landing_dir)}
    con.close()
    return {c.name: (expected[c.name], by_site[c.site]) for c in CHECKED}


@pytest.mark.parametrize("case", CHECKED, ids=[c.name for c in CHECKED])
def test_case_is_named_in_the_sites_words(findings: dict, case: Case) -> None:
    expected, issues = findings[case.name]
    errors = [i for i in issues if i.severity == ERROR]
    if case.outcome == PUBLISHED:
        assert not errors, [i.describe() for i in errors]
        return
    assert errors
    for want in expected:
        match = [i for i in errors if (i.file, i.row, i.column) == (want.file, want.row, want.column)]
        assert match, f"no error at {want}: {[i.describe() for i in errors]}"
        assert any(want.words.lower() in i.message.lower() for i in match), [i.describe() for i in match]


def test_a_batch_boundary_keeps_line_numbers(tmp_path: Path) -> None:
    """pandera runs on batches of the staged text: line numbers stay right past the first batch."""
    import polars as pl

    from assets.generator import write_submission
    from checks.schemas import FILE_COLUMNS
    settings = load_settings(env_for(tmp_path))
    rows = [{"person_id": f"tok{i:05d}", "practice_code": "P81008", "lsoa_code": None, "sex": "F",
             "birth_month": "1970-05", "ethnic_category": "A", "registration_start": "2001-01-01",
             "registration_end": None, "date_of_death": None} for i in range(25)]
    rows[3]["sex"], rows[17]["sex"] = "X", "Q"
    frames = {k: pl.DataFrame(schema={c: pl.Utf8 for c in FILE_COLUMNS[k]}) for k in FILE_KINDS}
    frames["patients"] = pl.DataFrame(rows, schema={c: pl.Utf8 for c in FILE_COLUMNS["patients"]})
    write_submission(settings.landing_dir, "burnley_east", date(2026, 10, 31), frames)
    [sub] = discover(settings.landing_dir)
    con = duckdb.connect()
    staging = Staging(settings.staging_dir)
    assert load_pending(con, staging, sub, "patients") == []
    found = validate_pending_many(staging, [sub], "patients", batch_rows=10)[sub.submission_id]
    assert {(i.row, i.column) for i in found} == {(5, "sex"), (19, "sex")}


def test_submissions_validated_together_get_what_each_gets_alone(tmp_path: Path) -> None:
    """pandera runs once per period over every submission of it in a batch: each submission still gets
    exactly its own failures, with its own lines, as when it is validated alone. A date in November
    is wrong in October's submissions only (dates may not be after the period end)."""
    import polars as pl

    from assets.generator import write_submission
    from checks.schemas import FILE_COLUMNS
    settings = load_settings(env_for(tmp_path))

    def patients(bad: dict[int, tuple[str, str]]) -> pl.DataFrame:
        rows = [{"person_id": f"tok{i:05d}", "practice_code": "P81008", "lsoa_code": None, "sex": "F",
                 "birth_month": "1970-05", "ethnic_category": "A", "registration_start": "2001-01-01",
                 "registration_end": None, "date_of_death": None} for i in range(30)]
        for i, (column, value) in bad.items():
            rows[i][column] = value
        return pl.DataFrame(rows, schema={c: pl.Utf8 for c in FILE_COLUMNS["patients"]})

    plants = {("burnley_east", date(2026, 10, 31)): {2: ("sex", "X"), 9: ("registration_start", "2026-11-15")},
              ("pendle_west", date(2026, 10, 31)): {5: ("sex", "Q"), 6: ("ethnic_category", "7")},
              ("burnley_east", date(2026, 11, 30)): {9: ("registration_start", "2026-11-15"), 20: ("sex", "Z")}}
    for (site, period), bad in plants.items():
        frames = {k: pl.DataFrame(schema={c: pl.Utf8 for c in FILE_COLUMNS[k]}) for k in FILE_KINDS}
        write_submission(settings.landing_dir, site, period, frames | {"patients": patients(bad)})
    subs = discover(settings.landing_dir)
    assert len(subs) == 3
    con = duckdb.connect()
    staging = Staging(settings.staging_dir)
    for sub in subs:
        assert load_pending(con, staging, sub, "patients") == []
    together = validate_pending_many(staging, subs, "patients", batch_rows=40)  # a batch boundary inside one
    for sub in subs:
        alone = validate_pending_many(staging, [sub], "patients")[sub.submission_id]
        assert together[sub.submission_id] == alone
        expected = {(i + 2, column) for i, (column, value) in plants[(sub.site_code, date.fromisoformat(sub.period_end))].items()
                    if not (column == "registration_start" and sub.period_end == "2026-11-30")}
        assert {(i.row, i.column) for i in alone} == expected
