"""The shared warehouse (SPEC §8): the only code that writes it.

DuckDB target: the new publication is written into a copy of the current file beside it, then
swapped in with an atomic rename. A reader that has the old file open keeps reading the old
publication (its inode stays alive); new readers open the new one; nobody sees a mix, and a
crash before the rename leaves the old file untouched (the stray copy is removed next time).
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pandas as pd

from checks.disclosure import assert_publishable

SCHEMA = "evaluation"
SITE_ONLY_BREAKDOWNS = ("practice", "pcn")
INDICATOR_VALUE_COLUMNS = ["publication_id", "site_code", "period_end", "indicator_id", "breakdown",
                           "breakdown_value", "numerator", "denominator", "value", "lower_ci", "upper_ci", "unit",
                           "suppressed", "target", "comparator_value"]
INEQUALITY_COLUMNS = ["publication_id", "site_code", "period_end", "indicator_id", "core20_value",
                      "not_core20_value", "absolute_gap", "relative_gap", "sii", "sii_lower_ci", "sii_upper_ci",
                      "rii", "rii_lower_ci", "rii_upper_ci", "spc_variation", "spc_assurance"]
DATA_QUALITY_COLUMNS = ["publication_id", "run_id", "site_code", "period_end", "stage", "check_name", "severity",
                        "passed", "file", "row", "column", "message"]


@dataclass
class Publication:
    """Everything one publication writes; tables are already disclosure-controlled."""
    indicator_values: pd.DataFrame           # published site-periods, without publication_id
    inequality_summary: pd.DataFrame
    indicators: pd.DataFrame
    sites: pd.DataFrame
    data_quality: pd.DataFrame
    published: list[tuple[str, str]]         # (site_code, period_end)
    withheld: list[dict]                     # {site_code, period_end, reason}
    run_id: str
    code_version: str
    input_checksums: dict[str, str] = field(default_factory=dict)
    content_hash: str = ""


def publish_duckdb(path: Path, pub: Publication) -> int | None:
    """Write `pub` as a new publication; returns its id, or None when nothing changed."""
    for table, frame in _published_frames(pub).items():
        assert_publishable(table, frame)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stray_copies(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    if path.exists():
        shutil.copy2(path, tmp)
    try:
        con = connect_warehouse(tmp, read_only=False)
        try:
            publication_id = _write(con, pub)
            con.execute("checkpoint")
        finally:
            con.close()
        if publication_id is None:
            tmp.unlink()
            return None
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
        return publication_id
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def connect_warehouse(path: Path | str, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """Open a warehouse file as catalog `warehouse`. The file is named evaluation.duckdb and holds
    schema `evaluation`; opened directly, DuckDB names the catalog `evaluation` too and rejects
    `evaluation.<table>` as ambiguous, so readers attach it under another name (see docs/warehouse.md)."""
    con = duckdb.connect()
    mode = " (READ_ONLY)" if read_only else ""
    con.execute(f"attach '{path}' as warehouse{mode}")
    con.execute("use warehouse")
    return con


def _published_frames(pub: Publication) -> dict[str, pd.DataFrame]:
    return {"indicator_values": pub.indicator_values, "inequality_summary": pub.inequality_summary,
            "indicators": pub.indicators, "sites": pub.sites, "data_quality": pub.data_quality}


def _remove_stray_copies(path: Path) -> None:
    for stray in path.parent.glob(f".{path.name}.*.tmp"):
        stray.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(con: duckdb.DuckDBPyConnection, pub: Publication) -> int | None:
    _create_tables(con)
    last_hash = con.execute(f"""select content_hash from {SCHEMA}.publications
                                order by publication_id desc limit 1""").fetchone()
    if last_hash and last_hash[0] == pub.content_hash and not pub.withheld:
        return None
    publication_id = con.execute(f"select coalesce(max(publication_id), 0) + 1 from {SCHEMA}.publications").fetchone()[0]
    con.execute("begin")
    _append(con, "indicator_values_history", pub.indicator_values, publication_id, INDICATOR_VALUE_COLUMNS)
    _append(con, "inequality_summary_history", pub.inequality_summary, publication_id, INEQUALITY_COLUMNS)
    _append(con, "data_quality", pub.data_quality, publication_id, DATA_QUALITY_COLUMNS)
    _replace(con, "indicators", pub.indicators)
    _replace(con, "sites", pub.sites)
    con.execute(f"insert into {SCHEMA}.publications values (?, ?, ?, ?, ?, ?, ?, ?)", [
        publication_id, datetime.now(timezone.utc).replace(tzinfo=None), pub.code_version, pub.content_hash,
        json.dumps(pub.input_checksums, sort_keys=True),
        json.dumps([f"{s}:{p}" for s, p in sorted(pub.published)]),
        json.dumps(sorted(pub.withheld, key=lambda w: (w["site_code"], w["period_end"]))), pub.run_id])
    _rebuild_latest(con)
    _rebuild_site_schemas(con, sorted(pub.sites["site_code"]))
    con.execute("commit")
    return publication_id


def _create_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"create schema if not exists {SCHEMA}")
    con.execute(f"""create table if not exists {SCHEMA}.publications (publication_id bigint primary key,
        published_at timestamp, code_version varchar, content_hash varchar, input_checksums varchar,
        sites_published varchar, sites_withheld varchar, run_id varchar)""")
    con.execute(f"""create table if not exists {SCHEMA}.indicator_values_history (publication_id bigint,
        site_code varchar, period_end date, indicator_id varchar, breakdown varchar, breakdown_value varchar,
        numerator bigint, denominator bigint, value double, lower_ci double, upper_ci double, unit varchar,
        suppressed boolean, target double, comparator_value double)""")
    con.execute(f"""create table if not exists {SCHEMA}.inequality_summary_history (publication_id bigint,
        site_code varchar, period_end date, indicator_id varchar, core20_value double, not_core20_value double,
        absolute_gap double, relative_gap double, sii double, sii_lower_ci double, sii_upper_ci double,
        rii double, rii_lower_ci double, rii_upper_ci double, spc_variation varchar, spc_assurance varchar)""")
    con.execute(f"""create table if not exists {SCHEMA}.data_quality (publication_id bigint, run_id varchar,
        site_code varchar, period_end varchar, stage varchar, check_name varchar, severity varchar, passed boolean,
        file varchar, "row" bigint, "column" varchar, message varchar)""")


def _append(con: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame, publication_id: int,
            columns: list[str]) -> None:
    if frame.empty:
        return
    data = frame.assign(publication_id=publication_id)[columns]
    con.register("_incoming", data)
    con.execute(f"insert into {SCHEMA}.{table} select {', '.join(_q(c) for c in columns)} from _incoming")
    con.unregister("_incoming")


def _replace(con: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame) -> None:
    con.register("_incoming", frame)
    con.execute(f"create or replace table {SCHEMA}.{table} as select * from _incoming")
    con.unregister("_incoming")


def _q(column: str) -> str:
    return f'"{column}"'


def _rebuild_latest(con: duckdb.DuckDBPyConnection) -> None:
    """Latest rows per site and period: a withheld site-period keeps its last good publication."""
    for table in ("indicator_values", "inequality_summary"):
        national = " and breakdown not in ('practice', 'pcn')" if table == "indicator_values" else ""
        con.execute(f"""create or replace table {SCHEMA}.{table}_all_breakdowns as
            select h.* from {SCHEMA}.{table}_history h
            join (select site_code, period_end, max(publication_id) as publication_id
                  from {SCHEMA}.{table}_history group by all) latest using (site_code, period_end, publication_id)
            order by site_code, period_end, indicator_id{', breakdown, breakdown_value' if national else ''}""")
        con.execute(f"""create or replace table {SCHEMA}.{table} as
            select * from {SCHEMA}.{table}_all_breakdowns where true{national}""")


def _rebuild_site_schemas(con: duckdb.DuckDBPyConnection, site_codes: list[str]) -> None:
    """`site_<code>`: the same tables restricted to one site, with practice and PCN breakdowns."""
    for code in site_codes:
        schema = f"site_{code}"
        con.execute(f"create schema if not exists {schema}")
        for table, source in (("indicator_values", "indicator_values_all_breakdowns"),
                              ("inequality_summary", "inequality_summary_all_breakdowns"),
                              ("data_quality", "data_quality"), ("sites", "sites")):
            con.execute(f"create or replace table {schema}.{table} as select * from {SCHEMA}.{source} "
                        f"where site_code = ?", [code])
        con.execute(f"create or replace table {schema}.indicators as select * from {SCHEMA}.indicators")
        con.execute(f"create or replace table {schema}.publications as select * from {SCHEMA}.publications")
    for table in ("indicator_values_all_breakdowns", "inequality_summary_all_breakdowns"):
        con.execute(f"drop table {SCHEMA}.{table}")
