"""Inequality statistics per site, period and indicator (SPEC §7) from the unrounded cell counts,
by the project's one statistics module (assets/statistics.py): Core20 gap and ratio, slope and
relative index of inequality across IMD quintiles with seeded Monte Carlo CIs, and the Making
Data Count XmR reading of each site's monthly overall values up to that period.
"""
import bisect
import os
import zlib

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
    # Every lookup below is split out of the frame once: filtering the whole frame (or one site-period's
    # group) for every site-period-indicator was most of this model's time at 100k people.
    overall = cells[cells.breakdown == "overall"].sort_values("period_end", kind="stable")
    histories = {key: (g["period_end"].tolist(), g["value"].tolist())
                 for key, g in overall.groupby(["site_code", "indicator_id"], sort=False)}
    kept, since = _kept_rows(dbt, session)
    rebuilt = cells[cells.period_end >= pd.Timestamp(since)] if since else cells
    keys = sorted(set(zip(rebuilt.site_code, rebuilt.period_end, rebuilt.indicator_id)))
    core20, quintiles = _core20_cells(rebuilt), _quintile_cells(rebuilt)
    tasks = {key: _sii_task(quintiles.get(key, []), catalogue.loc[key[2]], "|".join(map(str, key))) for key in keys}
    todo = [k for k, t in tasks.items() if t is not None]
    # the costly part, over every core (dbt's main module is import-safe for spawned workers)
    sii = dict(zip(todo, st.sii_many([tasks[k] for k in todo], workers=os.cpu_count() or 1)))
    rows = []
    for site, period, indicator in keys:
        meta = catalogue.loc[indicator]
        periods, values = histories.get((site, indicator), ([], []))
        rows.append({"site_code": site, "period_end": period, "indicator_id": indicator,
                     **_gap(st, core20, (site, period, indicator), meta),
                     **_sii_columns(sii.get((site, period, indicator))),
                     **_spc(st, values[:bisect.bisect_right(periods, period)], meta)})
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


def _core20_cells(cells):
    """(site, period, indicator, core20 | not_core20) -> value, the first row of each cell."""
    c = cells[cells.breakdown == "core20"]
    out = {}
    for site, period, indicator, cell, value in zip(c.site_code, c.period_end, c.indicator_id,
                                                    c.breakdown_value, c["value"]):
        out.setdefault((site, period, indicator, cell), value)
    return out


def _quintile_cells(cells):
    """(site, period, indicator) -> [(quintile, numerator, denominator)] for quintiles 1..5."""
    q = cells[(cells.breakdown == "imd_quintile") & cells.breakdown_value.isin(list("12345"))]
    out = {}
    for site, period, indicator, quintile, num, den in zip(q.site_code, q.period_end, q.indicator_id,
                                                           q.breakdown_value, q.numerator, q.denominator):
        out.setdefault((site, period, indicator), []).append((quintile, num, den))
    return out


def _number(count):
    return float(count) if pd.notna(count) else float("nan")


def _value(cells, key):
    value = cells.get(key)
    return float(value) if value is not None and pd.notna(value) else None


def _direction(meta):
    return meta["direction"] if meta["direction"] in ("higher", "lower") else None


def _gap(st, core20_cells, key, meta):
    core20, rest = _value(core20_cells, (*key, "core20")), _value(core20_cells, (*key, "not_core20"))
    result = st.gaps(core20, rest, _direction(meta) or "higher")
    return {"core20_value": core20, "not_core20_value": rest,
            "absolute_gap": result.absolute_gap, "relative_gap": result.relative_gap}


def _sii_task(quintiles, meta, key):
    """SII/RII over quintiles 1..5 (1 = most deprived); none when a quintile is empty or has a zero count."""
    from assets.statistics import SiiTask

    q = sorted(quintiles, key=lambda row: row[0])
    numerators, denominators = [_number(n) for _, n, _ in q], [_number(d) for _, _, d in q]
    if len(q) < 5 or any(d <= 0 for d in denominators) or any(n <= 0 for n in numerators):
        return None
    is_pct = meta["unit"] == "%"
    if is_pct and any(n >= d for n, d in zip(numerators, denominators)):
        return None
    return SiiTask(tuple(numerators), tuple(denominators), 2 if is_pct else 1,
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
