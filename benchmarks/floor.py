"""The floor of issue 8: benchmarks/floor.sql, the published indicator_values by DuckDB alone.

`run_floor` only fills the script's parameters (paths, the IMD vintage, the site registry as VALUES
lists) and runs it in one DuckDB connection; every rule is in the SQL.

    python -m benchmarks.floor <landing_dir> [--sites-file sites.yaml] [--imd-vintage 2025] [--print-sql]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import NamedTuple

import duckdb

from orchestration.settings import DBT_PROJECT_DIR, SHIPPED_REFERENCE_DIR, SHIPPED_SITES_FILE, load_sites

SQL_FILE = Path(__file__).with_name("floor.sql")
TABLE = "floor_indicator_values"
REFERENCE = {"imd2025": "imd2025_england_lsoa21.csv", "iod2019": "iod2019_file2_domains_lsoa11.csv",
             "lsoa11_21": "lookup_lsoa11_lsoa21_ltla22.csv", "lsoa21_icb": "lookup_lsoa21_icb24.csv",
             "practice_map": "gp_practice_map_2026-04_selected.csv",
             "epcn_partners": "ePCN_2023-01_PCN_Core_Partner_Details.csv",
             "esp2013": "esp2013_19_age_bands.csv", "census_pop": "census2021_lsoa21_age6_usual_residents.csv"}
_RELATIONS = {"police_files", "site_geography", "site_plus_groups", "site_local_priorities"}  # SQL, not quoted text


class FloorResult(NamedTuple):
    con: duckdb.DuckDBPyConnection  # holds the result table
    table: str
    rows: int
    seconds: float  # the script alone (parameters filled, connection open)


def _literal(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _values(rows: list[tuple[str, ...]], width: int) -> str:
    if not rows:
        return "SELECT " + ", ".join(["NULL::VARCHAR"] * width) + " WHERE false"
    return "VALUES " + ", ".join("(" + ", ".join(map(_literal, r)) + ")" for r in rows)


def render_floor_sql(landing_dir: Path, sites_file: Path = SHIPPED_SITES_FILE, imd_vintage: str = "2025",
                     reference_dir: Path = SHIPPED_REFERENCE_DIR) -> str:
    """floor.sql with its parameters filled in: a landing copy of a reference file replaces the shipped one."""
    if imd_vintage not in ("2025", "2019"):
        raise ValueError(f"imd_vintage must be 2025 or 2019, not {imd_vintage!r}")
    landing = Path(landing_dir).resolve()
    sites = load_sites(Path(sites_file))
    newer = landing / "reference"
    police = {p.name: p for p in sorted((reference_dir / "police").glob("*.csv"))}
    police |= {p.name: p for p in sorted((newer / "police").glob("*.csv"))}
    if not police:
        raise ValueError(f"no police.uk street-level CSV under {reference_dir / 'police'} or {newer / 'police'}")
    params = {k: str(newer / f if (newer / f).exists() else reference_dir / f) for k, f in REFERENCE.items()}
    params |= {
        "landing": str(landing), "seeds": str(DBT_PROJECT_DIR / "seeds"), "imd_vintage": imd_vintage,
        "police_files": f"[{', '.join(_literal(police[k]) for k in sorted(police))}]",
        "site_geography": _values([(s.site_code, s.geography_kind, c) for s in sites for c in s.geography_codes], 3),
        "site_plus_groups": _values([(s.site_code, g) for s in sites for g in s.plus_groups], 2),
        "site_local_priorities": _values([(s.site_code, i) for s in sites for i in s.local_priorities], 2),
    }
    sql = SQL_FILE.read_text()
    for key, value in params.items():
        sql = sql.replace("${" + key + "}", value.replace("'", "''") if key not in _RELATIONS else value)
    if "${" in sql:
        raise ValueError(f"floor.sql has an unfilled parameter near {sql[sql.index('${'):][:40]!r}")
    return sql


def run_floor(landing_dir: Path, sites_file: Path = SHIPPED_SITES_FILE, imd_vintage: str = "2025",
              out: duckdb.DuckDBPyConnection | str | Path | None = None) -> FloorResult:
    """Run the floor on `out` (a connection, a database file, or a fresh in-memory database if None);
    the result is table floor_indicator_values (the published columns but publication_id)."""
    sql = render_floor_sql(landing_dir, sites_file, imd_vintage)
    con = out if isinstance(out, duckdb.DuckDBPyConnection) else duckdb.connect(str(out) if out else ":memory:")
    start = time.perf_counter()
    con.execute(sql)
    seconds = time.perf_counter() - start
    return FloorResult(con, TABLE, con.execute(f"select count(*) from {TABLE}").fetchone()[0], seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("landing_dir", type=Path)
    parser.add_argument("--sites-file", type=Path, default=SHIPPED_SITES_FILE)
    parser.add_argument("--imd-vintage", default="2025", choices=["2025", "2019"])
    parser.add_argument("--print-sql", action="store_true", help="print the filled-in script and exit")
    args = parser.parse_args()
    if args.print_sql:
        print(render_floor_sql(args.landing_dir, args.sites_file, args.imd_vintage))
        return
    result = run_floor(args.landing_dir, args.sites_file, args.imd_vintage)
    print(f"{result.table}: {result.rows} rows in {result.seconds:.2f} s")


if __name__ == "__main__":
    main()
