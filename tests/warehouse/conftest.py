"""A real PostgreSQL server for the warehouse tests, and both targets behind one small interface.

The server is C20P5_TEST_PG_URL when set (a superuser, or a role with CREATEROLE and CREATEDB;
the tests create and drop their own databases and login users there, and leave the c20p5_* group
roles behind). Otherwise a throwaway cluster is made with initdb/pg_ctl on a free loopback port in a
temporary directory for the session, run as an unprivileged OS user when the tests run as root
(initdb refuses root), and removed afterwards.
"""
from __future__ import annotations

import datetime as dt
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pandas as pd
import psycopg
import pytest

from assets.warehouse import Publication, connect_warehouse, publish_duckdb, publish_postgres

PUBLISHER = "c20p5_test_publisher"  # owns the test databases: a LOGIN CREATEROLE role, not a superuser
PASSWORD = "c20p5-test"             # works with trust and with password authentication alike
# One statement across tables and schemas: a reader sees every part from the same publication or none.
SIGNATURE = """select (select max(publication_id) from evaluation.publications) as publication,
    (select max(publication_id) from evaluation.indicator_values) as latest,
    (select count(*) from evaluation.indicator_values) as cells,
    (select sum(numerator) from evaluation.indicator_values_history) as history_total,
    (select max(publication_id) from evaluation.inequality_summary) as summary,
    (select max(publication_id) from site_dd.indicator_values) as site_latest,
    (select sum(denominator) from site_dd.indicator_values) as site_total"""


# --- the server ---------------------------------------------------------------------------------

def _pg_bindir() -> Path:
    found = shutil.which("initdb")
    if found and (Path(found).resolve().parent / "pg_ctl").exists():
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not candidates:
        pytest.fail("PostgreSQL server binaries not found (initdb): install them (Debian: apt-get install -y "
                    "postgresql, as .ci/run does) or set C20P5_TEST_PG_URL to a server the tests may use")
    return Path(candidates[-1]).parent


def _as_unprivileged(root: Path) -> list[str]:
    """initdb refuses to run as root: run the cluster as `postgres` (or `nobody`) owning its directory."""
    if os.geteuid() != 0:
        return []
    user = "postgres" if _user_exists("postgres") else "nobody"
    for path in [root, *root.rglob("*")]:
        shutil.chown(path, user=user, group=pwd.getpwnam(user).pw_gid)
    return ["runuser", "-u", user, "--"]


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], cwd: Path) -> None:
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=120)
    if result.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{result.stdout}\n{result.stderr}")



@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """An admin URL (superuser or CREATEROLE + CREATEDB) on a real server; the publisher role exists."""
    url = os.environ.get("C20P5_TEST_PG_URL")
    if url:
        _ensure_publisher(url)
        yield url
        return
    bindir, root = _pg_bindir(), Path(tempfile.mkdtemp(prefix="c20p5-pg-"))
    data = root / "data"
    try:
        as_user = _as_unprivileged(root)
        _run(as_user + [bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                        "--locale=C", "--no-sync"], cwd=root)
        url = _start(as_user, bindir, root)
        try:
            _ensure_publisher(url)
            yield url
        finally:
            _run(as_user + [bindir / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop"], cwd=root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _start(as_user: list[str], bindir: Path, root: Path) -> str:
    """Start on a free port; retry if another process took the port in between."""
    for attempt in range(3):
        port = _free_port()
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={root} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        try:
            _run(as_user + [bindir / "pg_ctl", "-D", root / "data", "-l", root / "server.log", "-w", "-o", options,
                            "start"], cwd=root)
            return f"postgresql://postgres@127.0.0.1:{port}/postgres"
        except RuntimeError:
            if attempt == 2:
                raise RuntimeError((root / "server.log").read_text()) from None
    raise AssertionError("unreachable")


def _ensure_publisher(admin_url: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as con:
        if not con.execute("select 1 from pg_roles where rolname = %s", [PUBLISHER]).fetchone():
            con.execute(f"create role {PUBLISHER} login createrole password '{PASSWORD}'")


def with_login(url: str, user: str, password: str = PASSWORD, dbname: str | None = None) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(user)}:{quote(password)}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, f"/{dbname}" if dbname else parts.path, parts.query, ""))


# --- one database per test ----------------------------------------------------------------------

@dataclass
class PgDatabase:
    admin_url: str       # the server's admin, connected to this database
    publisher_url: str   # C20P5_WAREHOUSE_URL for this database
    name: str
    users: list[str] = field(default_factory=list)

    def login_as(self, group_role: str) -> str:
        """A new LOGIN user that is a member of `group_role`, as a DBA would make one; returns its URL."""
        user = f"t_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.admin_url, autocommit=True) as con:
            con.execute(f"create role {user} login password '{PASSWORD}' in role {group_role}")
        self.users.append(user)
        return with_login(self.admin_url, user)


