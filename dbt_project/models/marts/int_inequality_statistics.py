"""Inequality statistics per site, period and indicator (SPEC §7) from the unrounded cell counts,
by the project's one statistics module (assets/statistics.py): Core20 gap and ratio, slope and
relative index of inequality across IMD quintiles with seeded Monte Carlo CIs, and the Making
Data Count XmR reading of each site's monthly overall values up to that period.
"""
import os
import zlib

import numpy as np
import pandas as pd


def model(dbt, session):
    # Rebuilt by period like the incremental models (macros/incremental.sql), but as a table that keeps its
    # earlier periods' rows: dbt-duckdb's incremental Python models insert from a temporary table it then
    # cannot find (1.11.1), and this table is small (one row per site, period and indicator).
    dbt.config(materialized="table")
    from assets import statistics as st

    cells = dbt.ref("int_indicator_statistics").df()  # every period: a month's SPC reads the months before it
    catalogue = dbt.ref("indicators").df().set_index("indicator_id")
    # Each site's monthly overall values per indicator, split once: filtering the whole frame for
    # every site-period-indicator was most of this model's time (156 s of 237 s of dbt's nodes at
    # 100k people, 26 sites, 13 months).
    overall = cells[cells.breakdown == "overall"].sort_values("period_end", kind="stable")
    histories = {key: g for key, g in overall.groupby(["site_code", "indicator_id"], sort=False)}
    kept, since = _kept_rows(dbt, session)
    rebuilt = cells[cells.period_end >= pd.Timestamp(since)] if since else cells
    groups = list(rebuilt.groupby(["site_code", "period_end", "indicator_id"], sort=True))
    tasks = {key: _sii_task(group, catalogue.loc[key[2]], "|".join(map(str, key))) for key, group in groups}
    todo = [k for k, t in tasks.items() if t is not None]
    # the costly part, over every core (dbt's main module is import-safe for spawned workers)
    sii = dict(zip(todo, st.sii_many([tasks[k] for k in todo], workers=os.cpu_count() or 1)))
    rows = []
    for (site, period, indicator), group in groups:
        meta = catalogue.loc[indicator]
        history = histories.get((site, indicator), overall.iloc[0:0])
        history = history[history.period_end <= period]
        rows.append({"site_code": site, "period_end": period, "indicator_id": indicator,
                     **_gap(st, group, meta), **_sii_columns(sii.get((site, period, indicator))),
                     **_spc(st, history["value"].tolist(), meta)})
    new = pd.DataFrame(rows, columns=COLUMNS)
    return pd.concat([kept, new], ignore_index=True) if kept is not None else new


COLUMNS = ["site_code", "period_end", "indicator_id", "core20_value", "not_core20_value", "absolute_gap",
           "relative_gap", "sii", "sii_lower_ci", "sii_upper_ci", "rii", "rii_lower_ci", "rii_upper_ci",
           "spc_variation", "spc_assurance"]


def _kept_rows(dbt, session):
    """This table's rows before the periods being rebuilt, and the first period rebuilt; (None, None)
    to compute every period (no rebuild_from, or no earlier table to keep rows from)."""
    since = dbt.config.get("rebuild_from") or None
    exists = session.execute(
        "select count(*) from information_schema.tables where table_catalog = ? and table_schema = ? and table_name = ?",
        [dbt.this.database, dbt.this.schema, dbt.this.identifier]).fetchone()[0]
    if not since or not exists:
        return None, None
    kept = session.execute(f"select {', '.join(COLUMNS)} from {dbt.this} where period_end < cast(? as date)"
                           " order by site_code, period_end, indicator_id", [since]).df()
    return kept, since


def _cell(group, breakdown, value):
    hit = group[(group.breakdown == breakdown) & (group.breakdown_value == value)]["value"]
    return float(hit.iloc[0]) if len(hit) and pd.notna(hit.iloc[0]) else None


def _direction(meta):
    return meta["direction"] if meta["direction"] in ("higher", "lower") else None


def _gap(st, group, meta):
    core20, rest = _cell(group, "core20", "core20"), _cell(group, "core20", "not_core20")
    result = st.gaps(core20, rest, _direction(meta) or "higher")
    return {"core20_value": core20, "not_core20_value": rest,
            "absolute_gap": result.absolute_gap, "relative_gap": result.relative_gap}


def _sii_task(group, meta, key):
    """SII/RII over quintiles 1..5 (1 = most deprived); none when a quintile is empty or has a zero count."""
    from assets.statistics import SiiTask

    q = group[(group.breakdown == "imd_quintile") & group.breakdown_value.isin(list("12345"))]
    q = q.sort_values("breakdown_value")
    if len(q) < 5 or (q.denominator <= 0).any() or (q.numerator <= 0).any():
        return None
    is_pct = meta["unit"] == "%"
    if is_pct and (q.numerator >= q.denominator).any():
        return None
    return SiiTask(tuple(q.numerator.to_numpy(float)), tuple(q.denominator.to_numpy(float)), 2 if is_pct else 1,
                   rate_multiplier=float(meta["multiplier"]), multiplier=100.0 if is_pct else 1.0,
                   seed=zlib.crc32(key.encode()))


def _sii_columns(r):
    if r is None:
        return {k: None for k in ("sii", "sii_lower_ci", "sii_upper_ci", "rii", "rii_lower_ci", "rii_upper_ci")}
    return {"sii": r.sii, "sii_lower_ci": r.sii_lower, "sii_upper_ci": r.sii_upper,
            "rii": r.rii, "rii_lower_ci": r.rii_lower, "rii_upper_ci": r.rii_upper}


def _spc(st, values, meta):
    target = None if pd.isna(meta["target"]) else float(meta["target"])
    clean = [None if v is None or pd.isna(v) else float(v) for v in values]
    r = st.xmr(clean, target=target, direction=_direction(meta))
    return {"spc_variation": r.variation, "spc_assurance": r.assurance}
