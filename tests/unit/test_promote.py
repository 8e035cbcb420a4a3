"""Loading a submission copies no row: `raw.<kind>` is a view of the staged rows of the loaded
submissions. It must show exactly the standing snapshot of each site-period (a re-delivery replaces
the earlier one, whose rows leave staging), never a submission still pending, and a build database
made before the views must keep its loaded rows."""
from pathlib import Path

import duckdb
import pytest

from assets.ingest import _ensure_audit, _ensure_raw_views, _mark_pending, _promote
from assets.submissions import Submission, clear_staged
from checks.schemas import FILE_COLUMNS

ROWS = 1_000  # per submission
COLS = FILE_COLUMNS["events"]


def _sub(site: str, period: str, version: str = "a") -> Submission:
    return Submission(site, period, Path(f"/nowhere/{site}/{period}"), f"{site}{period}{version}".ljust(64, "0"))


def _stage(con: duckdb.DuckDBPyConnection, sub: Submission, seed: int) -> None:
    """ROWS event rows of `sub`, pending in audit.submissions, values differing from line to line."""
    _mark_pending(con, sub, "run")
    values = ", ".join(f"md5(cast(i * {seed} + {n} as varchar))" for n, _ in enumerate(COLS))
    con.execute(f"""insert into staged.events (submission_id, site_code, period_end, _line,
                    {", ".join(f'"{c}"' for c in COLS)})
                    select ?, ?, cast(? as date), i + 2, {values} from range({ROWS}) t(i)""",
                [sub.submission_id, sub.site_code, sub.period_end])


def _rows(con: duckdb.DuckDBPyConnection, table: str, where: str = "true") -> list[tuple]:
    return con.execute(f"""select site_code, cast(period_end as varchar), submission_id, "person_id", "code"
                           from {table} where {where} order by all""").fetchall()


@pytest.fixture()
def con(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(tmp_path / "build.duckdb"))
    for schema in ("audit", "staged", "raw"):
        con.execute(f"create schema {schema}")
    _ensure_audit(con)
    _ensure_raw_views(con)
    yield con
    con.close()


def test_raw_shows_the_loaded_submissions_staged_rows_without_copying_them(con: duckdb.DuckDBPyConnection) -> None:
    loaded = [_sub("burnley_east", "2026-09"), _sub("burnley_east", "2026-10"), _sub("lsc", "2026-10")]
    elsewhere = _sub("blackpool_central", "2026-10")  # staged by another run: still pending
    for seed, sub in enumerate([loaded[0], elsewhere, *loaded[1:]], start=3):
        _stage(con, sub, seed)
    expected = _rows(con, "staged.events", f"submission_id <> '{elsewhere.submission_id}'")

    _promote(con, loaded)

    assert _rows(con, "raw.events") == expected and len(expected) == 3 * ROWS
    assert con.execute("select count(*) from staged.events").fetchone() == (4 * ROWS,)  # nothing copied
    assert con.execute("""select site_code, cast(period_end as varchar), count(*) from raw.events
                          group by all order by all""").fetchall() == [
        ("burnley_east", "2026-09-30", ROWS), ("burnley_east", "2026-10-31", ROWS), ("lsc", "2026-10-31", ROWS)]


def test_a_redelivery_replaces_the_snapshot_and_its_rows_leave_staging(con: duckdb.DuckDBPyConnection) -> None:
    first, other = _sub("lsc", "2026-10", "a"), _sub("lsc", "2026-09")
    _stage(con, first, 3)
    _stage(con, other, 4)
    _promote(con, [first, other])
    corrected = _sub("lsc", "2026-10", "b")
    _stage(con, corrected, 5)
    expected = _rows(con, "staged.events", f"submission_id <> '{first.submission_id}'")

    _promote(con, [corrected])

    assert _rows(con, "raw.events") == expected
    assert con.execute("select distinct submission_id from staged.events order by 1").fetchall() == sorted(
        [(corrected.submission_id,), (other.submission_id,)])
    assert con.execute("select status from audit.submissions where submission_id = ?",
                       [first.submission_id]).fetchone() == ("superseded",)


def test_of_two_deliveries_in_one_run_the_later_stands(con: duckdb.DuckDBPyConnection) -> None:
    earlier, later = _sub("lsc", "2026-10", "a"), _sub("lsc", "2026-10", "b")
    _stage(con, earlier, 3)
    _stage(con, later, 4)
    expected = _rows(con, "staged.events", f"submission_id = '{later.submission_id}'")

    _promote(con, [earlier, later])

    assert _rows(con, "raw.events") == expected and len(expected) == ROWS
    assert con.execute("select distinct submission_id from staged.events").fetchall() == [(later.submission_id,)]


def test_clearing_all_that_is_staged_leaves_the_table_empty_and_usable(con: duckdb.DuckDBPyConnection) -> None:
    subs = [_sub("burnley_east", "2026-09"), _sub("lsc", "2026-09")]
    for seed, sub in enumerate(subs, start=3):
        _stage(con, sub, seed)

    clear_staged(con, "events", [s.submission_id for s in subs])  # the table is made again, not deleted from

    assert con.execute("select count(*) from staged.events").fetchone() == (0,)
    _stage(con, _sub("lsc", "2026-10"), 9)  # the next run stages into it as before
    _promote(con, [_sub("lsc", "2026-10")])
    assert con.execute("select count(*) from raw.events").fetchone() == (ROWS,)


def test_a_build_database_from_before_the_views_keeps_its_loaded_rows(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "old.duckdb"))
    for schema in ("audit", "pending", "raw"):
        con.execute(f"create schema {schema}")
    _ensure_audit(con)
    cols = ", ".join(f'"{c}" varchar' for c in COLS)
    con.execute(f"create table raw.events (site_code varchar, period_end date, submission_id varchar, {cols})")
    con.execute(f"create table pending.events (submission_id varchar, _line bigint, {cols})")
    sub = _sub("lsc", "2026-10")
    values = ", ".join(f"md5(cast(i + {n} as varchar))" for n, _ in enumerate(COLS))
    con.execute(f"insert into raw.events select 'lsc', date '2026-10-31', ?, {values} from range(50) t(i)",
                [sub.submission_id])
    con.execute("""insert into audit.submissions (submission_id, site_code, period, period_end, status)
                   values (?, 'lsc', '2026-10', '2026-10-31', 'loaded')""", [sub.submission_id])
    before = _rows(con, "raw.events")

    _ensure_raw_views(con)

    assert _rows(con, "raw.events") == before and len(before) == 50
    kinds = con.execute("""select table_schema, table_type from information_schema.tables
                           where table_name = 'events' order by 1""").fetchall()
    assert kinds == [("raw", "VIEW"), ("staged", "BASE TABLE")]
    _ensure_raw_views(con)  # and again: nothing left to move
    assert _rows(con, "raw.events") == before
    con.close()
