"""Per-site Great Expectations checks on the indicator marts (checks/expectations.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from checks.expectations import (
    ERROR,
    INDICATOR_VALUES,
    INEQUALITY_SUMMARY,
    MISSING_SITE,
    SUITE_NAMES,
    WARNING,
    SiteResult,
    suite_for_indicator_values,
    suite_for_inequality_summary,
    validate_site_frames,
)

PERIOD = dt.date(2024, 3, 31)
PAIR = "expect_column_pair_values_a_to_be_greater_than_b"


def _indicator_rows(site: str) -> list[dict]:
    """A '%' indicator by sex plus a rate, with CIs that bracket their values."""
    rows = []
    for cell, (num, den) in {"overall": (30, 100), "F": (20, 60), "M": (10, 40)}.items():
        value = 100 * num / den
        rows.append({
            "site_code": site, "period_end": PERIOD, "indicator_id": "SMOKING",
            "breakdown": "overall" if cell == "overall" else "sex", "breakdown_value": cell,
            "numerator": num, "denominator": den, "value": value,
            "lower_ci": value - 5, "upper_ci": value + 5, "unit": "%",
            "target": 25.0, "comparator_value": 28.0,
        })
    rows.append({
        "site_code": site, "period_end": PERIOD, "indicator_id": "ADMISSIONS",
        "breakdown": "overall", "breakdown_value": "overall",
        "numerator": 1500, "denominator": 1000, "value": 150000.0,  # rates may exceed 100
        "lower_ci": None, "upper_ci": None, "unit": "per 100,000",
        "target": None, "comparator_value": None,
    })
    rows.append({  # denominator 0: null value is allowed
        "site_code": site, "period_end": PERIOD, "indicator_id": "SMOKING",
        "breakdown": "core20", "breakdown_value": "core20",
        "numerator": 0, "denominator": 0, "value": None,
        "lower_ci": None, "upper_ci": None, "unit": "%", "target": None, "comparator_value": None,
    })
    return rows


def _summary_rows(site: str) -> list[dict]:
    base = {"site_code": site, "period_end": PERIOD}
    numbers = {
        "core20_value": 35.0, "not_core20_value": 28.0, "absolute_gap": 7.0, "relative_gap": 1.25,
        "sii": 9.0, "sii_lower_ci": 4.0, "sii_upper_ci": 14.0,
        "rii": 1.3, "rii_lower_ci": 1.1, "rii_upper_ci": 1.6,
    }
    return [
        {**base, "indicator_id": "SMOKING", **numbers,
         "spc_variation": "common_cause", "spc_assurance": "inconsistent"},
        {**base, "indicator_id": "ADMISSIONS", **{k: None for k in numbers},  # all-null numerics
         "spc_variation": "insufficient_data", "spc_assurance": "no_target"},
    ]


def _frames(*sites: str) -> dict[str, pd.DataFrame]:
    values = pd.DataFrame([r for s in sites for r in _indicator_rows(s)])
    values = values.astype({"numerator": "int64", "denominator": "int64"})
    summary = pd.DataFrame([r for s in sites for r in _summary_rows(s)])
    return {INDICATOR_VALUES: values, INEQUALITY_SUMMARY: summary}


def _by_site(results: list[SiteResult]) -> dict[str, SiteResult]:
    return {r.site_code: r for r in results}


def _set(frame: pd.DataFrame, site: str, breakdown_value: str, **changes: object) -> None:
    rows = (frame["site_code"] == site) & (frame["breakdown_value"] == breakdown_value)
    for column, value in changes.items():
        frame.loc[rows, column] = value


def test_good_frames_pass_for_every_site() -> None:
    results = validate_site_frames(_frames("RAA", "RBB"), docs_dir=None)

    assert [r.site_code for r in results] == ["RAA", "RBB"]
    for result in results:
        assert result.success, [str(f) for f in result.failures]
        assert result.failures == [] and result.failed == 0
        assert result.evaluated > 20  # both marts' suites ran for the site
        assert result.docs_index is None


def test_a_sites_errors_fail_only_that_site_and_name_the_expectation() -> None:
    frames = _frames("RAA", "RBB", "RCC")
    values = frames[INDICATOR_VALUES]
    _set(values, "RAA", "F", numerator=75)  # 75 of 60 on a '%' row
    _set(values, "RBB", "M", lower_ci=30.0)  # value 25 below its lower CI

    by_site = _by_site(validate_site_frames(frames, docs_dir=None))

    assert not by_site["RAA"].success and not by_site["RBB"].success
    assert by_site["RCC"].success and by_site["RCC"].failed == 0
    [raa] = by_site["RAA"].errors
    assert (raa.expectation_type, raa.columns) == (PAIR, ("denominator", "numerator"))
    assert raa.unexpected_values == ("(60, 75)",)
    [rbb] = by_site["RBB"].errors
    assert (rbb.expectation_type, rbb.columns) == (PAIR, ("value", "lower_ci"))
    assert "value,lower_ci" in str(rbb) and rbb.unexpected_count == 1


def test_warning_is_reported_but_does_not_fail_the_site() -> None:
    frames = _frames("RAA")
    _set(frames[INDICATOR_VALUES], "RAA", "M", value=None)  # null value, denominator 40

    [result] = validate_site_frames(frames, docs_dir=None)

    assert result.success and result.failed == 1
    assert [(f.severity, f.columns) for f in result.failures] == [(WARNING, ("value",))]


def test_rows_without_site_code_are_reported_not_dropped() -> None:
    frames = _frames("RAA")
    frames[INDICATOR_VALUES].loc[0, "site_code"] = None

    by_site = _by_site(validate_site_frames(frames, docs_dir=None))

    assert by_site["RAA"].success
    missing = by_site[MISSING_SITE]
    assert not missing.success
    assert ("expect_column_values_to_not_be_null", ("site_code",)) in {
        (f.expectation_type, f.columns) for f in missing.errors
    }


def test_data_docs_index_is_built_and_names_the_suite(tmp_path: Path) -> None:
    docs_dir = tmp_path / "data_docs"

    results = validate_site_frames(_frames("RAA", "RBB"), docs_dir=docs_dir)

    index = docs_dir / "index.html"
    assert index.is_file()
    assert {r.docs_index for r in results} == {index.resolve()}
    html = index.read_text(encoding="utf-8")
    assert SUITE_NAMES[INDICATOR_VALUES] in html and SUITE_NAMES[INEQUALITY_SUMMARY] in html


def test_every_expectation_documents_its_severity() -> None:
    for suite in (suite_for_indicator_values(), suite_for_inequality_summary()):
        severities = {e.meta["severity"] for e in suite.expectations}
        assert severities <= {ERROR, WARNING} and ERROR in severities


def test_unknown_mart_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown marts"):
        validate_site_frames({"fct_typo": pd.DataFrame()}, docs_dir=None)
