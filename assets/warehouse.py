"""The shared warehouse (SPEC §8): the only code that writes it.

What is published is decided once, from the `Publication`, in `_write`: the gate, history rows keyed
by publication_id, the catalogue, the latest tables, the site schemas and retention. Each target
only supplies how to run SQL and load a frame (a `_Session`):

- DuckDB (a file path, the embedded default): the publication is written into a copy of the current
  file beside it, then swapped in with an atomic rename. A reader that has the old file open keeps
  reading the old publication (its inode stays alive); new readers open the new one; a crash before
  the rename leaves the old file untouched (the stray copy is removed next time).
- PostgreSQL (a postgresql:// URL, the shared server): one transaction through psycopg 3. New rows
  arrive by COPY; latest tables and site schemas are refreshed with DELETE + INSERT, plain MVCC
  writes, so a reader's statement sees the old or the new publication, never a mix, and never waits
  for the publisher. Roles, grants and row-level security are brought up to date in the same
  transaction. See docs/warehouse.md.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import duckdb
import pandas as pd
import psycopg

from checks.disclosure import assert_publishable
from orchestration.settings import SITE_CODE_RE, SettingsError, is_postgres_url

SCHEMA = "evaluation"
SITE_ONLY_BREAKDOWNS = ("practice", "pcn")
RETENTION_ENV = "C20P5_RETENTION_PUBLICATIONS"
EVALUATOR_ROLE, BI_ROLE, SITE_ROLE_PREFIX = "c20p5_evaluator", "c20p5_bi", "c20p5_site_"

Spec = tuple[tuple[str, str], ...]  # (column, type) in a spelling both DuckDB and PostgreSQL accept
BIGINT, TEXT, FLOAT, DATE, TIMESTAMP, BOOL = "bigint", "varchar", "double precision", "date", "timestamp", "boolean"

INDICATOR_VALUE_SPEC: Spec = (
    ("publication_id", BIGINT), ("site_code", TEXT), ("period_end", DATE), ("indicator_id", TEXT),
    ("breakdown", TEXT), ("breakdown_value", TEXT), ("numerator", BIGINT), ("denominator", BIGINT),
    ("value", FLOAT), ("lower_ci", FLOAT), ("upper_ci", FLOAT), ("unit", TEXT), ("suppressed", BOOL),
    ("target", FLOAT), ("comparator_value", FLOAT))
INEQUALITY_SPEC: Spec = (
    ("publication_id", BIGINT), ("site_code", TEXT), ("period_end", DATE), ("indicator_id", TEXT),
    ("core20_value", FLOAT), ("not_core20_value", FLOAT), ("absolute_gap", FLOAT), ("relative_gap", FLOAT),
    ("sii", FLOAT), ("sii_lower_ci", FLOAT), ("sii_upper_ci", FLOAT), ("rii", FLOAT), ("rii_lower_ci", FLOAT),
    ("rii_upper_ci", FLOAT), ("spc_variation", TEXT), ("spc_assurance", TEXT))
DATA_QUALITY_SPEC: Spec = (
    ("publication_id", BIGINT), ("run_id", TEXT), ("site_code", TEXT), ("period_end", TEXT), ("stage", TEXT),
    ("check_name", TEXT), ("severity", TEXT), ("passed", BOOL), ("file", TEXT), ("row", BIGINT),
    ("column", TEXT), ("message", TEXT))
PUBLICATIONS_SPEC: Spec = (
    ("publication_id", BIGINT), ("published_at", TIMESTAMP), ("code_version", TEXT), ("content_hash", TEXT),
    ("input_checksums", TEXT), ("sites_published", TEXT), ("sites_withheld", TEXT), ("run_id", TEXT))
INDICATOR_VALUE_COLUMNS = [c for c, _ in INDICATOR_VALUE_SPEC]
INEQUALITY_COLUMNS = [c for c, _ in INEQUALITY_SPEC]
DATA_QUALITY_COLUMNS = [c for c, _ in DATA_QUALITY_SPEC]

# Append-only tables: never dropped or rewritten, only pruned by retention.
KEPT_TABLES: dict[str, Spec] = {"publications": PUBLICATIONS_SPEC, "indicator_values_history": INDICATOR_VALUE_SPEC,
                                "inequality_summary_history": INEQUALITY_SPEC, "data_quality": DATA_QUALITY_SPEC}
# Tables keyed by site_code: row-level security on PostgreSQL, and what a site role may read nationally.
SITE_KEYED_TABLES = ("indicator_values", "inequality_summary", "indicator_values_history",
                     "inequality_summary_history", "data_quality", "sites")


class WarehouseContractError(RuntimeError):
    """The warehouse holds a table whose columns differ from this code's contract version."""


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


