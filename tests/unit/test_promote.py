"""Loading a submission copies no row: its rows are staged once, in Parquet files outside the build
database, and `raw.<kind>` is a view of the loaded submissions' files. It must show exactly the
standing snapshot of each site-period (a re-delivery replaces the earlier one, whose files go), never
a submission still pending, and a build database from before the Parquet staging keeps its rows."""
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from assets.ingest import _ensure_audit, _mark_pending, _promote, ensure_raw_views
from assets.staging import Staging, sql_text
from assets.submissions import Submission
from checks.schemas import FILE_COLUMNS, FILE_KINDS

ROWS = 1_000  # per submission
COLS = FILE_COLUMNS["events"]


def _sub(site: str, period: str, version: str = "a") -> Submission:
    return Submission(site, period, Path(f"/nowhere/{site}/{period}"), f"{site}{period}{version}".ljust(64, "0"))


def _values(seed: int, kind: str = "events") -> str:
    return ", ".join(f'md5(cast(i * {seed} + {n} as varchar)) as "{c}"' for n, c in enumerate(FILE_COLUMNS[kind]))


def _stage(con: duckdb.DuckDBPyConnection, staging: Staging, sub: Submission, seed: int) -> None:
    """ROWS event rows of `sub` (and no rows of the other kinds) in its staged files, pending in
    audit.submissions, values differing from line to line."""
    _mark_pending(con, sub, "run")
    for kind in FILE_KINDS:
        path = staging.path(sub.submission_id, kind)
        path.parent.mkdir(parents=True, exist_ok=True)
        con.execute(f"""copy (select {sql_text(sub.submission_id)} as submission_id, {sql_text(sub.site_code)} as
                              site_code, cast({sql_text(sub.period_end)} as date) as period_end, {_values(seed, kind)}
                              from range({ROWS if kind == 'events' else 0}) t(i) order by i)
                        to {sql_text(str(path))} (format parquet)""")


def _rows(con: duckdb.DuckDBPyConnection, relation: str, where: str = "true") -> list[tuple]:
    return con.execute(f"""select site_code, cast(period_end as varchar), submission_id, "person_id", "code"
                           from {relation} where {where} order by all""").fetchall()


def _staged(staging: Staging, *subs: Submission) -> str:
    return staging.relation("events", [s.submission_id for s in subs])


@pytest.fixture()
def staging(tmp_path: Path) -> Staging:
    return Staging(tmp_path / "staged")


@pytest.fixture()
def con(tmp_path: Path, staging: Staging) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(tmp_path / "build.duckdb"))
    for schema in ("audit", "raw"):
        con.execute(f"create schema {schema}")
    _ensure_audit(con)
    ensure_raw_views(con, staging)
    yield con
    con.close()


def test_before_any_load_raw_is_empty_with_the_source_columns(con: duckdb.DuckDBPyConnection) -> None:
    for kind in FILE_KINDS:
        columns = [r[0] for r in con.execute(f"describe raw.{kind}").fetchall()]
        assert columns == ["site_code", "period_end", "submission_id", *FILE_COLUMNS[kind]]
        assert con.execute(f"select count(*) from raw.{kind}").fetchone() == (0,)


def test_raw_shows_the_loaded_submissions_staged_rows_without_copying_them(con: duckdb.DuckDBPyConnection,
                                                                           staging: Staging) -> None:
    loaded = [_sub("burnley_east", "2026-09"), _sub("burnley_east", "2026-10"), _sub("lsc", "2026-10")]
    elsewhere = _sub("blackpool_central", "2026-10")  # staged by another run: still pending
    for seed, sub in enumerate([loaded[0], elsewhere, *loaded[1:]], start=3):
        _stage(con, staging, sub, seed)
    expected = _rows(con, _staged(staging, *loaded))

    _promote(con, staging, loaded)

    assert _rows(con, "raw.events") == expected and len(expected) == 3 * ROWS
    # nothing copied: the build database holds no table of rows, and the pending submission is still staged
    assert con.execute("select count(*) from duckdb_tables() where schema_name <> 'audit'").fetchone() == (0,)
    assert staging.path(elsewhere.submission_id, "events").exists()
    assert con.execute("""select site_code, cast(period_end as varchar), count(*) from raw.events
                          group by all order by all""").fetchall() == [
        ("burnley_east", "2026-09-30", ROWS), ("burnley_east", "2026-10-31", ROWS), ("lsc", "2026-10-31", ROWS)]


def test_a_redelivery_replaces_the_snapshot_and_its_files_go(con: duckdb.DuckDBPyConnection, staging: Staging) -> None:
    first, other = _sub("lsc", "2026-10", "a"), _sub("lsc", "2026-09")
    _stage(con, staging, first, 3)
    _stage(con, staging, other, 4)
    _promote(con, staging, [first, other])
    corrected = _sub("lsc", "2026-10", "b")
    _stage(con, staging, corrected, 5)
    expected = _rows(con, _staged(staging, corrected, other))

    _promote(con, staging, [corrected])

    assert _rows(con, "raw.events") == expected and len(expected) == 2 * ROWS
    assert not any(staging.path(first.submission_id, k).exists() for k in FILE_KINDS)
    assert all(staging.path(s.submission_id, k).exists() for s in (corrected, other) for k in FILE_KINDS)
    assert con.execute("select status from audit.submissions where submission_id = ?",
                       [first.submission_id]).fetchone() == ("superseded",)


