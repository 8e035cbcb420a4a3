"""Change detection on the marts (assets/changes.py) and the Great Expectations check that uses it
(checks/asset_checks.py validate_changed_marts), on a real DuckDB and real GX suites."""
from __future__ import annotations

import datetime as dt

import duckdb
import pandas as pd
import pytest

from assets.changes import mart_digests, remember, unseen
from checks.asset_checks import validate_changed_marts
from checks.expectations import INDICATOR_VALUES, INEQUALITY_SUMMARY
from tests.unit.test_expectations import _frames

PERIODS = (dt.date(2024, 2, 29), dt.date(2024, 3, 31))


def marts(sites: tuple[str, ...] = ("aa", "bb")) -> dict[str, pd.DataFrame]:
    """Valid marts for two sites and two periods (the GX tests' rows, once per period)."""
    frames = {m: [] for m in (INDICATOR_VALUES, INEQUALITY_SUMMARY)}
    for period in PERIODS:
        for mart, frame in _frames(*sites).items():
            frames[mart].append(frame.assign(period_end=period))
    return {m: pd.concat(f, ignore_index=True) for m, f in frames.items()}


@pytest.fixture
def con():
    con = duckdb.connect()
    con.execute("create schema marts; create schema audit")
    yield con
    con.close()


def load(con: duckdb.DuckDBPyConnection, frames: dict[str, pd.DataFrame]) -> None:
    for mart, frame in frames.items():
        con.register("_f", frame.reset_index(drop=True).copy(deep=True))
        con.execute(f"create or replace table marts.{mart} as select * from _f")
        con.unregister("_f")


def test_digests_follow_the_rows_not_their_order(con) -> None:
    frames = marts()
    load(con, frames)
    before = mart_digests(con, ["aa", "bb"])
    assert sorted(before) == [(s, str(p)) for s in ("aa", "bb") for p in PERIODS]
    load(con, {m: f.iloc[::-1] for m, f in frames.items()})
    assert mart_digests(con, ["aa", "bb"]) == before
    changed = {m: f.copy() for m, f in frames.items()}
    values = changed[INDICATOR_VALUES]
    values.loc[(values.site_code == "aa") & (values.period_end == PERIODS[1]) & (values.breakdown_value == "F"),
               "upper_ci"] += 1e-9
    load(con, changed)
    after = mart_digests(con, ["aa", "bb"])
    assert {k for k in before if after[k] != before[k]} == {("aa", str(PERIODS[1]))}
    doubled = {**frames, INEQUALITY_SUMMARY: pd.concat([frames[INEQUALITY_SUMMARY],
                                                        frames[INEQUALITY_SUMMARY].iloc[[0]]])}
    load(con, doubled)  # one duplicated summary row: a different site-period digest
    assert {k for k, d in mart_digests(con, ["aa", "bb"]).items() if d != before[k]} == {("aa", str(PERIODS[0]))}
    assert set(mart_digests(con, ["bb"])) == {("bb", str(p)) for p in PERIODS}


def test_unseen_is_what_differs_from_the_record(con) -> None:
    expected = {("aa", "2024-02-29"): "x", ("aa", "2024-03-31"): "y"}
    assert unseen(con, "c", expected) == set(expected)
    remember(con, "c", {("aa", "2024-02-29"): "x"})
    assert unseen(con, "c", expected) == {("aa", "2024-03-31")}
    assert unseen(con, "other", expected) == set(expected)  # each consumer has its own record
    remember(con, "c", {("aa", "2024-02-29"): "x2"})  # replaced, not added
    assert unseen(con, "c", expected) == set(expected)
    assert con.execute("select count(*) from audit.mart_seen").fetchone()[0] == 1


def test_only_changed_or_failing_site_periods_are_validated_again(con) -> None:
    frames = marts()
    bad = frames[INDICATOR_VALUES]
    bad.loc[(bad.site_code == "bb") & (bad.period_end == PERIODS[0]) & (bad.breakdown_value == "F"), "value"] = 140.0
    load(con, frames)
    first = validate_changed_marts(con, ["aa", "bb"], None)
    assert first.checked == {(s, str(p)) for s in ("aa", "bb") for p in PERIODS}
    assert {r.site_code: r.success for r in first.results} == {"aa": True, "bb": False}

    second = validate_changed_marts(con, ["aa", "bb"], None)  # nothing changed
    assert second.carried == ["aa"]  # passed before, unchanged: not read again
    assert second.checked == {("bb", str(p)) for p in PERIODS}  # a failure is never carried over
    assert {r.site_code: r.success for r in second.results} == {"bb": False}

    fixed = marts()
    fixed[INDICATOR_VALUES].loc[(fixed[INDICATOR_VALUES].site_code == "aa")
                                & (fixed[INDICATOR_VALUES].period_end == PERIODS[1]), "comparator_value"] = 29.0
    load(con, fixed)  # bb corrected, and one of aa's periods changed
    third = validate_changed_marts(con, ["aa", "bb"], None)
    assert third.checked == {("aa", str(PERIODS[1])), ("bb", str(PERIODS[0])), ("bb", str(PERIODS[1]))}
    assert all(r.success for r in third.results) and third.carried == []
    assert validate_changed_marts(con, ["aa", "bb"], None).checked == set()


def test_a_site_that_breaks_in_a_new_period_fails_as_a_whole(con) -> None:
    frames = marts(("aa",))
    load(con, {m: f[f.period_end == PERIODS[0]] for m, f in frames.items()})
    assert all(r.success for r in validate_changed_marts(con, ["aa"], None).results)
    broken = frames[INDICATOR_VALUES]
    broken.loc[(broken.period_end == PERIODS[1]) & (broken.breakdown_value == "M"), "numerator"] = -1
    load(con, frames)
    verdicts = validate_changed_marts(con, ["aa"], None)
    assert verdicts.checked == {("aa", str(PERIODS[1]))}
    [result] = verdicts.results
    assert not result.success and any("numerator" in str(e) for e in result.errors)
