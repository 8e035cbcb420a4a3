"""The floor of the benchmark (benchmarks/floor.sql, DuckDB alone) publishes what the pipeline publishes:
the nightly job runs once on a small generated landing zone, the floor runs on the same files, and
every row of evaluation.indicator_values must come out the same (counts exactly, floats to 1e-9)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from assets.warehouse import connect_warehouse
from benchmarks.floor import run_floor
from orchestration.settings import Settings
from tests.conftest import nightly_on_generated_landing

pytestmark = pytest.mark.slow
KEYS = ["site_code", "period_end", "indicator_id", "breakdown", "breakdown_value"]
EXACT = ["numerator", "denominator", "suppressed", "unit", "target"]
FLOATS = ["value", "lower_ci", "upper_ci", "comparator_value"]


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, pd.DataFrame]:
    settings = nightly_on_generated_landing(tmp_path_factory.mktemp("floor"))
    con = connect_warehouse(settings.warehouse_url)
    try:
        return settings, con.execute("select * exclude (publication_id) from evaluation.indicator_values").df()
    finally:
        con.close()


@pytest.fixture(scope="module")
def floor(published: tuple[Settings, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    settings, _ = published
    result = run_floor(settings.landing_dir, settings.sites_file, settings.imd_vintage,
                       out=tmp_path_factory.mktemp("floor_db") / "floor.duckdb")
    try:
        frame = result.con.execute(f"select * from {result.table}").df()
    finally:
        result.con.close()
    assert len(frame) == result.rows
    return frame


def test_floor_has_the_published_columns(published: tuple[Settings, pd.DataFrame], floor: pd.DataFrame) -> None:
    assert list(floor.columns) == list(published[1].columns)


def test_floor_publishes_the_same_cells(published: tuple[Settings, pd.DataFrame], floor: pd.DataFrame) -> None:
    pub = published[1]
    assert not floor.duplicated(KEYS).any()
    assert len(pub) > 1000 and {"HYP_PREVALENCE_DSR", "KNIFE_CRIME_RATE"} <= set(pub.indicator_id)
    both = pub[KEYS].merge(floor[KEYS], how="outer", indicator=True)
    assert (both["_merge"] == "both").all(), both[both["_merge"] != "both"].head(20).to_string()


def test_floor_values_equal_the_published_ones(published: tuple[Settings, pd.DataFrame], floor: pd.DataFrame) -> None:
    merged = published[1].merge(floor, on=KEYS, suffixes=("_pub", "_floor"))
    assert len(merged) == len(floor)
    for column in EXACT:
        a, b = merged[f"{column}_pub"], merged[f"{column}_floor"]
        same = (a == b) | (a.isna() & b.isna())
        assert same.all(), f"{column}:\n{merged.loc[~same, KEYS + [f'{column}_pub', f'{column}_floor']].head(20)}"
    for column in FLOATS:
        a, b = merged[f"{column}_pub"].to_numpy(float), merged[f"{column}_floor"].to_numpy(float)
        same = np.isclose(a, b, rtol=1e-9, atol=0.0, equal_nan=True)
        assert same.all(), f"{column}:\n{merged.loc[~same, KEYS + [f'{column}_pub', f'{column}_floor']].head(20)}"
    assert merged["value_pub"].notna().sum() > 500  # the comparison is not vacuous

