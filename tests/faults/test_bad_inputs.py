"""Bad inputs (issue 7, part 1): one broken submission per site beside good ones, in one nightly run.

For every case of tests/faults/cases.py: the run completes; the good sites publish; a rejected
submission is withheld (that site-period only) and quarantined byte for byte beside errors.json; the
site's earlier publication is unchanged; every error names the file, the row (or whole file) and the
column, in plain words. Tolerated oddities publish; an incomplete submission is left alone.
"""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from assets.publish import FRESHNESS_STAGE
from tests.faults.cases import (GOOD_SITES, PERIOD_1, PERIOD_2, PERIOD_END_1, PERIOD_END_2, PUBLISHED,
                                PIPELINE_CASES, REJECTED, UNKNOWN_SITE, WAITING, Case)
from tests.faults.conftest import FaultScenario
from tests.faults.support import folder_hashes, rows_of

pytestmark = pytest.mark.slow

CASES = PIPELINE_CASES
REJECTED_CASES = [c for c in CASES if c.outcome == REJECTED]
ACCEPTED_CASES = [c for c in CASES if c.outcome == PUBLISHED]
WITH_HISTORY = [c for c in REJECTED_CASES if c.folder_site is None]
# Words that mean a message was written for a programmer, not for the site analyst fixing the file.
JARGON = ("traceback", "exception", "duckdb", "pandera", "polars", "varchar", "dtype", "not_nullable", "str_matches",
          "isin", "none", "nan", "schemaerror", "invalid input error", "conversion error", "errno", "keyerror")


def ids(cases: list[Case]) -> list[str]:
    return [c.name for c in cases]


def latest_period(tables: dict[str, pd.DataFrame], site: str) -> str | None:
    v = tables["evaluation.indicator_values"]
    v = v[v.site_code == site]
    return None if v.empty else v.period_end.max().strftime("%Y-%m-%d")


def publication_ids(tables: dict[str, pd.DataFrame], site: str, period_end: str,
                    table: str = "evaluation.indicator_values") -> set[int]:
    v = tables[table]
    return set(v[(v.site_code == site) & (v.period_end == pd.Timestamp(period_end))].publication_id)


def test_every_fault_was_planted(faults: FaultScenario) -> None:
    assert not faults.plant_errors


def test_both_runs_complete(faults: FaultScenario) -> None:
    first, second = faults.runs
    assert first.success and second.success, (first.error, second.error)
    assert first.publication == "1" and not first.withheld
    assert first.published == len(GOOD_SITES) + len([c for c in CASES if c.folder_site is None])
    assert second.publication == "2"


def test_only_the_broken_submissions_are_withheld(faults: FaultScenario) -> None:
    withheld = {(w["site_code"], w["period_end"]) for w in faults.runs[1].withheld}
    assert withheld == {(c.site, c.period_end) for c in REJECTED_CASES}
    record = faults.after["evaluation.publications"].iloc[-1]
    assert {(w["site_code"], w["period_end"]) for w in json.loads(record.sites_withheld)} == withheld


@pytest.mark.parametrize("site", GOOD_SITES)
def test_good_sites_publish_both_months(faults: FaultScenario, site: str) -> None:
    assert latest_period(faults.after, site) == PERIOD_END_2
    assert publication_ids(faults.after, site, PERIOD_END_2) == {2}
    assert rows_of(faults.after, "evaluation.indicator_values", site, PERIOD_END_1) == \
        rows_of(faults.before, "evaluation.indicator_values", site, PERIOD_END_1)
    published = json.loads(faults.after["evaluation.publications"].iloc[-1].sites_published)
    assert any(e.startswith(f"{site}:{PERIOD_END_2}") for e in published)


# --- rejected: withheld, quarantined byte for byte, earlier publication kept, errors named ------------------

@pytest.mark.parametrize("case", REJECTED_CASES, ids=ids(REJECTED_CASES))
def test_withheld_with_its_reason(faults: FaultScenario, case: Case) -> None:
    [withheld] = [w for w in faults.runs[1].withheld if w["site_code"] == case.site]
    assert withheld["period_end"] == case.period_end
    _, report = faults.errors_report(case)
    assert withheld["reason"].startswith("submission quarantined: ")
    assert any(e["where"] + ": " in withheld["reason"] for e in report["errors"])  # names file, row, column
    if case.period == PERIOD_2 and case.folder_site is None:
        assert latest_period(faults.after, case.site) == PERIOD_END_1  # month 2 not published
    if case.period == PERIOD_1:  # a broken re-delivery of month 1: month 2 still publishes
        assert latest_period(faults.after, case.site) == PERIOD_END_2


