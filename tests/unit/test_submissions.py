"""Manifest, header, schema and rule checks on small hand-made submissions: every error names
the file, the row (or whole file) and the column."""
import json
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pytest

from assets.generator import write_submission
from assets.reference import load_reference
from assets.submissions import (check_header, discover, load_pending, quarantine, sha256_file,
                                validate_pending_many, verify_manifest)
from assets.staging import Staging
from checks.rules import Checked, rule_issues
from checks.schemas import FILE_COLUMNS, FILE_KINDS
from orchestration.settings import Settings

PERIOD = date(2026, 10, 31)
PRACTICE = "P81008"  # a real Burnley East practice


def _patients(rows: list[dict]) -> pl.DataFrame:
    base = {"person_id": "tok0001", "practice_code": PRACTICE, "lsoa_code": "E01024873", "sex": "F",
            "birth_month": "1970-05", "ethnic_category": "A", "registration_start": "2001-01-01",
            "registration_end": None, "date_of_death": None}
    return pl.DataFrame([base | r for r in rows], schema={c: pl.Utf8 for c in FILE_COLUMNS["patients"]})


def _submission(settings: Settings, patients: pl.DataFrame, events: list[dict] | None = None,
                site: str = "burnley_east") -> Path:
    frames = {k: pl.DataFrame(schema={c: pl.Utf8 for c in FILE_COLUMNS[k]}) for k in FILE_KINDS}
    frames["patients"] = patients
    if events:
        frames["events"] = pl.DataFrame(events, schema={c: pl.Utf8 for c in FILE_COLUMNS["events"]})
    return write_submission(settings.landing_dir, site, PERIOD, frames)


