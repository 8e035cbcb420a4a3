"""Where a submission's rows lie between staging and their replacement: Parquet files, one per
submission and file kind, outside the build database (which only records each submission's status)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from checks.schemas import FILE_COLUMNS, FILE_KINDS


@dataclass(frozen=True)
class Staging:
    """Where submissions' rows lie once staged: one Parquet file of text per submission and file kind,
    `<root>/<kind>/<site_code>/<YYYY-MM>__<sha12>.parquet`, in the file's own row order. Written once:
    loading and replacing are status changes in audit.submissions, and `raw.<kind>` is a view of the
    loaded submissions' files. Parquet, not a table in the build database: DuckDB wrote a 1 M-row
    events file into a table in 0.63 s and into Parquet in 0.28 s, 2.5 times smaller; a table's
    delete of a large backfill ran out of memory, where here a file is removed (docs/performance.md)."""
    root: Path

    def path(self, submission_id: str, kind: str) -> Path:
        site, period, sha = submission_id.split("/")
        return self.root / kind / site / f"{period}__{sha}.parquet"

    def relation(self, kind: str, ids: list[str]) -> str:
        """SQL for the staged rows of submissions `ids` (each must be staged), with `_line`, each row's
        line in its file (the header is line 1: one CSV line per row, as the text was read)."""
        cols = ", ".join(f'"{c}"' for c in FILE_COLUMNS[kind])
        if not ids:
            nulls = ", ".join(f'cast(null as varchar) as "{c}"' for c in FILE_COLUMNS[kind])
            return (f"(select cast(null as varchar) as submission_id, cast(null as varchar) as site_code, "
                    f"cast(null as date) as period_end, cast(null as bigint) as _line, {nulls} where false)")
        files = ", ".join(sql_text(str(self.path(i, kind))) for i in ids)
        return (f"(select submission_id, site_code, period_end, file_row_number + 2 as _line, {cols} "
                f"from read_parquet([{files}], file_row_number = true))")

    def clear(self, kind: str, ids: list[str]) -> None:
        """Remove the staged files of submissions `ids` (rejected, replaced, or staged again by a retry)."""
        for i in ids:
            self.path(i, kind).unlink(missing_ok=True)

    def rows(self, con: duckdb.DuckDBPyConnection, kind: str, ids: list[str]) -> dict[str, int]:
        """Rows staged per submission, read from the Parquet footers (0 for a submission with no file)."""
        files = {str(self.path(i, kind)): i for i in ids if self.path(i, kind).exists()}
        counts = dict.fromkeys(ids, 0)
        if files:
            listed = ", ".join(sql_text(f) for f in files)
            for name, n in con.execute(f"select file_name, sum(num_rows) from parquet_file_metadata([{listed}]) "
                                       "group by 1").fetchall():
                counts[files[name]] = int(n)
        return counts

    def sweep(self, keep: set[str]) -> int:
        """Remove every staged file but those of submissions `keep` (pending or loaded): what a step
        that stopped between a commit and its file removals left behind. Returns how many it removed."""
        wanted = {self.path(i, k) for i in keep for k in FILE_KINDS}
        stray = [f for f in self.root.glob("*/*/*.parquet*") if f not in wanted]
        for f in stray:
            f.unlink(missing_ok=True)
        return len(stray)


def sql_text(text: str) -> str:
    """`text` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"
