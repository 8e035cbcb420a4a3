"""Values and 95% confidence intervals for every indicator cell, by the project's one statistics
module (assets/statistics.py, PHEindicatormethods' methods): Wilson for proportions, Byar /
exact Poisson for rates. A dbt Python model so the marts stay inside `dbt build` (lineage, tests
and contracts) while the statistics live in one tested Python module.
"""
import numpy as np
import pandas as pd


def model(dbt, session):
    dbt.config(materialized="table")
    from assets.statistics import indicator_values_with_cis

    counts = dbt.ref("int_indicator_counts").df()
    catalogue = dbt.ref("indicators").df()[["indicator_id", "unit", "multiplier", "target"]]
    frame = counts.merge(catalogue, on="indicator_id", how="left")
    frame = indicator_values_with_cis(frame)
    variants = dbt.ref("indicators").df()[["indicator_id", "standardised_from"]].dropna()
    standardised = _standardised(dbt.ref("int_indicator_esp_counts").df(), catalogue)
    frame = pd.concat([frame, _on_base_grid(frame, standardised, variants, catalogue)], ignore_index=True)
    frame["comparator_value"] = _all_sites_value(frame)
    return frame


KEYS = ["site_code", "period_end", "indicator_id", "breakdown", "breakdown_value"]


def _standardised(bands: pd.DataFrame, catalogue: pd.DataFrame) -> pd.DataFrame:
    """Directly standardised values per cell over the ESP2013 bands present in the population."""
    from assets.statistics import dsr

    rows = []
    multipliers = catalogue.set_index("indicator_id")["multiplier"]
    for key, cell in bands.groupby(KEYS, sort=True):
        # bands in age order: the float sums in dsr() then add up in the same order on every run,
        # whatever order DuckDB's aggregation returned the rows in
        cell = cell[cell["denominator"] > 0].sort_values("age_band_order", kind="stable")
        result = dsr(cell["numerator"].to_numpy(float), cell["denominator"].to_numpy(float),
                     standard=cell["esp2013_population"].to_numpy(float), multiplier=float(multipliers[key[2]]))
        rows.append(dict(zip(KEYS, key), numerator=int(cell["numerator"].sum()), denominator=int(cell["denominator"].sum()),
                         value=result.value if result else np.nan, lower_ci=result.lower if result else np.nan,
                         upper_ci=result.upper if result else np.nan))
    out = pd.DataFrame(rows, columns=KEYS + ["numerator", "denominator", "value", "lower_ci", "upper_ci"])
    return out.merge(catalogue, on="indicator_id", how="left")


def _on_base_grid(frame, standardised, variants, catalogue):
    """Give each standardised variant the same full grid of cells as the indicator it restates."""
    grid = frame.merge(variants, left_on="indicator_id", right_on="standardised_from", suffixes=("_base", ""))
    grid = grid[KEYS].merge(standardised.drop(columns=["unit", "multiplier", "target"]), on=KEYS, how="left")
    grid[["numerator", "denominator"]] = grid[["numerator", "denominator"]].fillna(0).astype("int64")
    return grid.merge(catalogue, on="indicator_id", how="left")


def _all_sites_value(frame: pd.DataFrame) -> pd.Series:
    """The same cell for all sites combined (national breakdowns only; null for practice and pcn),
    null where it would disclose (checks/disclosure.py). For standardised variants this is the
    crude all-sites value of the same cell."""
    from checks.disclosure import comparator_disclosive

    keys = ["period_end", "indicator_id", "breakdown", "breakdown_value"]
    frame = frame.assign(_site=frame["site_code"].where(frame["denominator"] > 0))
    totals = frame.groupby(keys, as_index=False).agg(numerator=("numerator", "sum"),
                                                     denominator=("denominator", "sum"), sites=("_site", "nunique"))
    totals = totals.merge(frame[["indicator_id", "multiplier"]].drop_duplicates(), on="indicator_id")
    with np.errstate(divide="ignore", invalid="ignore"):
        totals["comparator_value"] = np.where(totals["denominator"] > 0,
                                              totals["numerator"] / totals["denominator"] * totals["multiplier"], np.nan)
    disclosive = comparator_disclosive(totals["numerator"], totals["denominator"], totals["sites"])
    totals.loc[disclosive, "comparator_value"] = np.nan
    merged = frame[keys].merge(totals[keys + ["comparator_value"]], on=keys, how="left")["comparator_value"]
    merged[frame["breakdown"].isin(["practice", "pcn"]).to_numpy()] = np.nan
    return merged.to_numpy()