# ---------------------------------------------------------------------------------------------
# What is published: one code path for both targets
# ---------------------------------------------------------------------------------------------

class _Session(Protocol):
    """How one target runs SQL (in its own transaction) and appends a frame to a table."""

    def rows(self, statement: str) -> list[tuple]: ...

    def frame(self, statement: str) -> pd.DataFrame: ...

    def load(self, table: str, frame: pd.DataFrame, spec: Spec) -> None: ...


def check_publication(pub: Publication) -> None:
    """The gate (checks/disclosure.py) before any target is touched, and site codes safe as SQL names."""
    for table, frame in _published_frames(pub).items():
        assert_publishable(table, frame)
    for code in _codes_in(pub):
        _site_code(code)


def retention_from_env(env: dict[str, str] | None = None) -> int:
    """C20P5_RETENTION_PUBLICATIONS: 0 (default) keeps every publication; N keeps the newest N and every
    older one whose rows they still use. Anything else is refused rather than guessed at."""
    raw = (os.environ if env is None else env).get(RETENTION_ENV, "").strip() or "0"
    if not raw.isdigit():
        raise SettingsError(f"{RETENTION_ENV} must be a whole number >= 0 (0 keeps every publication), not {raw!r}")
    return int(raw)


def _write(s: _Session, pub: Publication, retention: int) -> int | None:
    """Append `pub` as a new publication and refresh everything derived from the history."""
    for table, spec in KEPT_TABLES.items():
        _ensure_table(s, SCHEMA, table, spec, derived=False)
    last = s.rows(f"select content_hash from {SCHEMA}.publications order by publication_id desc limit 1")
    if last and last[0][0] == pub.content_hash and not pub.withheld:
        return None
    publication_id = int(s.rows(f"select coalesce(max(publication_id), 0) + 1 from {SCHEMA}.publications")[0][0])
    s.load(f"{SCHEMA}.indicator_values_history", pub.indicator_values.assign(publication_id=publication_id),
           INDICATOR_VALUE_SPEC)
    s.load(f"{SCHEMA}.inequality_summary_history", pub.inequality_summary.assign(publication_id=publication_id),
           INEQUALITY_SPEC)
    s.load(f"{SCHEMA}.data_quality", pub.data_quality.assign(publication_id=publication_id), DATA_QUALITY_SPEC)
    s.load(f"{SCHEMA}.publications", _publication_row(pub, publication_id), PUBLICATIONS_SPEC)
    _replace_frame(s, SCHEMA, "indicators", pub.indicators)
    _replace_frame(s, SCHEMA, "sites", pub.sites)
    _prune(s, retention)
    _refresh_latest(s)
    _refresh_site_schemas(s, _published_site_codes(s, pub), frame_spec(pub.indicators), frame_spec(pub.sites))
    return publication_id


def _published_frames(pub: Publication) -> dict[str, pd.DataFrame]:
    return {"indicator_values": pub.indicator_values, "inequality_summary": pub.inequality_summary,
            "indicators": pub.indicators, "sites": pub.sites, "data_quality": pub.data_quality}


def _codes_in(pub: Publication) -> set[str]:
    return {str(c) for f in (pub.indicator_values, pub.inequality_summary, pub.sites) for c in f.get("site_code", [])}


def _site_code(code: str) -> str:
    """Site codes become schema and role names: only the registry's ^[a-z0-9_]{2,32}$ is let through."""
    if not SITE_CODE_RE.match(code):
        raise ValueError(f"site_code {code!r} is not a valid site code (^[a-z0-9_]{{2,32}}$); nothing was published")
    return code


