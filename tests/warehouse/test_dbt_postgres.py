"""The dbt models build on PostgreSQL as well as DuckDB (issue 8): the nightly job runs once on a small
generated landing zone (DuckDB, as always), the source tables dbt read there (the staged extracts and
the reference data) are copied into a database on a real PostgreSQL server, and a real
`dbt build --target postgres` (seeds, models, unit and data tests) runs on it. Every seed, view and
table it builds must hold what the DuckDB build holds (counts and text exactly, floats to 1e-9), and
it must build every model but the DuckDB-only ones (a dbt Python model and the mart on it)."""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import duckdb
import psycopg
import pytest
import yaml

from orchestration.settings import DBT_PROJECT_DIR
from tests.conftest import nightly_on_generated_landing
from tests.warehouse.conftest import PASSWORD, PUBLISHER, new_database

pytestmark = pytest.mark.slow
DBT = str(Path(sys.executable).with_name("dbt"))
# Documented in their yml (enabled only when target.type is duckdb) and in docs/performance.md.
DUCKDB_ONLY = {"int_inequality_statistics", "fct_inequality_summary"}
SCHEMAS = ("seeds", "staging", "intermediate", "marts")  # where dbt builds (macros/generate_schema_name.sql)
PG_TYPES = {"VARCHAR": "varchar", "DATE": "date", "INTEGER": "integer", "BIGINT": "bigint",
            "DOUBLE": "double precision", "BOOLEAN": "boolean", "TIMESTAMP": "timestamp"}


@dataclass
class PgBuild:
    url: str
    seconds: float
    load_seconds: float
    results: list[dict]
    disabled: set[str]


@pytest.fixture(scope="module")
def duckdb_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pipeline's own build database after one nightly run: sources and every model, on DuckDB."""
    return nightly_on_generated_landing(tmp_path_factory.mktemp("dbt_pg")).build_db_path


@pytest.fixture(scope="module")
def postgres_build(pg_server: str, duckdb_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgBuild]:
    with new_database(pg_server) as db:
        started = time.monotonic()
        copy_sources(duckdb_build, db.publisher_url)
        loaded = time.monotonic()
        target = tmp_path_factory.mktemp("dbt_pg_target")
        result = subprocess.run(
            [DBT, "build", "--target", "postgres", "--project-dir", str(DBT_PROJECT_DIR),
             "--profiles-dir", str(DBT_PROJECT_DIR), "--target-path", str(target), "--log-path", str(target)],
            cwd=DBT_PROJECT_DIR, env={**os.environ, **dbt_env(db.publisher_url)},
            capture_output=True, text=True, timeout=1200)
        seconds = time.monotonic() - loaded
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
        results = json.loads((target / "run_results.json").read_text())["results"]
        manifest = json.loads((target / "manifest.json").read_text())
        disabled = {n["name"] for nodes in manifest["disabled"].values() for n in nodes
                    if n["resource_type"] == "model"}
        yield PgBuild(db.publisher_url, seconds, loaded - started, results, disabled)


def dbt_env(url: str) -> dict[str, str]:
    """profiles.yml's postgres output reads its connection from these."""
    parts = urlsplit(url)
    return {"C20P5_DBT_PG_HOST": parts.hostname or "127.0.0.1", "C20P5_DBT_PG_PORT": str(parts.port or 5432),
            "C20P5_DBT_PG_USER": PUBLISHER, "C20P5_DBT_PG_PASSWORD": PASSWORD,
            "C20P5_DBT_PG_DBNAME": parts.path.lstrip("/")}


def copy_sources(build_db: Path, url: str) -> None:
    """Every table dbt reads as a source (models/staging/_sources.yml), with its DuckDB column types."""
    sources = yaml.safe_load((DBT_PROJECT_DIR / "models" / "staging" / "_sources.yml").read_text())["sources"]
    duck = duckdb.connect(str(build_db), read_only=True)
    try:
        with psycopg.connect(url) as pg:
            for source in sources:
                pg.execute(f'create schema if not exists "{source["schema"]}"')
                for table in source["tables"]:
                    name = f'"{source["schema"]}"."{table["name"]}"'
                    columns = duck.execute(
                        "select column_name, data_type from information_schema.columns "
                        "where table_schema = ? and table_name = ? order by ordinal_position",
                        [source["schema"], table["name"]]).fetchall()
                    assert columns, f"source {name} missing from the DuckDB build"
                    pg.execute(f"create table {name} ("
                               + ", ".join(f'"{c}" {PG_TYPES[t]}' for c, t in columns) + ")")
                    rows = duck.execute(f"select * from {name}").fetchall()
                    with pg.cursor().copy(f"copy {name} from stdin") as copy:
                        for row in rows:
                            copy.write_row(row)
    finally:
        duck.close()