def test_of_two_deliveries_in_one_run_the_later_stands(con: duckdb.DuckDBPyConnection, staging: Staging) -> None:
    earlier, later = _sub("lsc", "2026-10", "a"), _sub("lsc", "2026-10", "b")
    _stage(con, staging, earlier, 3)
    _stage(con, staging, later, 4)
    expected = _rows(con, _staged(staging, later))

    _promote(con, staging, [earlier, later])

    assert _rows(con, "raw.events") == expected and len(expected) == ROWS
    assert not staging.path(earlier.submission_id, "events").exists()


def test_the_sweep_removes_only_files_of_no_pending_or_loaded_submission(con: duckdb.DuckDBPyConnection,
                                                                          staging: Staging) -> None:
    kept, stray = _sub("lsc", "2026-10"), _sub("lsc", "2026-09")
    _stage(con, staging, kept, 3)
    _stage(con, staging, stray, 4)  # say its step stopped after a commit, before removing its files
    partial = staging.path(kept.submission_id, "events").with_suffix(".parquet.partial")
    partial.write_bytes(b"half a file")

    assert staging.sweep({kept.submission_id}) == len(FILE_KINDS) + 1

    assert all(staging.path(kept.submission_id, k).exists() for k in FILE_KINDS)
    assert not any(staging.path(stray.submission_id, k).exists() for k in FILE_KINDS) and not partial.exists()


def test_a_loaded_submission_without_its_staged_files_fails_by_name(con: duckdb.DuckDBPyConnection,
                                                                     staging: Staging) -> None:
    sub = _sub("lsc", "2026-10")
    _stage(con, staging, sub, 3)
    _promote(con, staging, [sub])
    staging.path(sub.submission_id, "mh_contacts").unlink()

    with pytest.raises(dg.Failure, match="mh_contacts/lsc/2026-10__"):
        ensure_raw_views(con, staging)


@pytest.mark.parametrize("schema", ["raw", "staged"])
def test_a_build_database_from_before_the_parquet_staging_keeps_its_loaded_rows(tmp_path: Path, schema: str) -> None:
    """Before session 9 the loaded rows were in a table raw.<kind>; in session 9 in staged.<kind>, with
    their lines, beside a run's pending ones. Each loaded submission's rows move to its file, in line order."""
    con = duckdb.connect(str(tmp_path / "old.duckdb"))
    for s in ("audit", "raw", "staged", "pending"):
        con.execute(f"create schema {s}")
    _ensure_audit(con)
    staging = Staging(tmp_path / "staged")
    cols = ", ".join(f'"{c}" varchar' for c in COLS)
    con.execute(f"create table pending.events (submission_id varchar, _line bigint, {cols})")
    loaded, pending = _sub("lsc", "2026-10"), _sub("lsc", "2026-11")
    for kind in FILE_KINDS:
        kind_cols = ", ".join(f'"{c}" varchar' for c in FILE_COLUMNS[kind])
        con.execute(f"""create table {schema}.{kind} (site_code varchar, period_end date, submission_id varchar,
                        _line bigint, {kind_cols})""")
        if schema == "staged":  # and raw.<kind> was a view of them
            con.execute(f"""create view raw.{kind} as select * from staged.{kind} where submission_id in
                            (select submission_id from audit.submissions where status = 'loaded')""")
    for sub, status in ((loaded, "loaded"), (pending, "pending")):  # lines stored out of order
        con.execute(f"""insert into {schema}.events select ?, cast(? as date), ?, 2 + (i * 7) % 50, {_values(1)}
                        from range(50) t(i)""", [sub.site_code, sub.period_end, sub.submission_id])
        con.execute("""insert into audit.submissions (submission_id, site_code, period, period_end, status)
                       values (?, ?, ?, ?, ?)""", [sub.submission_id, sub.site_code, sub.period, sub.period_end, status])
    order = "_line" if schema == "staged" else "rowid"
    before = con.execute(f"""select row_number() over (order by {order}) + 1, site_code, cast(period_end as varchar),
                                    submission_id, person_id from {schema}.events where submission_id = ?
                             order by 1""", [loaded.submission_id]).fetchall()

    ensure_raw_views(con, staging)

    assert con.execute("""select _line, site_code, cast(period_end as varchar), submission_id, person_id
                          from {} order by 1""".format(_staged(staging, loaded))).fetchall() == before
    assert sorted(r[1:] for r in con.execute("""select 0, site_code, cast(period_end as varchar), submission_id,
                  person_id from raw.events""").fetchall()) == sorted(r[1:] for r in before) and len(before) == 50
    assert con.execute("""select table_schema, table_name, table_type from information_schema.tables
                          where table_schema <> 'audit' and table_type = 'BASE TABLE'""").fetchall() == []
    assert not staging.path(pending.submission_id, "events").exists()  # staged again by its next run
    ensure_raw_views(con, staging)  # and again: nothing left to move
    assert con.execute("select count(*) from raw.events").fetchone() == (50,)
    con.close()