def _publication_row(pub: Publication, publication_id: int) -> pd.DataFrame:
    return pd.DataFrame([{
        "publication_id": publication_id,
        "published_at": datetime.now(timezone.utc).replace(tzinfo=None),
        "code_version": pub.code_version,
        "content_hash": pub.content_hash,
        "input_checksums": json.dumps(pub.input_checksums, sort_keys=True),
        "sites_published": json.dumps([f"{s}:{p}" for s, p in sorted(pub.published)]),
        "sites_withheld": json.dumps(sorted(pub.withheld, key=lambda w: (w["site_code"], w["period_end"]))),
        "run_id": pub.run_id,
    }])


def frame_spec(frame: pd.DataFrame) -> Spec:
    """Column types for the catalogue tables (`indicators`, `sites`), whose columns come from dbt."""
    return tuple((str(c), _sql_type(frame[c])) for c in frame.columns)


def _sql_type(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return BOOL
    if pd.api.types.is_integer_dtype(series):
        return BIGINT
    if pd.api.types.is_float_dtype(series):
        return FLOAT
    if pd.api.types.is_datetime64_any_dtype(series):
        return TIMESTAMP
    return TEXT


def _q(column: str) -> str:
    return f'"{column}"'


def _cols(spec: Spec, prefix: str = "") -> str:
    return ", ".join(prefix + _q(c) for c, _ in spec)


_TYPE_ALIASES = {"character varying": TEXT, "double": FLOAT, "timestamp without time zone": TIMESTAMP}


def _existing_spec(s: _Session, schema: str, table: str) -> Spec:
    rows = s.rows(f"""select column_name, data_type from information_schema.columns
                      where table_catalog = current_database() and table_schema = '{schema}'
                        and table_name = '{table}' order by ordinal_position""")
    return tuple((name, _TYPE_ALIASES.get(kind.lower(), kind.lower())) for name, kind in rows)


def _ensure_table(s: _Session, schema: str, table: str, spec: Spec, derived: bool) -> None:
    """Create a table with exactly `spec`'s columns. A derived table (rebuilt every publication) with
    other columns is recreated; a kept table never is: that needs a new contract version."""
    existing = _existing_spec(s, schema, table)
    if existing == spec:
        return
    if existing and not derived:
        raise WarehouseContractError(
            f"{schema}.{table} has columns {existing}, this code publishes {spec}: a contract change needs "
            f"a migration (see docs/warehouse.md, contract versions); nothing was published")
    s.rows(f"create schema if not exists {schema}")
    if existing:
        s.rows(f"drop table {schema}.{table}")
    key = ", primary key (publication_id)" if table == "publications" and not derived else ""
    s.rows(f"create table {schema}.{table} ({', '.join(f'{_q(c)} {t}' for c, t in spec)}{key})")


def _replace_frame(s: _Session, schema: str, table: str, frame: pd.DataFrame) -> None:
    spec = frame_spec(frame)
    _ensure_table(s, schema, table, spec, derived=True)
    s.rows(f"delete from {schema}.{table}")
    s.load(f"{schema}.{table}", frame, spec)


def _refill(s: _Session, schema: str, table: str, spec: Spec, select: str) -> None:
    _ensure_table(s, schema, table, spec, derived=True)
    s.rows(f"delete from {schema}.{table}")
    s.rows(f"insert into {schema}.{table} ({_cols(spec)}) {select}")


def _latest_select(table: str, spec: Spec, where: str, order: str) -> str:
    """The latest rows per site and period: a withheld site-period keeps its last good publication."""
    return f"""select {_cols(spec, 'h.')} from {SCHEMA}.{table}_history h
        join (select site_code, period_end, max(publication_id) as publication_id
              from {SCHEMA}.{table}_history group by site_code, period_end) latest
          on h.site_code = latest.site_code and h.period_end = latest.period_end
         and h.publication_id = latest.publication_id
        where {where} order by {order}"""


_IV_ORDER = "h.site_code, h.period_end, h.indicator_id, h.breakdown, h.breakdown_value"
_INEQ_ORDER = "h.site_code, h.period_end, h.indicator_id"
_NATIONAL = f"h.breakdown not in ({', '.join(repr(b) for b in SITE_ONLY_BREAKDOWNS)})"  # site schemas only


def _refresh_latest(s: _Session) -> None:
    _refill(s, SCHEMA, "indicator_values", INDICATOR_VALUE_SPEC,
            _latest_select("indicator_values", INDICATOR_VALUE_SPEC, _NATIONAL, _IV_ORDER))
    _refill(s, SCHEMA, "inequality_summary", INEQUALITY_SPEC,
            _latest_select("inequality_summary", INEQUALITY_SPEC, "true", _INEQ_ORDER))


def _published_site_codes(s: _Session, pub: Publication) -> list[str]:
    """Sites in this publication's registry, and any site with rows in the history."""
    history = {r[0] for r in s.rows(f"select distinct site_code from {SCHEMA}.indicator_values_history")}
    return sorted(_site_code(c) for c in history | {str(c) for c in pub.sites["site_code"]})


def _refresh_site_schemas(s: _Session, codes: list[str], indicators: Spec, sites: Spec) -> None:
    """`site_<code>`: the same tables restricted to one site, with the practice and PCN breakdowns."""
    publications = s.frame(f"select * from {SCHEMA}.publications order by publication_id")
    for code in codes:
        schema, mine = f"site_{code}", f"h.site_code = '{code}'"
        _refill(s, schema, "indicator_values", INDICATOR_VALUE_SPEC,
                _latest_select("indicator_values", INDICATOR_VALUE_SPEC, mine, _IV_ORDER))
        _refill(s, schema, "inequality_summary", INEQUALITY_SPEC,
                _latest_select("inequality_summary", INEQUALITY_SPEC, mine, _INEQ_ORDER))
        _refill(s, schema, "data_quality", DATA_QUALITY_SPEC,
                f"select {_cols(DATA_QUALITY_SPEC)} from {SCHEMA}.data_quality h where {mine} "
                f"order by publication_id")
        _refill(s, schema, "sites", sites, f"select {_cols(sites)} from {SCHEMA}.sites h where {mine}")
        _refill(s, schema, "indicators", indicators, f"select {_cols(indicators)} from {SCHEMA}.indicators")
        _ensure_table(s, schema, "publications", PUBLICATIONS_SPEC, derived=True)
        s.rows(f"delete from {schema}.publications")
        s.load(f"{schema}.publications", site_publications(publications, code), PUBLICATIONS_SPEC)


def site_publications(publications: pd.DataFrame, code: str) -> pd.DataFrame:
    """A site's view of `publications`: its own periods, reasons and checksums, not other sites'."""
    def mine(key: str) -> bool:
        return key.startswith(f"{code}:")
    out = publications.copy()
    out["input_checksums"] = [json.dumps({k: v for k, v in json.loads(x or "{}").items()
                                          if k == "reference" or mine(k)}, sort_keys=True)
                              for x in out["input_checksums"]]
    out["sites_published"] = [json.dumps([e for e in json.loads(x or "[]") if mine(e)])
                              for x in out["sites_published"]]
    out["sites_withheld"] = [json.dumps([w for w in json.loads(x or "[]") if w.get("site_code") == code])
                             for x in out["sites_withheld"]]
    return out


def prunable_publications(s: _Session, retention: int) -> list[int]:
    """Publications retention may delete: not among the newest N, and holding no rows that the view of
    one of those N still shows (which includes every site-period's current latest rows)."""
    if retention <= 0:
        return []
    every = [int(r[0]) for r in s.rows(f"select publication_id from {SCHEMA}.publications order by 1 desc")]
    newest = every[:retention]
    if len(every) <= retention:
        return []
    in_use: set[int] = set()
    for table in ("indicator_values_history", "inequality_summary_history"):
        in_use |= {int(r[0]) for r in s.rows(f"""select max(publication_id) from {SCHEMA}.{table}
            where publication_id <= {min(newest)} group by site_code, period_end""")}
    return sorted(set(every) - set(newest) - in_use)


def _prune(s: _Session, retention: int) -> None:
    doomed = prunable_publications(s, retention)
    if not doomed:
        return
    ids = ", ".join(str(i) for i in doomed)
    for table in KEPT_TABLES:
        s.rows(f"delete from {SCHEMA}.{table} where publication_id in ({ids})")


# ---------------------------------------------------------------------------------------------
# DuckDB: a private copy of the file, then an atomic rename
# ---------------------------------------------------------------------------------------------

class _DuckSession:
    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con

    def rows(self, statement: str) -> list[tuple]:
        result = self.con.execute(statement)
        return result.fetchall() if result.description else []

    def frame(self, statement: str) -> pd.DataFrame:
        return self.con.execute(statement).df()

    def load(self, table: str, frame: pd.DataFrame, spec: Spec) -> None:
        if frame.empty:
            return
        self.con.register("_incoming", frame[[c for c, _ in spec]])  # DuckDB reads NaN as NULL
        try:
            self.con.execute(f"insert into {table} ({_cols(spec)}) select {_cols(spec)} from _incoming")
        finally:
            self.con.unregister("_incoming")


def publish_duckdb(path: Path, pub: Publication, retention: int | None = None) -> int | None:
    """Write `pub` as a new publication; returns its id, or None when nothing changed."""
    check_publication(pub)
    retention = retention_from_env() if retention is None else retention
    path.parent.mkdir(parents=True, exist_ok=True)
    with _publisher_lock(path):
        _remove_stray_copies(path)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            if path.exists():
                shutil.copy2(path, tmp)  # inside the try: a copy that fails part way (disk full) is removed
            publication_id = _write_copy(tmp, pub, retention)
            if publication_id is None:
                tmp.unlink()
                return None
            _fsync(tmp)
            os.replace(tmp, path)
            _fsync(path.parent)
            return publication_id
        except BaseException:
            _remove_copy(tmp)
            raise


def _write_copy(tmp: Path, pub: Publication, retention: int) -> int | None:
    con = connect_warehouse(tmp, read_only=False)
    try:
        con.execute("begin")
        publication_id = _write(_DuckSession(con), pub, retention)
        con.execute("commit")
        con.execute("checkpoint")
        return publication_id
    finally:
        con.close()


def connect_warehouse(path: Path | str, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """Open a warehouse file as catalog `warehouse`. The file is named evaluation.duckdb and holds
    schema `evaluation`; opened directly, DuckDB names the catalog `evaluation` too and rejects
    `evaluation.<table>` as ambiguous, so readers attach it under another name (see docs/warehouse.md)."""
    con = duckdb.connect()
    mode = " (READ_ONLY)" if read_only else ""
    con.execute(f"attach '{path}' as warehouse{mode}")
    con.execute("use warehouse")
    return con


def read_queries(url: str, queries: dict[str, str]) -> dict[str, pd.DataFrame]:
    """Run read-only queries on the warehouse (a DuckDB file or postgresql://), one consistent snapshot:
    one connection to the DuckDB file (the publisher swaps it atomically), one REPEATABLE READ
    transaction on PostgreSQL. A query on a table not published yet gives an empty frame; so does
    every query when the DuckDB file does not exist."""
    if is_postgres_url(url):
        return _read_postgres(url, queries)
    if not Path(url).exists():
        return {name: pd.DataFrame() for name in queries}
    con = connect_warehouse(url)
    try:
        return {name: _frame_or_empty(con, sql) for name, sql in queries.items()}
    finally:
        con.close()


def _frame_or_empty(con: duckdb.DuckDBPyConnection, sql: str) -> pd.DataFrame:
    try:
        return con.execute(sql).df()
    except duckdb.CatalogException:  # nothing published yet
        return pd.DataFrame()


def _read_postgres(url: str, queries: dict[str, str]) -> dict[str, pd.DataFrame]:
    out = {}
    with psycopg.connect(url) as pg:
        pg.isolation_level, pg.read_only = psycopg.IsolationLevel.REPEATABLE_READ, True
        with pg.transaction():
            for name, sql in queries.items():
                try:
                    with pg.transaction(), pg.cursor() as cur:  # a savepoint: a missing table spoils only it
                        cur.execute(sql)
                        out[name] = pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])
                except psycopg.errors.UndefinedTable:
                    out[name] = pd.DataFrame()
    return out


