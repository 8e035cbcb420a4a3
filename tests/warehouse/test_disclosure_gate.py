"""Disclosure control as a reader meets it, on both targets: no small number comes back out, and a
publication the gate refuses is withheld whole, naming the table and column, with the warehouse as it was."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from assets.publish import content_hash, write_publication
from assets.warehouse import Publication
from checks.disclosure import PublicationRefused
from orchestration.settings import load_settings
from tests.warehouse.conftest import DuckTarget, Target, snapshot
from tests.warehouse.factory import cells, make_publication


def count_tables(t: Target) -> list[str]:
    return [n for n in t.tables() if n.endswith(("indicator_values", "indicator_values_history"))]


def test_the_raw_cells_do_hold_small_numbers() -> None:
    """Guard for the test below: without disclosure control these counts would be published."""
    raw = cells([("aa", "2026-09-30"), ("bb", "2026-09-30")], np.random.default_rng(0))
    assert raw.numerator.between(1, 7).sum() >= 3 and raw.denominator.between(1, 7).sum() >= 1


def test_no_small_number_can_be_read_back(target: Target) -> None:
    target.publish(make_publication(variant=0))
    target.publish(make_publication(variant=1, withheld=(("bb", "2026-10-31"),)))
    for table in count_tables(target):
        small = target.query(f"""select count(*) as n from {table}
                                 where numerator between 1 and 7 or denominator between 1 and 7
                                    or numerator % 5 <> 0 or denominator % 5 <> 0""")
        assert small.n[0] == 0, table
        positive = target.query(f"select min(least(numerator, denominator)) as m from {table} where numerator > 0")
        assert positive.m[0] >= 10, table  # 8 and 9 round up to 10; nothing between 0 and 10 is visible
        leaks = target.query(f"""select count(*) as n from {table} where
            (suppressed and (value is not null or lower_ci is not null or upper_ci is not null))
            or ((numerator is null or denominator is null) and not suppressed)""")
        assert leaks.n[0] == 0, table
        assert target.query(f"select count(*) as n from {table} where suppressed").n[0] > 0, table


def _with_column(table: str, column: str, value: object) -> Callable[[Publication], None]:
    def change(pub: Publication) -> None:
        setattr(pub, table, getattr(pub, table).assign(**{column: value}))
    return change


def _duplicate_cell(pub: Publication) -> None:
    pub.indicator_values = pd.concat([pub.indicator_values, pub.indicator_values.iloc[:1]], ignore_index=True)


def _unsuppressed_small_count(pub: Publication) -> None:
    frame = pub.indicator_values.copy()
    frame.loc[frame.index[0], ["numerator", "suppressed"]] = [3, False]
    pub.indicator_values = frame


REFUSALS = {
    "identifier column in indicator_values": (_with_column("indicator_values", "nhs_number", "9434765919"),
                                              "indicator_values", "nhs_number"),
    "identifier column in sites": (_with_column("sites", "postcode", "BB1 1AA"), "sites", "postcode"),
    "identifier column in data_quality": (_with_column("data_quality", "person_id", "p1"), "data_quality", "person_id"),
    "rows finer than a cell": (_duplicate_cell, "indicator_values", None),
    "a count that escaped control": (_unsuppressed_small_count, "indicator_values", "numerator"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_table_withholds_the_publication_and_leaves_the_warehouse_unchanged(
        target: Target, case: str) -> None:
    change, table, column = REFUSALS[case]
    url = str(target.path) if isinstance(target, DuckTarget) else target.db.publisher_url
    settings = load_settings({"C20P5_WAREHOUSE_URL": url})
    assert write_publication(settings, make_publication(variant=0)) == 1
    before = snapshot(target)
    bad = make_publication(variant=1)
    change(bad)
    bad.content_hash = content_hash(bad)
    with pytest.raises(PublicationRefused) as refused:
        write_publication(settings, bad)  # the one switch: the same gate runs before either target
    assert (refused.value.table, refused.value.column) == (table, column)
    assert f"publication refused: {table}" in str(refused.value)
    assert snapshot(target) == before