@pytest.fixture(scope="module")
def ref_con(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    from orchestration.settings import load_settings
    root = tmp_path_factory.mktemp("ref")
    con = duckdb.connect(str(root / "build.duckdb"))
    load_reference(con, load_settings({"C20P5_LANDING_DIR": str(root / "landing")}))
    return con


def test_good_submission_verifies(isolated_settings: Settings) -> None:
    _submission(isolated_settings, _patients([{}]))
    [sub] = discover(isolated_settings.landing_dir)
    assert (sub.site_code, sub.period, sub.period_end) == ("burnley_east", "2026-10", "2026-10-31")
    assert verify_manifest(sub, isolated_settings) == []


def _rewrite_manifest(folder: Path, **changes) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(changes)
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("change, expected", [
    ({"site_code": "nowhere"}, ("manifest.json", "site_code", "not a site in the registry")),
    ({"period_end": "2026-10-30"}, ("manifest.json", "period_end", "last day of the month")),
    ({"spec_version": "0.9"}, ("manifest.json", "spec_version", "not supported")),
])
def test_manifest_fields(isolated_settings: Settings, change: dict, expected: tuple) -> None:
    folder = _submission(isolated_settings, _patients([{}]))
    _rewrite_manifest(folder, **change)
    [issue] = verify_manifest(discover(isolated_settings.landing_dir)[0], isolated_settings)
    assert (issue.file, issue.column) == expected[:2] and expected[2] in issue.message


def test_checksum_and_row_count_mismatch_rejected_before_parsing(isolated_settings: Settings) -> None:
    folder = _submission(isolated_settings, _patients([{}, {"person_id": "tok0002"}]))
    with (folder / "patients.csv").open("a") as f:
        f.write("tok0003,P81008,,F,1970-05,A,2001-01-01,,\n")
    [issue] = verify_manifest(discover(isolated_settings.landing_dir)[0], isolated_settings)
    assert issue.file == "patients.csv" and issue.row is None and "checksum" in issue.message
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["patients.csv"]["sha256"] = sha256_file(folder / "patients.csv")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    [issue] = verify_manifest(discover(isolated_settings.landing_dir)[0], isolated_settings)
    assert "has 3 data rows but the manifest says 2" in issue.message and issue.where == "patients.csv, whole file"


def test_missing_file(isolated_settings: Settings) -> None:
    folder = _submission(isolated_settings, _patients([{}]))
    (folder / "mh_contacts.csv").unlink()
    [issue] = verify_manifest(discover(isolated_settings.landing_dir)[0], isolated_settings)
    assert issue.file == "mh_contacts.csv" and "missing" in issue.message


@pytest.mark.parametrize("header, check, column", [
    ("person_id;practice_code;lsoa_code", "delimiter", None),
    ("person_id,practice_code,lsoa_code,sex,birth_month,ethnic_category,registration_start,registration_end",
     "missing_column", "date_of_death"),
    (",".join(FILE_COLUMNS["patients"]) + ",nhs_number", "identifier_column", "nhs_number"),
    (",".join(FILE_COLUMNS["patients"]) + ",favourite_colour", "unexpected_column", "favourite_colour"),
])
def test_header_problems_are_named(isolated_settings: Settings, header: str, check: str, column: str | None) -> None:
    folder = _submission(isolated_settings, _patients([{}]))
    (folder / "patients.csv").write_text(header + "\n")
    issues = check_header(discover(isolated_settings.landing_dir)[0], "patients")
    assert any(i.check == check and i.column == column and i.row == 1 for i in issues), issues


def test_byte_order_mark_is_named(isolated_settings: Settings) -> None:
    folder = _submission(isolated_settings, _patients([{}]))
    path = folder / "patients.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    [issue] = check_header(discover(isolated_settings.landing_dir)[0], "patients")
    assert issue.check == "byte_order_mark"


def test_schema_errors_name_line_and_column(isolated_settings: Settings, ref_con: duckdb.DuckDBPyConnection) -> None:
    rows = [{"person_id": f"tok{i:04d}"} for i in range(5)]
    rows[2] |= {"sex": "X"}
    rows[4] |= {"birth_month": "2027-01", "practice_code": "p81008"}
    _submission(isolated_settings, _patients(rows))
    sub = discover(isolated_settings.landing_dir)[0]
    staging = Staging(isolated_settings.staging_dir)
    assert load_pending(ref_con, staging, sub, "patients") == []
    found = {(i.row, i.column) for i in validate_pending_many(staging, [sub], "patients")[sub.submission_id]}
    assert found == {(4, "sex"), (6, "birth_month"), (6, "practice_code")}


def test_truncated_last_line_is_a_parse_error(isolated_settings: Settings, ref_con: duckdb.DuckDBPyConnection) -> None:
    folder = _submission(isolated_settings, _patients([{}, {"person_id": "tok0002"}]))
    path = folder / "patients.csv"
    path.write_text(path.read_text().rstrip("\n").rsplit(",", 4)[0] + "\n")
    staging, sub = Staging(isolated_settings.staging_dir), discover(isolated_settings.landing_dir)[0]
    [issue] = load_pending(ref_con, staging, sub, "patients")
    assert issue.check == "csv_parse" and issue.file == "patients.csv"
    assert [p for p in staging.root.rglob("*") if p.is_file()] == []  # no staged file, whole or partial


def test_rules_across_rows_and_files(isolated_settings: Settings, ref_con: duckdb.DuckDBPyConnection) -> None:
    patients = _patients([{"person_id": "tok0001"}, {"person_id": "tok0001"},
                          {"person_id": "tok0003", "practice_code": "Z99999"},
                          {"person_id": "tok0004", "practice_code": "A82003"},
                          {"person_id": "tok0005", "lsoa_code": "E01999999"},
                          {"person_id": "tok0006", "lsoa_code": "E01011973"}])  # a 2011 code merged into E01035188: mapped, fine
    events = [{"person_id": "ghost", "event_date": "2026-01-01", "code": "38341003", "value": None}]
    _submission(isolated_settings, patients, events)
    sub = discover(isolated_settings.landing_dir)[0]
    staging = Staging(isolated_settings.staging_dir)
    for kind in FILE_KINDS:
        assert load_pending(ref_con, staging, sub, kind) == []
    issues = rule_issues(ref_con, staging, [Checked(sub.submission_id, sub.site_code, sub.period_end, {})])[sub.submission_id]
    got = {(i.check, i.file, i.row, i.column) for i in issues}
    assert got == {
        ("duplicate_person", "patients.csv", 2, "person_id"), ("duplicate_person", "patients.csv", 3, "person_id"),
        ("unknown_practice", "patients.csv", 4, "practice_code"),
        ("practice_outside_site", "patients.csv", 5, "practice_code"),
        ("unknown_lsoa", "patients.csv", 6, "lsoa_code"),
        ("unknown_person", "events.csv", 2, "person_id"),
    }


def test_quarantine_moves_byte_for_byte(isolated_settings: Settings) -> None:
    folder = _submission(isolated_settings, _patients([{}]))
    before = {p.name: sha256_file(p) for p in folder.iterdir()}
    sub = discover(isolated_settings.landing_dir)[0]
    issues = verify_manifest(sub, isolated_settings)
    target = quarantine(sub, issues, isolated_settings)
    assert not folder.exists()
    assert {p.name: sha256_file(p) for p in (target / "submission").iterdir()} == before
    assert json.loads((target / "errors.json").read_text())["submission_id"] == sub.submission_id