def built_models(build: PgBuild) -> set[str]:
    return {r["unique_id"].split(".")[-1] for r in build.results if r["unique_id"].startswith("model.")}


def test_dbt_builds_every_model_but_the_duckdb_only_ones_on_postgres(duckdb_build: Path, postgres_build: PgBuild) -> None:
    print(f"\nPostgreSQL: sources copied in {postgres_build.load_seconds:.1f} s, "
          f"dbt build --target postgres in {postgres_build.seconds:.1f} s")
    statuses = {r["unique_id"]: r["status"] for r in postgres_build.results}
    assert set(statuses.values()) <= {"success", "pass"}, {k: v for k, v in statuses.items() if v not in ("success", "pass")}
    kinds = {uid.split(".")[0] for uid in statuses}
    assert {"seed", "model", "test", "unit_test"} <= kinds, kinds
    assert postgres_build.disabled == DUCKDB_ONLY
    assert built_models(postgres_build) == duckdb_models(duckdb_build) - DUCKDB_ONLY


def duckdb_models(build_db: Path) -> set[str]:
    con = duckdb.connect(str(build_db), read_only=True)
    try:
        names = {r[0] for r in con.execute(
            f"select table_name from information_schema.tables where table_schema in {tuple(SCHEMAS[1:])}").fetchall()}
    finally:
        con.close()
    return names


def test_every_relation_built_on_postgres_equals_the_duckdb_build(duckdb_build: Path, postgres_build: PgBuild) -> None:
    duck = duckdb.connect(str(duckdb_build), read_only=True)
    try:
        with psycopg.connect(postgres_build.url) as pg:
            relations = pg.execute(
                "select table_schema, table_name from information_schema.tables where table_schema = any(%s) "
                "order by 1, 2", [list(SCHEMAS)]).fetchall()
            assert len(relations) >= len(built_models(postgres_build))
            compared = {}
            for schema, table in relations:
                pg_cursor = pg.execute(f'select * from "{schema}"."{table}"')
                pg_columns, pg_rows = [d.name for d in pg_cursor.description], pg_cursor.fetchall()
                duck_cursor = duck.execute(f'select * from "{schema}"."{table}"')
                duck_columns, duck_rows = [d[0] for d in duck_cursor.description], duck_cursor.fetchall()
                assert pg_columns == duck_columns, f"{schema}.{table}: columns differ"
                assert len(pg_rows) == len(duck_rows), f"{schema}.{table}: {len(pg_rows)} rows on PostgreSQL, {len(duck_rows)} on DuckDB"
                for pg_row, duck_row in zip(canonical(pg_rows), canonical(duck_rows)):
                    assert same_row(pg_row, duck_row), f"{schema}.{table}:\n  postgres {pg_row}\n  duckdb   {duck_row}"
                compared[table] = len(pg_rows)
    finally:
        duck.close()
    # the comparison is not vacuous: the marts hold rows, and the statistics are there
    assert compared["fct_indicator_values"] > 10_000 and compared["int_coded_events"] > 10_000
    with psycopg.connect(postgres_build.url) as pg:
        dsr, rates = pg.execute(
            "select count(*) filter (where indicator_id like '%%\\_DSR' and lower_ci is not null), "
            "count(*) filter (where unit <> '%%' and numerator >= 10 and lower_ci is not null) "
            "from marts.fct_indicator_values").fetchone()
    assert dsr > 20 and rates > 20, (dsr, rates)


def canonical(rows: list[tuple]) -> list[tuple]:
    """Rows with engine-neutral values, in one order: numbers as floats, dates as text."""
    clean = [tuple(_value(v) for v in row) for row in rows]
    return sorted(clean, key=lambda row: tuple(_sort_key(v) for v in row))


def _value(v: object) -> object:
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float, Decimal)):
        return float(v)
    if isinstance(v, (dt.date, dt.datetime)):
        return v.isoformat()
    raise TypeError(f"no canonical form for {type(v).__name__} {v!r}")


def _sort_key(v: object) -> tuple:
    if v is None:
        return (0, "")
    if isinstance(v, float):  # rounded, so values equal to 1e-9 sort together
        return (1, "nan" if math.isnan(v) else f"{v:.6g}")
    return (2, str(v))


def same_row(a: tuple, b: tuple) -> bool:
    return all(x == y or (isinstance(x, float) and isinstance(y, float) and math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12))
               for x, y in zip(a, b))
