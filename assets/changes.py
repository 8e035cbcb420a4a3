"""What changed in the marts since a consumer last looked at a site-period.

The Great Expectations checks and the publish both read the marts site-period by site-period. On an
incremental night almost every site-period is exactly as it was when they last validated or
published it, so each keeps a record in the build database (`audit.mart_seen`): per site-period, a
digest of the marts' rows it last passed, combined with a token of everything else its verdict
depended on (its own code; for the publish also the warehouse, and the publication holding the
site-period's rows there). A site-period whose digest matches the record needs no second look; any
other (new rows, new code, a warehouse changed by someone else, no record) is looked at in full.

The digest is an md5 over every row of both marts, each row cast to text with its column names, so
a changed value, an added or dropped row or column, or a changed type all change it.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import duckdb

from checks.expectations import MARTS  # the marts the checks and the publish read
from orchestration.settings import PROJECT_ROOT

SitePeriod = tuple[str, str]  # (site_code, period_end as YYYY-MM-DD)
SEEN_TABLE = "audit.mart_seen"


def mart_digests(con: duckdb.DuckDBPyConnection, sites: Iterable[str]) -> dict[SitePeriod, str]:
    """Digest of the marts' rows per site-period of `sites` (site-periods with rows in either mart)."""
    parts = [f"""select site_code, cast(period_end as varchar) as period_end, '{m}' as mart,
                        md5(string_agg(md5(t::varchar), '' order by md5(t::varchar))) as digest
                 from marts.{m} t where site_code in (select unnest($sites)) group by all""" for m in MARTS]
    rows = con.execute(f"""select site_code, period_end, md5(string_agg(mart || digest, '' order by mart))
                           from ({' union all '.join(parts)}) group by all""", {"sites": list(sites)}).fetchall()
    return {(s, p): d for s, p, d in rows}


def file_digest(paths: Iterable[Path], root: Path = PROJECT_ROOT) -> str:
    """A digest of files' names (relative to `root`, so not of where the checkout is) and contents."""
    h = hashlib.sha256()
    for path in paths:
        data = path.read_bytes()
        h.update(f"\0{path.relative_to(root)}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def code_token(*paths: str) -> str:
    """A consumer's own code (source files relative to the project root), in its token."""
    return file_digest(PROJECT_ROOT / p for p in paths)[:16]


def combine(digest: str, token: str) -> str:
    return hashlib.md5(f"{digest}|{token}".encode()).hexdigest()


def unseen(con: duckdb.DuckDBPyConnection, consumer: str, expected: Mapping[SitePeriod, str]) -> set[SitePeriod]:
    """The site-periods of `expected` whose recorded value for `consumer` differs (or is missing)."""
    _ensure(con)
    seen = dict(((s, p), v) for s, p, v in con.execute(
        f"select site_code, period_end, seen from {SEEN_TABLE} where consumer = ?", [consumer]).fetchall())
    return {k for k, v in expected.items() if seen.get(k) != v}


def remember(con: duckdb.DuckDBPyConnection, consumer: str, values: Mapping[SitePeriod, str]) -> None:
    """Record what `consumer` has now looked at and passed (replacing its earlier record of them)."""
    if not values:
        return
    _ensure(con)
    rows = [(consumer, s, p, v) for (s, p), v in sorted(values.items())]
    con.execute("begin")
    con.executemany(f"delete from {SEEN_TABLE} where consumer = ? and site_code = ? and period_end = ?",
                    [r[:3] for r in rows])
    con.executemany(f"insert into {SEEN_TABLE} values (?, ?, ?, ?, now())", rows)
    con.execute("commit")


def _ensure(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"""create table if not exists {SEEN_TABLE} (consumer varchar, site_code varchar,
                    period_end varchar, seen varchar, recorded_at timestamp)""")


def rows_of(con: duckdb.DuckDBPyConnection, mart: str, keys: Iterable[SitePeriod]):
    """A mart's rows of the given site-periods, as a data frame."""
    import pandas as pd
    wanted = pd.DataFrame(sorted(keys), columns=["site_code", "period_end"])
    con.register("_wanted", wanted)
    try:
        return con.execute(f"""select m.* from marts.{mart} m
                               semi join _wanted w on m.site_code = w.site_code
                                and cast(m.period_end as varchar) = w.period_end""").df()
    finally:
        con.unregister("_wanted")


__all__ = ["SitePeriod", "mart_digests", "file_digest", "code_token", "combine", "unseen", "remember", "rows_of",
           "SEEN_TABLE"]
