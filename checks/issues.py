"""One shape for every data-quality finding: which file, which row, which column, and what to fix."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import duckdb

ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Issue:
    """A finding about one submission. `row` is the line number in the file (the header is line 1);
    None means the whole file. Messages are written for the site analyst who must fix the file."""
    site_code: str
    period_end: str
    file: str
    row: int | None
    column: str | None
    check: str
    message: str
    severity: str = ERROR

    @property
    def where(self) -> str:
        row = "whole file" if self.row is None else f"row {self.row}"
        col = f", column {self.column}" if self.column else ""
        return f"{self.file}, {row}{col}"

    def describe(self) -> str:
        return f"{self.where}: {self.message}"

    def as_dict(self) -> dict:
        return asdict(self) | {"where": self.where}


class SubmissionRejected(Exception):
    """A submission failed an error-severity check; it is quarantined for the site to fix."""

    def __init__(self, issues: list[Issue]):
        self.issues = issues
        super().__init__("; ".join(i.describe() for i in issues[:5]))


def record_issues(con: duckdb.DuckDBPyConnection, run_id: str, stage: str, issues: list[Issue]) -> None:
    """Append findings to `audit.issues` in the build database (published as `data_quality`)."""
    con.execute("""create table if not exists audit.issues (run_id varchar, stage varchar, site_code varchar,
        period_end varchar, file varchar, "row" bigint, "column" varchar, "check" varchar, message varchar,
        severity varchar, recorded_at timestamp default current_timestamp)""")
    if issues:
        con.executemany(
            """insert into audit.issues (run_id, stage, site_code, period_end, file, "row", "column", "check",
               message, severity) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [[run_id, stage, i.site_code, i.period_end, i.file, i.row, i.column, i.check, i.message, i.severity]
             for i in issues])
