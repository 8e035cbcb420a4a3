"""Helpers shared by the fault tests: environments, a many-site registry, landing copies, warehouse
snapshots and per-table checksums, and subprocesses that run project code."""
from __future__ import annotations

import csv
import hashlib
import os
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pandas as pd

from orchestration.settings import PROJECT_ROOT, SHIPPED_REFERENCE_DIR
from tests.warehouse.conftest import _text

PYTHON = sys.executable
# Columns that say when and by which run a publication was made, not what it holds: left out when
# two warehouses are compared for equal content.
VOLATILE_COLUMNS = {"published_at", "run_id"}


def env_for(root: Path, sites_file: Path | None = None) -> dict[str, str]:
    env = {"C20P5_LANDING_DIR": str(root / "landing"), "C20P5_WORK_DIR": str(root / "work"),
           "C20P5_WAREHOUSE_URL": str(root / "warehouse" / "evaluation.duckdb")}
    if sites_file:
        env["C20P5_SITES_FILE"] = str(sites_file)
    return env


def subprocess_env(extra: dict[str, str]) -> dict[str, str]:
    """The current environment without any C20P5_/DAGSTER_HOME leftovers, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("C20P5_") and k != "DAGSTER_HOME"}
    env["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env | {"C20P5_LOG_LEVEL": "WARNING"} | extra


@lru_cache(maxsize=1)
def pcn_practices() -> dict[str, list[str]]:
    """Real PCN codes and their practices, from the shipped NHS England practice mapping."""
    out: dict[str, list[str]] = {}
    with (SHIPPED_REFERENCE_DIR / "gp_practice_map_2026-04_selected.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["PCN_CODE"], []).append(row["PRACTICE_CODE"])
    return {k: sorted(v) for k, v in sorted(out.items())}


def write_registry(path: Path, site_codes: list[str], need_two_practices: set[str] = frozenset()) -> dict[str, str]:
    """A site registry with one PCN-based Complete Care Communities site per code; returns site -> PCN.
    Sites in `need_two_practices` get a PCN with at least two practices."""
    pcns = pcn_practices()
    multi = [p for p, prs in pcns.items() if len(prs) >= 2]
    free = list(pcns)
    if len(site_codes) > len(free):
        raise ValueError(f"{len(site_codes)} sites but only {len(free)} PCNs in the shipped mapping")
    chosen: dict[str, str] = {}
    for code in sorted(site_codes, key=lambda c: c not in need_two_practices):
        pool = [p for p in free if p in multi] if code in need_two_practices else free
        chosen[code] = pool[0]
        free.remove(pool[0])
    lines = ["sites:"]
    for code in site_codes:
        lines += [f"  - site_code: {code}", f"    site_name: Fault case {code}",
                  "    programme: complete_care_communities", f"    geography: {{pcns: [{chosen[code]}]}}",
                  "    plus_groups: [homeless]", "    local_priorities: []"]
    path.write_text("\n".join(lines) + "\n")
    return chosen


@lru_cache(maxsize=1)
def lsoa21_to_2011() -> dict[str, str]:
    """LSOA 2021 -> a different LSOA 2011 code that maps to it (ONS lookup), only where the 2011 code
    is not itself a 2021 code: sending it is the mistake a site with an old lookup makes."""
    path = SHIPPED_REFERENCE_DIR / "lookup_lsoa11_lsoa21_ltla22.csv"
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    codes21 = {r["lsoa21_code"] for r in rows}
    out: dict[str, str] = {}
    for r in sorted(rows, key=lambda r: r["lsoa11_code"]):
        if r["lsoa11_code"] not in codes21:
            out.setdefault(r["lsoa21_code"], r["lsoa11_code"])
    return out


def quick_report_pages(ctx, codes: list[str], workers: int = 1) -> dict:
    """Stands in for assets.reports.render_pages (matplotlib charts, ~4 s a site: 2.5 minutes a run here).
    The reports asset still runs after the publish, reads the whole published warehouse and writes a
    page per site and the index; the pages' content is tested in tests/reports."""
    return {None: "<html><body>national</body></html>", **{c: f"<html><body>{c}</body></html>" for c in codes}}


def copy_period(source: Path, landing: Path, period: str, sites: list[str] | None = None) -> None:
    """One month of each site's submission (all sites by default) and the reference feeds with it."""
    if not (landing / "reference").exists():
        shutil.copytree(source / "reference", landing / "reference")
    for site_dir in sorted((source / "sites").iterdir()):
        if sites is None or site_dir.name in sites:
            shutil.copytree(site_dir / period, landing / "sites" / site_dir.name / period)


def folder_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# --- what the warehouse holds -------------------------------------------------------------------

def canonical(frame: pd.DataFrame) -> list[tuple[str, ...]]:
    """Rows as text, nulls marked, sorted; floats to 12 significant digits, as the publisher's own
    content_hash compares them (assets/publish.py): the last bits of some values (the DSRs) follow
    DuckDB's aggregation order, which can differ between runs on the same inputs."""
    def text(value: object) -> str:
        if isinstance(value, float) and not pd.isna(value) and not float(value).is_integer():
            return f"{value:.12g}"
        return _text(value)
    return sorted(tuple(text(v) for v in row) for row in frame.itertuples(index=False))


def duck_tables(path: str | Path) -> dict[str, pd.DataFrame]:
    """Every table of a DuckDB warehouse, read through a fresh read-only attach."""
    from assets.warehouse import connect_warehouse
    con = connect_warehouse(path)
    try:
        names = con.execute("""select table_schema || '.' || table_name from information_schema.tables
                               where table_catalog = 'warehouse' order by 1""").fetchall()
        return {n: con.execute(f"select * from {n}").df() for (n,) in names}
    finally:
        con.close()


def pg_tables(url: str) -> dict[str, pd.DataFrame]:
    from tests.warehouse.conftest import pg_frame
    names = pg_frame(url, """select table_schema || '.' || table_name as t from information_schema.tables
                             where table_schema = 'evaluation' or table_schema like 'site\\_%' order by 1""")
    return {n: pg_frame(url, f"select * from {n}") for n in names["t"]}


def table_checksums(tables: dict[str, pd.DataFrame], drop: set[str] = VOLATILE_COLUMNS) -> dict[str, str]:
    """sha256 of each table's rows (as text, nulls marked, sorted), without the `drop` columns."""
    out = {}
    for name, frame in tables.items():
        frame = frame.drop(columns=[c for c in frame.columns if c in drop])
        body = "\n".join("\x1f".join(row) for row in canonical(frame))
        out[name] = hashlib.sha256(("\x1f".join(frame.columns) + "\n" + body).encode()).hexdigest()
    return out


def rows_of(tables: dict[str, pd.DataFrame], table: str, site: str, period_end: str,
            drop: tuple[str, ...] = ("publication_id",)) -> list[tuple[str, ...]]:
    frame = tables[table]
    frame = frame[(frame.site_code == site) & (pd.to_datetime(frame.period_end) == pd.Timestamp(period_end))]
    return canonical(frame.drop(columns=list(drop)))


def run_python(code: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-c", code], env=subprocess_env(env), cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=timeout)
