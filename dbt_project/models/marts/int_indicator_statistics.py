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
    frame["comparator_value"] = _all_sites_value(frame)
    return frame


def _all_sites_value(frame: pd.DataFrame) -> pd.Series:
    """The same cell for all sites combined (national breakdowns only; null for practice and pcn)."""
    keys = ["period_end", "indicator_id", "breakdown", "breakdown_value"]
    totals = frame.groupby(keys, as_index=False)[["numerator", "denominator"]].sum()
    totals = totals.merge(frame[["indicator_id", "multiplier"]].drop_duplicates(), on="indicator_id")
    with np.errstate(divide="ignore", invalid="ignore"):
        totals["comparator_value"] = np.where(totals["denominator"] > 0,
                                              totals["numerator"] / totals["denominator"] * totals["multiplier"], np.nan)
    merged = frame[keys].merge(totals[keys + ["comparator_value"]], on=keys, how="left")["comparator_value"]
    merged[frame["breakdown"].isin(["practice", "pcn"]).to_numpy()] = np.nan
    return merged.to_numpy()