def test_withheld_period_is_not_republished(faults: FaultScenario) -> None:
    """A rejected re-delivery of a published month withholds that month: its rows keep publication 1 and
    it is not listed as published. (At 01f1501 assets/publish.py compared the withheld '2026-09-30' with
    str(Timestamp) = '2026-09-30 00:00:00', so the month was republished under the new id.)"""
    site = "redelivery_broken"
    assert publication_ids(faults.after, site, PERIOD_END_1) == {1}
    published = json.loads(faults.after["evaluation.publications"].iloc[-1].sites_published)
    assert not any(e.startswith(f"{site}:{PERIOD_END_1}") for e in published)


@pytest.mark.parametrize("case", REJECTED_CASES, ids=ids(REJECTED_CASES))
def test_quarantined_byte_for_byte(faults: FaultScenario, case: Case) -> None:
    target, report = faults.errors_report(case)
    assert folder_hashes(target / "submission") == faults.hashes[case.name]
    assert not (faults.settings.landing_dir / "sites" / case.site / case.period).exists()
    assert report["site_code"] == case.site and report["period"] == case.period and report["errors"]


@pytest.mark.parametrize("case", WITH_HISTORY, ids=ids(WITH_HISTORY))
def test_earlier_publication_unchanged(faults: FaultScenario, case: Case) -> None:
    """Month 1 as published by run 1: the same rows, national and in the site's own schema. (Run 2
    republishes the unchanged month-1 rows of accepted submissions under its own id, so ids are left out;
    a rejected re-delivery of month 1 should keep id 1: test_withheld_period_is_not_republished.)"""
    drop = ("publication_id",)
    for table in ("evaluation.indicator_values", "evaluation.inequality_summary",
                  f"site_{case.site}.indicator_values", f"site_{case.site}.inequality_summary"):
        before = rows_of(faults.before, table, case.site, PERIOD_END_1, drop)
        assert before, table
        assert rows_of(faults.after, table, case.site, PERIOD_END_1, drop) == before, table


@pytest.mark.parametrize("case", REJECTED_CASES, ids=ids(REJECTED_CASES))
def test_errors_name_file_row_and_column(faults: FaultScenario, case: Case) -> None:
    _, report = faults.errors_report(case)
    errors = report["errors"]
    for want in faults.expected[case.name]:
        match = [e for e in errors if (e["file"], e["row"], e["column"]) == (want.file, want.row, want.column)]
        assert match, f"no error at {want} in {[(e['where'], e['message']) for e in errors]}"
        assert any(want.words.lower() in e["message"].lower() for e in match), (want, match)
        where = f"{want.file}, " + ("whole file" if want.row is None else f"row {want.row}")
        assert match[0]["where"] == where + (f", column {want.column}" if want.column else "")
    for e in errors:
        assert e["file"] and e["message"] and e["where"].startswith(e["file"]), e
        text = e["message"].lower()
        assert not [w for w in JARGON if re.search(rf"\b{re.escape(w)}\b", text)], e["message"]
    # the same findings are published in data_quality, so the evaluation team sees why
    dq = faults.after["evaluation.data_quality"]
    mine = dq[(dq.site_code == case.site) & (dq.period_end == case.period_end) & (dq.severity == "error")]
    want = faults.expected[case.name][0]
    hit = mine[(mine.file == want.file) & (mine.column.fillna("") == (want.column or ""))]
    assert not hit.empty and (hit.row.isna() if want.row is None else hit.row == want.row).any()


def test_published_messages_repeat_no_identifier(faults: FaultScenario) -> None:
    """data_quality is published: it names rows and columns, never a person id, NHS number or postcode."""
    from checks.schemas import nhs_number_valid
    messages = faults.after["evaluation.data_quality"].message.dropna()
    assert not messages.str.contains(r"P[0-9a-f]{6}[0-9]{8}").any()  # the generator's person ids
    for planted in ("BB11 2DL", "1905-06", "Pnobody00000001"):  # a postcode, a birth month, a person id
        assert not messages.str.contains(planted, regex=False).any(), planted
    assert not [m for m in messages for n in re.findall(r"\b\d{10}\b", m) if nhs_number_valid(n)]


