"""Promotion from `pending.<kind>` to `raw.<kind>` keeps staging order without sorting: each
site-period's rows stay together, in the order of the file's lines, on a table big enough for
DuckDB to scan it in parallel (several row groups, two threads)."""
from pathlib import Path

import duckdb
import pytest

from assets.ingest import _ensure_audit, _ensure_raw_tables, _promote
from assets.submissions import Submission, create_pending_table
from checks.schemas import FILE_COLUMNS, FILE_KINDS

ROWS = 300_000  # per submission: ~2.5 row groups each (DuckDB's are 122,880 rows)


def _sub(site: str, period: str) -> Submission:
    return Submission(site, period, Path(f"/nowhere/{site}/{period}"), f"{site}{period}".ljust(64, "0"))


def _stage(con: duckdb.DuckDBPyConnection, sub: Submission, seed: int) -> None:
    """ROWS event rows whose values differ from line to line in no sorted order (a hash of the line)."""
    cols = FILE_COLUMNS["events"]
    values = ", ".join(f"md5(cast(i * {seed} + {n} as varchar))" for n, _ in enumerate(cols))
    con.execute(f"""insert into pending.events (submission_id, _line, {", ".join(f'"{c}"' for c in cols)})
                    select ?, i + 2, {values} from range({ROWS}) t(i)""", [sub.submission_id])


@pytest.fixture()
def con(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(tmp_path / "build.duckdb"))
    con.execute("set threads = 2")
    for schema in ("audit", "pending", "raw"):
        con.execute(f"create schema {schema}")
    _ensure_audit(con)
    _ensure_raw_tables(con)
    for kind in FILE_KINDS:
        create_pending_table(con, kind)
    yield con
    con.close()


def test_promotion_keeps_each_files_lines_in_order(con: duckdb.DuckDBPyConnection) -> None:
    promoted = [_sub("burnley_east", "2026-09"), _sub("burnley_east", "2026-10"), _sub("lsc", "2026-10")]
    elsewhere = _sub("blackpool_central", "2026-10")  # staged by another run: stays in pending
    for seed, sub in enumerate([promoted[0], elsewhere, *promoted[1:]], start=3):
        _stage(con, sub, seed)
    expected = con.execute("""select submission_id, "person_id", "event_date" from pending.events
                              where submission_id <> ? order by rowid""", [elsewhere.submission_id]).fetchall()

    _promote(con, promoted)

    got = con.execute("""select submission_id, "person_id", "event_date" from raw.events order by rowid""").fetchall()
    assert len(got) == 3 * ROWS
    assert got == expected  # the staged lines, submission after submission, each in file order
    blocks = con.execute("""select site_code, cast(period_end as varchar), min(rowid), max(rowid), count(*)
                            from raw.events group by 1, 2 order by 3""").fetchall()
    assert [(s, p) for s, p, *_ in blocks] == [("burnley_east", "2026-09-30"), ("burnley_east", "2026-10-31"),
                                               ("lsc", "2026-10-31")]
    assert all(hi - lo + 1 == n == ROWS for *_, lo, hi, n in blocks)  # each site-period contiguous
    left = con.execute("select distinct submission_id from pending.events").fetchall()
    assert left == [(elsewhere.submission_id,)]


def test_promoting_all_that_is_staged_leaves_pending_empty_and_usable(con: duckdb.DuckDBPyConnection) -> None:
    subs = [_sub("burnley_east", "2026-09"), _sub("lsc", "2026-09")]
    for seed, sub in enumerate(subs, start=3):
        _stage(con, sub, seed)
    staged = con.execute('select submission_id, "person_id" from pending.events order by rowid').fetchall()

    _promote(con, subs)  # nothing else staged: the table is made again rather than deleted row by row

    assert con.execute('select submission_id, "person_id" from raw.events order by rowid').fetchall() == staged
    assert con.execute("select count(*) from pending.events").fetchone() == (0,)
    _stage(con, _sub("lsc", "2026-10"), 9)  # the next run stages into it as before
    assert con.execute("select count(*) from pending.events").fetchone() == (ROWS,)
