"""The SQL statistics (dbt_project/macros/statistics.sql, model int_indicator_statistics) against the
Python reference (assets/statistics.py, checks/disclosure.py), computed independently on a grid of
counts: the model is built by dbt on DuckDB from fixture count tables, the reference in pandas."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml

from assets.statistics import ESP2013, byar_ci_arrays, dsr, indicator_values_with_cis, rate_ci
from checks import disclosure
from checks.disclosure import comparator_disclosive
from orchestration.settings import DBT_PROJECT_DIR

DBT = str(Path(sys.executable).with_name("dbt"))
KEYS = ["site_code", "period_end", "indicator_id", "breakdown", "breakdown_value"]
SITES = ("aa", "bb", "cc")
PERIOD = "2026-10-31"
# The catalogue's own rows (seeds/indicators.csv): one % indicator with its _DSR variant, two rates.
PERCENT, VARIANT, RATES = "HYP_PREVALENCE", "HYP_PREVALENCE_DSR", ("CYP_TOOTH_EXTRACTIONS", "KNIFE_CRIME_RATE")
VALUES = ["numerator", "denominator", "value", "lower_ci", "upper_ci", "comparator_value"]


def grid_counts(rng: np.random.Generator) -> pd.DataFrame:
    """int_indicator_counts: every small count, the switch at 10, x = 0 and x = n, empty cells, and
    per cell key up to three sites (so the comparator meets one site only and combined counts 1-7)."""
    rows = []

    def add(indicator: str, breakdown: str, value: str, counts: list[tuple[int, int]]) -> None:
        for site, (x, n) in zip(SITES, counts):
            rows.append((site, PERIOD, indicator, breakdown, value, x, n))

    pairs = [(x, n) for n in (0, 1, 2, 7, 8, 9, 10, 11, 25, 100, 1000, 54321) for x in range(0, n + 1)
             if x <= 30 or x >= n - 3 or x in (n // 2, n // 3)]
    for i, (x, n) in enumerate(pairs):
        others = [(0, 0), (0, 0)] if i % 4 == 0 else [_small(rng), _small(rng)]
        add(PERCENT, "ethnicity" if i % 5 else "practice", f"p{i}", [(x, n)] + others)
    for indicator in RATES:
        for i, x in enumerate([*range(0, 41), 99, 100, 101, 1234, 98765]):
            for n in (1, 7, 30, 2500, 1_000_000):
                others = [(0, 0), (0, 0)] if i % 3 == 0 else [_small(rng), (int(rng.integers(0, 50)), n)]
                add(indicator, "imd_quintile" if n % 2 else "pcn", f"r{i}_{n}", [(x, n)] + others)
    return pd.DataFrame(rows, columns=KEYS + ["numerator", "denominator"])


def _small(rng: np.random.Generator) -> tuple[int, int]:
    n = int(rng.integers(0, 12))
    return int(rng.integers(0, n + 1)), n


def grid_bands(rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, list[str]]]:
    """int_indicator_esp_counts for the variant (1 to 19 age bands a cell, totals either side of 10),
    the crude rows the variant's grid comes from, and twins: a cell's bands again, in other row orders."""
    bands, crude, twins = [], [], {}
    for c in range(120):
        present = np.sort(rng.choice(19, size=int(rng.integers(1, 20)), replace=False))
        denominators = rng.integers(1, 4000, len(present))
        numerators = rng.integers(0, denominators + 1) if c % 6 else rng.integers(0, 2, len(present))
        cell = pd.DataFrame({"age_band_order": present + 1, "esp2013_population": np.array(ESP2013)[present],
                             "numerator": numerators, "denominator": denominators})
        names = [f"d{c}"] + ([f"d{c}_reversed", f"d{c}_shuffled"] if c % 10 == 0 else [])
        twins[names[0]] = names[1:]
        for name, order in zip(names, [cell, cell.iloc[::-1], cell.sample(frac=1, random_state=c)]):
            bands.append(order.assign(site_code="aa", period_end=PERIOD, indicator_id=VARIANT, breakdown="sex",
                                      breakdown_value=name))
            crude.append(("aa", PERIOD, PERCENT, "sex", name, int(numerators.sum()), int(denominators.sum())))
    band_columns = KEYS + ["age_band_order", "esp2013_population", "numerator", "denominator"]
    return (pd.concat(bands, ignore_index=True)[band_columns],
            pd.DataFrame(crude, columns=KEYS + ["numerator", "denominator"]), twins)


def reference(counts: pd.DataFrame, bands: pd.DataFrame, catalogue: pd.DataFrame) -> pd.DataFrame:
    """What the model must give, from assets/statistics.py and checks/disclosure.py."""
    meta = catalogue[["indicator_id", "unit", "multiplier", "target"]]
    crude = indicator_values_with_cis(counts.merge(meta, on="indicator_id", how="left"))
    # Byar's limits (rates, counts from 10) one cell at a time: numpy's vectorised power runs SIMD code
    # on AVX-512 CPUs that is not always correctly rounded (a few units in the last place off), its
    # scalar power is the C library's, as SQL's power is.
    byar = (crude.unit != "%") & (crude.numerator >= 10) & (crude.denominator > 0)
    limits = [rate_ci(x, n, 1.0) for x, n in zip(crude.numerator[byar], crude.denominator[byar])]
    crude.loc[byar, "lower_ci"] = [low for low, _ in limits] * crude.multiplier[byar]
    crude.loc[byar, "upper_ci"] = [up for _, up in limits] * crude.multiplier[byar]
    multipliers = catalogue.set_index("indicator_id")["multiplier"]
    standardised = []
    for key, cell in bands.groupby(KEYS):
        cell = cell.sort_values("age_band_order")
        r = dsr(cell.numerator.to_numpy(float), cell.denominator.to_numpy(float),
                standard=cell.esp2013_population.to_numpy(float), multiplier=float(multipliers[key[2]]))
        standardised.append(dict(zip(KEYS, key), numerator=cell.numerator.sum(), denominator=cell.denominator.sum(),
                                 value=r.value if r else np.nan, lower_ci=r.lower if r else np.nan,
                                 upper_ci=r.upper if r else np.nan))
    variants = catalogue.dropna(subset=["standardised_from"])[["indicator_id", "standardised_from"]]
    grid = crude[KEYS].merge(variants, left_on="indicator_id", right_on="standardised_from", suffixes=("_base", ""))
    grid = grid[KEYS].merge(pd.DataFrame(standardised), on=KEYS, how="left").merge(meta, on="indicator_id")
    grid[["numerator", "denominator"]] = grid[["numerator", "denominator"]].fillna(0)
    frame = pd.concat([crude, grid], ignore_index=True)
    cell = ["period_end", "indicator_id", "breakdown", "breakdown_value"]
    totals = frame.assign(site=frame.site_code.where(frame.denominator > 0)).groupby(cell, as_index=False).agg(
        numerator=("numerator", "sum"), denominator=("denominator", "sum"), sites=("site", "nunique"),
        multiplier=("multiplier", "first"))
    with np.errstate(divide="ignore", invalid="ignore"):
        totals["comparator_value"] = np.where(totals.denominator > 0, totals.numerator / totals.denominator
                                              * totals.multiplier, np.nan)
    totals.loc[comparator_disclosive(totals.numerator, totals.denominator, totals.sites), "comparator_value"] = np.nan
    frame = frame.merge(totals[cell + ["comparator_value"]], on=cell)
    frame.loc[frame.breakdown.isin(["practice", "pcn"]), "comparator_value"] = np.nan
    return frame


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, list[str]]]:
    """The model as dbt builds it on DuckDB from the grid, and the reference for the same grid."""
    rng = np.random.default_rng(20260131)
    counts = grid_counts(rng)
    bands, variant_base, twins = grid_bands(rng)
    counts = pd.concat([counts, variant_base], ignore_index=True)
    root = tmp_path_factory.mktemp("statistics_sql")
    db = root / "build.duckdb"
    con = duckdb.connect(str(db))
    con.execute("create schema intermediate")
    con.execute("create table intermediate.int_indicator_counts as select site_code, cast(period_end as date) as "
                "period_end, indicator_id, breakdown, breakdown_value, cast(numerator as hugeint) as numerator, "
                "cast(denominator as bigint) as denominator from counts")
    con.execute("create table intermediate.int_indicator_esp_counts as select site_code, cast(period_end as date) as "
                "period_end, indicator_id, breakdown, breakdown_value, cast(age_band_order as integer) as "
                "age_band_order, cast(esp2013_population as integer) as esp2013_population, cast(numerator as hugeint) "
                "as numerator, cast(denominator as bigint) as denominator from bands")
    con.close()
    result = subprocess.run(
        [DBT, "build", "--select", "indicators", "exact_poisson_limits", "int_indicator_statistics",
         "--target-path", str(root / "target"), "--log-path", str(root / "logs")],
        cwd=DBT_PROJECT_DIR, env={**os.environ, "C20P5_BUILD_DB_PATH": str(db)},
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-5000:]
    con = duckdb.connect(str(db), read_only=True)
    try:
        model = con.execute("select * from marts.int_indicator_statistics").df()
        catalogue = con.execute("select * from seeds.indicators").df()
    finally:
        con.close()
    model["period_end"] = model["period_end"].dt.strftime("%Y-%m-%d")
    expected = reference(counts, bands, catalogue)
    return model, expected, twins


def test_the_model_has_a_row_per_reference_cell(built) -> None:
    model, expected, _ = built
    assert not model.duplicated(KEYS).any()
    both = model[KEYS].merge(expected[KEYS], how="outer", indicator=True)
    assert (both["_merge"] == "both").all(), both[both["_merge"] != "both"].head()
    assert list(model.columns) == KEYS + ["numerator", "denominator", "unit", "multiplier", "target", "value",
                                          "lower_ci", "upper_ci", "comparator_value"]


def test_sql_statistics_equal_the_python_reference_to_the_last_bit(built) -> None:
    """Same operations in the same order, so the same bits: Wilson, exact Poisson, Byar, the value,
    the DSR (in numpy's summation order, see numpy_sum) and the comparator."""
    model, expected, _ = built
    merged = model.merge(expected, on=KEYS, suffixes=("", "_ref"))
    assert len(merged) == len(model) > 2000
    for column in VALUES:
        sql, ref = merged[column].to_numpy(float), merged[f"{column}_ref"].to_numpy(float)
        differs = (np.isnan(sql) != np.isnan(ref)) | (~np.isnan(sql) & (sql != ref))
        assert not differs.any(), f"{column}:\n{merged.loc[differs, KEYS + [column, column + '_ref']].head(10)}"
    # the grid reaches every branch
    variant = merged[merged.indicator_id == VARIANT]
    assert variant.value.notna().sum() > 50 and variant.value.isna().sum() > 10  # counts below 10
    assert merged.comparator_value.notna().sum() > 200 and merged.comparator_value.isna().sum() > 200
    rates = merged[(merged.unit != "%") & (merged.indicator_id != VARIANT) & (merged.denominator > 0)]
    assert (rates.numerator >= 10).sum() > 100 and (rates.numerator < 10).sum() > 100


def test_dsr_bits_do_not_depend_on_the_order_of_the_bands(built) -> None:
    """A cell's bands stored in another row order standardise to the same bits (numpy_sum picks each
    band by its place in age order, whatever order the engine aggregates in)."""
    model, _, twins = built
    values = model[model.indicator_id == VARIANT].set_index("breakdown_value")[["value", "lower_ci", "upper_ci"]]
    assert sum(len(t) for t in twins.values()) >= 20
    for cell, others in twins.items():
        for other in others:
            assert values.loc[other].to_numpy().tobytes() == values.loc[cell].to_numpy().tobytes(), (cell, other)


def test_exact_poisson_seed_is_what_scipy_gives() -> None:
    """seeds/exact_poisson_limits.csv holds the reference's exact limits of counts 0-9, to the bit."""
    with (DBT_PROJECT_DIR / "seeds" / "exact_poisson_limits.csv").open() as f:
        rows = list(csv.DictReader(f))
    lower, upper = byar_ci_arrays(np.arange(10.0))
    assert [int(r["observed"]) for r in rows] == list(range(10))
    assert [float(r["lower_count"]) for r in rows] == [float(v) for v in lower]
    assert [float(r["upper_count"]) for r in rows] == [float(v) for v in upper]


def test_dbt_disclosure_vars_are_the_disclosure_constants() -> None:
    project = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text())
    assert project["vars"] == {"suppress_min": disclosure.SUPPRESS_MIN, "suppress_max": disclosure.SUPPRESS_MAX,
                               "min_comparator_sites": disclosure.MIN_COMPARATOR_SITES}
