"""Submission rules that need more than one row or file: run as SQL inside the build database.

Each rule is one query over the staged text (`pending.<kind>`, with `_line` = line in the file)
returning the offending rows; the first few are reported with their line numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

import duckdb

from checks.issues import ERROR, WARNING, Issue
from checks.schemas import FILE_KINDS

MAX_REPORTED = 20
MAX_AGE_YEARS = 115
VOLUME_ANOMALY_FACTOR = 10


@dataclass(frozen=True)
class Rule:
    name: str
    file: str
    column: str | None
    sql: str  # selects _line, value for offending rows; parameters: submission_id, site_code, period_end
    message: str  # formatted with {value}


RULES: tuple[Rule, ...] = (
    Rule("duplicate_person", "patients", "person_id",
         """select _line, person_id from pending.patients where submission_id = $1
            qualify count(*) over (partition by person_id) > 1""",
         "person_id {value!r} appears more than once; each person must have one row"),
    Rule("unknown_practice", "patients", "practice_code",
         """select _line, practice_code from pending.patients where submission_id = $1
            and practice_code not in (select practice_code from ref.practices)""",
         "practice_code {value!r} is not a known GP practice (NHS England / ODS practice lists)"),
    Rule("practice_outside_site", "patients", "practice_code",
         """select _line, practice_code from pending.patients where submission_id = $1
            and practice_code in (select practice_code from ref.practices)
            and practice_code not in (select practice_code from ref.site_practices where site_code = $2)""",
         "practice_code {value!r} is not one of this site's practices (see the site registry's geography)"),
    Rule("unknown_lsoa", "patients", "lsoa_code",
         """select _line, lsoa_code from pending.patients where submission_id = $1 and lsoa_code is not null
            and lsoa_code not in (select lsoa_code from ref.lsoa_to_lsoa21)""",
         "lsoa_code {value!r} is not an English LSOA (2021 or 2011)"),
    Rule("registration_order", "patients", "registration_end",
         """select _line, registration_end from pending.patients where submission_id = $1
            and registration_end < registration_start""",
         "registration_end {value} is before registration_start"),
    Rule("impossible_age", "patients", "birth_month",
         f"""select _line, birth_month from pending.patients where submission_id = $1
            and cast(birth_month || '-01' as date) < cast($3 as date) - interval {MAX_AGE_YEARS} year""",
         f"birth_month {{value}} gives an age over {MAX_AGE_YEARS} at the period end"),
    Rule("death_before_birth", "patients", "date_of_death",
         """select _line, date_of_death from pending.patients where submission_id = $1
            and date_of_death < birth_month || '-01'""",
         "date_of_death {value} is before the month of birth"),
    *(Rule("unknown_person", kind, "person_id",
           f"""select _line, person_id from pending.{kind} where submission_id = $1
               and person_id not in (select person_id from pending.patients where submission_id = $1)""",
           "person_id {value!r} is not in patients.csv") for kind in FILE_KINDS if kind != "patients"),
)


# Every rule sees the same three parameters through one CTE (DuckDB refuses unused parameters).
_PARAMS = "with _p as (select cast($1 as varchar) as sub, cast($2 as varchar) as site, cast($3 as varchar) as period_end)"


def _bind(sql: str) -> str:
    return (sql.replace("$1", "(select sub from _p)").replace("$2", "(select site from _p)")
            .replace("$3", "(select period_end from _p)"))


def run_rules(con: duckdb.DuckDBPyConnection, submission_id: str, site_code: str, period_end: str,
              file_names: dict[str, str]) -> list[Issue]:
    """Every rule for one staged submission; `file_names` maps kind to the file name received."""
    issues: list[Issue] = []
    params = [submission_id, site_code, period_end]
    for rule in RULES:
        rows = con.execute(f"{_PARAMS} select * from ({_bind(rule.sql)}) order by 1 limit {MAX_REPORTED + 1}",
                           params).fetchall()
        file = file_names.get(rule.file, f"{rule.file}.csv")
        for line, value in rows[:MAX_REPORTED]:
            issues.append(Issue(site_code, period_end, file, line, rule.column, rule.name,
                                rule.message.format(value=value)))
        if len(rows) > MAX_REPORTED:
            total = con.execute(f"{_PARAMS} select count(*) from ({_bind(rule.sql)})", params).fetchone()[0]
            issues.append(Issue(site_code, period_end, file, None, rule.column, rule.name,
                                f"{total} rows break this rule in all; the first {MAX_REPORTED} are listed"))
    return issues


def volume_anomalies(con: duckdb.DuckDBPyConnection, submission_id: str, site_code: str, period_end: str,
                     file_names: dict[str, str]) -> list[Issue]:
    """A file far larger than this site usually sends is a warning, not an error: it still publishes."""
    issues = []
    for kind in FILE_KINDS:
        if not _table_exists(con, "raw", kind):
            continue
        rows = con.execute(f"select count(*) from pending.{kind} where submission_id = ?", [submission_id]).fetchone()[0]
        usual = con.execute(f"""select median(n) from (select count(*) as n from raw.{kind}
                                where site_code = ? and period_end <> ? group by period_end)""",
                            [site_code, period_end]).fetchone()[0]
        if usual and rows > VOLUME_ANOMALY_FACTOR * usual:
            issues.append(Issue(site_code, period_end, file_names.get(kind, f"{kind}.csv"), None, None,
                                "volume_anomaly", f"has {rows} rows, more than {VOLUME_ANOMALY_FACTOR} times this "
                                f"site's usual {int(usual)}: please confirm the extract", WARNING))
    return issues


def _table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return con.execute("select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
                       [schema, table]).fetchone()[0] > 0