@contextmanager
def new_database(server_url: str) -> Iterator[PgDatabase]:
    """An empty database owned by the publisher role; dropped afterwards with the login users made for it."""
    name = f"c20p5_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as con:
        con.execute(f"create database {name} owner {PUBLISHER}")
    parts = urlsplit(server_url)
    admin = urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))
    db = PgDatabase(admin, with_login(server_url, PUBLISHER, dbname=name), name)
    try:
        yield db
    finally:
        with psycopg.connect(server_url, autocommit=True) as con:
            con.execute(f"drop database {name} with (force)")
            for user in db.users:
                con.execute(f"drop role if exists {user}")


@pytest.fixture
def pg_db(pg_server: str) -> Iterator[PgDatabase]:
    with new_database(pg_server) as db:
        yield db


# --- both targets behind one interface ----------------------------------------------------------

class DuckTarget:
    name = "duckdb"

    def __init__(self, path: Path):
        self.path = path

    def publish(self, pub: Publication, retention: int = 0) -> int | None:
        return publish_duckdb(self.path, pub, retention)

    def query(self, sql: str) -> pd.DataFrame:
        return self.query_many([sql])[0]

    def query_many(self, sqls: list[str]) -> list[pd.DataFrame]:
        con = connect_warehouse(self.path)  # a fresh connection: a held one keeps reading the old file
        try:
            return [con.execute(sql).df() for sql in sqls]
        finally:
            con.close()

    def execute(self, sql: str) -> None:
        """Change the warehouse behind the publisher's back (as someone with write access could)."""
        con = connect_warehouse(self.path, read_only=False)
        try:
            con.execute(sql)
        finally:
            con.close()

    def tables(self) -> list[str]:
        frame = self.query("""select table_schema || '.' || table_name as t from information_schema.tables
                              where table_catalog = 'warehouse' order by 1""")
        return list(frame["t"])


class PgTarget:
    name = "postgresql"

    def __init__(self, db: PgDatabase):
        self.db = db

    def publish(self, pub: Publication, retention: int = 0) -> int | None:
        return publish_postgres(self.db.publisher_url, pub, retention)

    def query(self, sql: str) -> pd.DataFrame:
        return self.query_many([sql])[0]

    def query_many(self, sqls: list[str]) -> list[pd.DataFrame]:
        with psycopg.connect(self.db.publisher_url) as con:
            return [_frame(con.execute(sql)) for sql in sqls]

    def execute(self, sql: str) -> None:
        with psycopg.connect(self.db.publisher_url, autocommit=True) as con:
            con.execute(sql)

    def tables(self) -> list[str]:
        frame = self.query("""select table_schema || '.' || table_name as t from information_schema.tables
                              where table_schema = 'evaluation' or table_schema like 'site\\_%' order by 1""")
        return list(frame["t"])


def pg_frame(url: str, sql: str) -> pd.DataFrame:
    with psycopg.connect(url) as con:
        return _frame(con.execute(sql))


def _frame(cur: psycopg.Cursor) -> pd.DataFrame:
    return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])


Target = DuckTarget | PgTarget


@pytest.fixture(params=["duckdb", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if request.param == "duckdb":
        return DuckTarget(tmp_path / "warehouse" / "evaluation.duckdb")
    return PgTarget(request.getfixturevalue("pg_db"))


# --- comparing what the two targets hold --------------------------------------------------------

def canonical(frame: pd.DataFrame) -> list[tuple[str, ...]]:
    """Rows as text, nulls marked, sorted: equal across targets when the published content is equal."""
    return sorted(tuple(_text(v) for v in row) for row in frame.itertuples(index=False))


def _text(value: object) -> str:
    if value is None or (not isinstance(value, (str, bytes)) and pd.isna(value)):
        return "<null>"
    if isinstance(value, (pd.Timestamp, dt.datetime)):
        stamp = pd.Timestamp(value)
        return stamp.date().isoformat() if stamp == stamp.normalize() else stamp.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float):  # DuckDB hands back a bigint column holding nulls as floats
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    return str(value.item() if hasattr(value, "item") else value)


def snapshot(t: Target) -> dict[str, list[tuple[str, ...]]]:
    names = t.tables()
    return {n: canonical(f) for n, f in zip(names, t.query_many([f"select * from {n}" for n in names]))}
