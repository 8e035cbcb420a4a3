"""Disclosure control and the identifier gate (SPEC §9): the one rule applied before any warehouse.

Counts 1-7 are suppressed (null, suppressed = true); other counts are rounded to the nearest 5;
a value and its confidence interval are null wherever the numerator or denominator is suppressed.
Values and intervals are computed upstream from unrounded counts and are not recomputed here.

The all-sites comparator of a cell is a value too: null on a suppressed row, and null wherever it
would itself disclose (`comparator_disclosive`: combined counts of 1-7, or fewer than two sites in
it, when it is one site's own unrounded value).
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

SUPPRESS_MIN, SUPPRESS_MAX, ROUND_TO = 1, 7, 5
COUNT_COLUMNS = ("numerator", "denominator")
VALUE_COLUMNS = ("value", "lower_ci", "upper_ci", "comparator_value")
MIN_COMPARATOR_SITES = 2
BREAKDOWNS = {"overall", "imd_quintile", "core20", "ethnicity", "sex", "age_band", "plus_group",
              "core20_ethnicity", "practice", "pcn"}
CELL_KEY = ("site_code", "period_end", "indicator_id", "breakdown", "breakdown_value")
# Column names that would identify a person: refused in any published table.
IDENTIFIER_COLUMN = re.compile(
    r"(person|patient)_?id|nhs_?(no|num|number)|date_?of_?birth|\bdob\b|birth_?(date|month)|post_?code|"
    r"forename|surname|full_?name|address", re.IGNORECASE)


class PublicationRefused(RuntimeError):
    """The gate found something that must never be published; nothing is written."""

    def __init__(self, table: str, column: str | None, reason: str):
        self.table, self.column, self.reason = table, column, reason
        where = f"{table}.{column}" if column else table
        super().__init__(f"publication refused: {where}: {reason}")


def round_half_up(counts: pd.Series, base: int = ROUND_TO) -> pd.Series:
    return (np.floor(counts.astype(float) / base + 0.5) * base).astype("Int64")


def apply_disclosure_control(cells: pd.DataFrame) -> pd.DataFrame:
    """Suppress and round the counts of indicator cells; adds the `suppressed` flag."""
    out = cells.copy()
    small = pd.Series(False, index=out.index)
    for col in COUNT_COLUMNS:
        small |= out[col].between(SUPPRESS_MIN, SUPPRESS_MAX)
    for col in COUNT_COLUMNS:
        counts = out[col].astype("Int64")
        out[col] = round_half_up(counts).where(~counts.between(SUPPRESS_MIN, SUPPRESS_MAX))
    for col in (c for c in VALUE_COLUMNS if c in out.columns):
        out[col] = out[col].astype("Float64").where(~small)
    out["suppressed"] = small.astype(bool)
    return out


def comparator_disclosive(numerator: pd.Series, denominator: pd.Series, sites: pd.Series) -> pd.Series:
    """Where an all-sites comparator must not be published: its combined numerator or denominator
    is 1-7, or fewer than MIN_COMPARATOR_SITES sites have people in the cell (then it is one site's
    own value from unrounded counts, which would give away that site's suppressed cells)."""
    small = numerator.between(SUPPRESS_MIN, SUPPRESS_MAX) | denominator.between(SUPPRESS_MIN, SUPPRESS_MAX)
    return small | (sites < MIN_COMPARATOR_SITES)


def assert_publishable(table: str, frame: pd.DataFrame) -> None:
    """The gate every published table passes: no identifier-like column, and for indicator cells no
    row finer than a breakdown cell and no count that escaped disclosure control."""
    for column in frame.columns:
        if IDENTIFIER_COLUMN.search(column):
            raise PublicationRefused(table, column, "looks like a personal identifier; person-level data is never published")
    if set(CELL_KEY) <= set(frame.columns):
        _assert_cells(table, frame)


def _assert_cells(table: str, frame: pd.DataFrame) -> None:
    unknown = set(frame["breakdown"].unique()) - BREAKDOWNS
    if unknown:
        raise PublicationRefused(table, "breakdown", f"unknown breakdown(s) {sorted(unknown)}")
    keys = [c for c in (*CELL_KEY, "publication_id") if c in frame.columns]
    if frame.duplicated(keys).any():
        raise PublicationRefused(table, None, "more than one row per breakdown cell: rows finer than a cell are not published")
    for col in COUNT_COLUMNS:
        if col not in frame.columns:
            continue
        counts = frame[col].dropna()
        if counts.between(SUPPRESS_MIN, SUPPRESS_MAX).any():
            raise PublicationRefused(table, col, f"a count between {SUPPRESS_MIN} and {SUPPRESS_MAX} was not suppressed")
        if (counts % ROUND_TO != 0).any():
            raise PublicationRefused(table, col, f"a count is not rounded to a multiple of {ROUND_TO}")
    if "suppressed" in frame.columns:
        leaked = frame["suppressed"] & frame[[c for c in VALUE_COLUMNS if c in frame.columns]].notna().any(axis=1)
        if leaked.any():
            raise PublicationRefused(table, "value", "a suppressed cell still carries a value or interval")