@contextmanager
def _publisher_lock(path: Path) -> Iterator[None]:
    """One DuckDB publisher at a time: two would both copy the same file and the later rename would
    silently drop the other's publication. Readers never take this lock."""
    with open(path.with_name(f".{path.name}.lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_copy(tmp: Path) -> None:
    """A copy and the write-ahead log DuckDB keeps beside it (`<copy>.wal`) while it is being written."""
    tmp.unlink(missing_ok=True)
    tmp.with_name(f"{tmp.name}.wal").unlink(missing_ok=True)


def _remove_stray_copies(path: Path) -> None:
    """What a publisher killed part way left (a copy, its WAL, or both). Called under the publisher lock,
    so no other publisher is writing one."""
    for stray in path.parent.glob(f".{path.name}.*.tmp*"):
        if stray.name.endswith((".tmp", ".tmp.wal")):
            stray.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# PostgreSQL: one transaction, COPY in, roles and row-level security kept up to date
# ---------------------------------------------------------------------------------------------

_PUBLISH_LOCK = 0x0C20_9505  # pg_advisory_xact_lock key: publishers of one database take turns


class _PgSession:
    def __init__(self, cur: psycopg.Cursor):
        self.cur = cur

    def rows(self, statement: str) -> list[tuple]:
        self.cur.execute(statement)  # no parameters: psycopg sends the text as is
        return self.cur.fetchall() if self.cur.description else []

    def frame(self, statement: str) -> pd.DataFrame:
        rows = self.rows(statement)
        return pd.DataFrame(rows, columns=[d.name for d in self.cur.description])

    def load(self, table: str, frame: pd.DataFrame, spec: Spec) -> None:
        if frame.empty:
            return
        with self.cur.copy(f"copy {table} ({_cols(spec)}) from stdin") as copy:
            for row in zip(*(_python_values(frame[c], kind) for c, kind in spec)):
                copy.write_row(row)


def _python_values(series: pd.Series, kind: str) -> list[Any]:
    """Plain Python values for COPY; NaN, NA and NaT become NULL, as DuckDB reads them."""
    convert = {BIGINT: int, FLOAT: float, BOOL: bool, TEXT: str,
               DATE: lambda v: pd.Timestamp(v).date(), TIMESTAMP: lambda v: pd.Timestamp(v).to_pydatetime()}[kind]
    return [None if pd.isna(v) else convert(v) for v in series.tolist()]


def publish_postgres(url: str, pub: Publication, retention: int | None = None) -> int | None:
    """Write `pub` as a new publication in one transaction; returns its id, or None when nothing changed.
    Roles and grants are refreshed either way, in the same transaction."""
    check_publication(pub)
    retention = retention_from_env() if retention is None else retention
    # Commits on leaving the block, rolls back on any error. UTF8 so that text is str even on a
    # SQL_ASCII database.
    with psycopg.connect(url, client_encoding="UTF8") as conn:
        with conn.cursor() as cur:
            cur.execute("select pg_advisory_xact_lock(%s)", [_PUBLISH_LOCK])
            session = _PgSession(cur)
            publication_id = _write(session, pub, retention)
            _index_history(session)
            grant_access(session, _site_schemas(session, pub))
    return publication_id


def _index_history(s: _Session) -> None:
    """The latest rule groups the history by site-period; readers pin a publication by id. Created once
    (CREATE INDEX blocks writers while it runs, not readers)."""
    existing = {r[0] for r in s.rows(f"select indexname from pg_indexes where schemaname = '{SCHEMA}'")}
    for table in ("indicator_values_history", "inequality_summary_history"):
        for name, columns in ((f"{table}_site_period", "site_code, period_end, publication_id"),
                              (f"{table}_publication", "publication_id")):
            if name not in existing:
                s.rows(f"create index {name} on {SCHEMA}.{table} ({columns})")


def _site_schemas(s: _Session, pub: Publication) -> list[str]:
    """Codes of the site schemas this publication (or an earlier one) wrote."""
    existing = {r[0] for r in s.rows("select nspname from pg_namespace")}
    return [c for c in _published_site_codes(s, pub) if f"site_{c}" in existing]


def site_role(code: str) -> str:
    return SITE_ROLE_PREFIX + _site_code(code)


def grant_access(s: _Session, codes: list[str]) -> None:
    """Group roles (NOLOGIN; the DBA grants them to login users): the evaluator reads every site, BI reads
    schema evaluation, a site role reads its own rows and schema. Only the publisher (the owner) writes."""
    site_roles = [site_role(c) for c in codes]
    for role in (EVALUATOR_ROLE, BI_ROLE, *site_roles):
        if not s.rows(f"select 1 from pg_roles where rolname = '{role}'"):
            s.rows(f"create role {role} nologin")
    schemas = [SCHEMA, *(f"site_{c}" for c in codes)]
    _revoke_writes(s, schemas, [EVALUATOR_ROLE, BI_ROLE, *site_roles])
    everyone = ", ".join([EVALUATOR_ROLE, BI_ROLE, *site_roles])
    s.rows(f"grant usage on schema {SCHEMA} to {everyone}")
    s.rows(f"grant select on all tables in schema {SCHEMA} to {EVALUATOR_ROLE}, {BI_ROLE}")
    if site_roles:
        tables = ", ".join(f"{SCHEMA}.{t}" for t in (*SITE_KEYED_TABLES, "indicators"))
        s.rows(f"grant select on {tables} to {', '.join(site_roles)}")
    for table in SITE_KEYED_TABLES:
        _row_security(s, table)
    for code in codes:
        s.rows(f"grant usage on schema site_{code} to {site_role(code)}, {EVALUATOR_ROLE}")
        s.rows(f"grant select on all tables in schema site_{code} to {site_role(code)}, {EVALUATOR_ROLE}")


def _revoke_writes(s: _Session, schemas: list[str], roles: list[str]) -> None:
    """Start every publish from nothing: no rights for PUBLIC or our roles, and no write right that
    anyone but the owner was given by hand."""
    names = ", ".join(f"'{n}'" for n in schemas)
    stray = s.rows(f"""select distinct a.grantee::regrole::text from pg_class c
        join pg_namespace n on n.oid = c.relnamespace, aclexplode(c.relacl) a
        where n.nspname in ({names}) and a.grantee not in (0, c.relowner) and a.privilege_type <> 'SELECT'""")
    grantees = ", ".join(["public", *roles, *(r[0] for r in stray)])
    for schema in schemas:
        s.rows(f"revoke all on schema {schema} from {grantees}")
        s.rows(f"revoke all on all tables in schema {schema} from {grantees}")


def _row_security(s: _Session, table: str) -> None:
    """Site roles see only their own site's rows. The policies check role membership at query time, so
    a new site needs only its role, no new policy. ENABLE and CREATE POLICY lock the table, so they run
    only when missing (the first publication, or after `sites` was rebuilt with new columns)."""
    qualified = f"{SCHEMA}.{table}"
    if not s.rows(f"select relrowsecurity from pg_class where oid = '{qualified}'::regclass")[0][0]:
        s.rows(f"alter table {qualified} enable row level security")
    policies = {r[0] for r in s.rows(f"""select policyname from pg_policies
                                          where schemaname = '{SCHEMA}' and tablename = '{table}'""")}
    if "c20p5_all_sites" not in policies:
        s.rows(f"create policy c20p5_all_sites on {qualified} for select to {EVALUATOR_ROLE}, {BI_ROLE} using (true)")
    if "c20p5_own_site" not in policies:
        s.rows(f"""create policy c20p5_own_site on {qualified} for select to public using (site_code in (
            select substr(rolname, {len(SITE_ROLE_PREFIX) + 1}) from pg_catalog.pg_roles
            where starts_with(rolname, '{SITE_ROLE_PREFIX}') and pg_has_role(current_user, oid, 'USAGE')))""")