# --- tolerated: published ----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ACCEPTED_CASES, ids=ids(ACCEPTED_CASES))
def test_tolerated_input_publishes(faults: FaultScenario, case: Case) -> None:
    assert case.site not in {w["site_code"] for w in faults.runs[1].withheld}
    assert latest_period(faults.after, case.site) == PERIOD_END_2
    assert publication_ids(faults.after, case.site, PERIOD_END_2) == {2}
    dq = faults.after["evaluation.data_quality"]
    # the input's findings; not the freshness verdict, which the calendar decides (the scenario's last
    # period is 2026-10-31, overdue from 2026-12-05 on whatever the input)
    mine = dq[(dq.site_code == case.site) & (dq.publication_id == 2) & (dq.passed == False)  # noqa: E712
              & (dq.stage != FRESHNESS_STAGE)]
    assert (mine.severity != "error").all(), mine.message.tolist()
    if case.warning:
        [warning] = mine[mine.check_name == case.warning].itertuples()
        assert warning.severity == "warning" and warning.file == "events.csv" and pd.isna(warning.row)
        assert warning.period_end == PERIOD_END_2 and "usual" in warning.message
    else:
        assert mine.empty, mine.message.tolist()


def test_lsoa_2011_codes_are_mapped_not_unknown(faults: FaultScenario) -> None:
    """Nobody who was sent with an LSOA (2011 or 2021) ends up with an unknown deprivation quintile."""
    from tests.faults.support import lsoa21_to_2011
    old = set(lsoa21_to_2011().values())
    with faults.build_db() as con:
        sent = con.execute("""select lsoa_code from raw.patients where site_code = 'lsoa_2011' and period_end = ?""",
                           [PERIOD_END_2]).fetchall()
        lost = con.execute("""select count(*) from intermediate.int_registered_population p
            join raw.patients r
              on r.site_code = p.site_code and r.period_end = p.period_end and r.person_id = p.person_id
            where p.site_code = 'lsoa_2011' and p.period_end = ? and r.lsoa_code is not null
              and p.imd_quintile is null""",
                           [PERIOD_END_2]).fetchone()[0]
    assert sum(code in old for (code,) in sent) >= 3
    assert lost == 0


def test_identical_redelivery_is_skipped(faults: FaultScenario) -> None:
    rows = faults.audit[(faults.audit.site_code == "redelivery_identical") & (faults.audit.period == PERIOD_1)]
    [row] = rows.itertuples()
    assert row.status == "loaded" and row.run_id == faults.runs[0].run_id
    table = "site_redelivery_identical.indicator_values"
    assert rows_of(faults.after, table, "redelivery_identical", PERIOD_END_1) == \
        rows_of(faults.before, table, "redelivery_identical", PERIOD_END_1)


def test_corrected_redelivery_replaces_the_published_month(faults: FaultScenario) -> None:
    site = "redelivery_corrected"
    rows = faults.audit[(faults.audit.site_code == site) & (faults.audit.period == PERIOD_1)]
    assert sorted(rows.status) == ["loaded", "superseded"]
    assert rows[rows.status == "loaded"].run_id.item() == faults.runs[1].run_id
    table = f"site_{site}.indicator_values"
    assert publication_ids(faults.after, site, PERIOD_END_1, table) == {2}
    practice = lambda t: [r for r in rows_of(t, table, site, PERIOD_END_1) if "practice" in r]  # noqa: E731
    assert practice(faults.after) != practice(faults.before)  # the correction is what readers see now
    # the correction only moved people between practices: national cells are as before
    assert rows_of(faults.after, "evaluation.indicator_values", site, PERIOD_END_1) == \
        rows_of(faults.before, "evaluation.indicator_values", site, PERIOD_END_1)
    history = faults.after["evaluation.indicator_values_history"]
    month_1 = history[(history.site_code == site) & (history.period_end == pd.Timestamp(PERIOD_END_1))]
    assert {1, 2} <= set(month_1.publication_id)


# --- incomplete: left alone ----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", [c for c in CASES if c.outcome == WAITING], ids=lambda c: c.name)
def test_incomplete_submission_is_left_alone(faults: FaultScenario, case: Case) -> None:
    folder = faults.settings.landing_dir / "sites" / case.site / case.period
    assert folder_hashes(folder) == faults.hashes[case.name]
    assert not (faults.settings.quarantine_dir / case.site).exists()
    assert case.site not in {w["site_code"] for w in faults.runs[1].withheld}
    assert latest_period(faults.after, case.site) == PERIOD_END_1
    assert faults.audit[(faults.audit.site_code == case.site) & (faults.audit.period == PERIOD_2)].empty


def test_unknown_site_is_quarantined_and_not_published(faults: FaultScenario) -> None:
    assert latest_period(faults.after, UNKNOWN_SITE) is None
    assert UNKNOWN_SITE not in set(faults.after["evaluation.sites"].site_code)
