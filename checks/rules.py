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


# An NHS number: 10 digits whose last is the modulus-11 check digit of the first nine (11 -> 0; 10 never valid).
_NHS_CHECK = "(11 - ({}) % 11) % 11 = try_cast(substr(person_id, 10, 1) as integer)".format(
    " + ".join(f"try_cast(substr(person_id, {i + 1}, 1) as integer) * {10 - i}" for i in range(9)))
NHS_NUMBER_SHARE = 0.5  # random 10-digit tokens pass the check digit 1 time in 11; NHS numbers always do
NHS_NUMBER_MIN = 3


def _nhs_number_rule(kind: str) -> Rule:
    return Rule(
        "nhs_number_as_person_id", kind, "person_id",
        f"""with ten as (select _line, person_id, {_NHS_CHECK} as valid from pending.{kind}
                         where submission_id = $1 and regexp_full_match(person_id, '[0-9]{{10}}'))
            select _line, '' from ten where valid
            and (select count(*) filter (where valid) from ten) >= {NHS_NUMBER_MIN}
            and (select avg(cast(valid as integer)) from ten) > {NHS_NUMBER_SHARE}""",
        "person_id looks like an NHS number (10 digits with a valid check digit, like most person_ids in this "
        "file; not repeated here): send the pseudonymised token, never the NHS number")


# Values of person_id, birth_month and date_of_death are never repeated in a message: messages are
# published in `data_quality`. The row and column say where to look.
RULES: tuple[Rule, ...] = (
    Rule("duplicate_person", "patients", "person_id",
         """select _line, string_agg(cast(other as varchar), ', ' order by other) from (
                select p._line, q._line as other from pending.patients p join pending.patients q
                  on q.submission_id = p.submission_id and q.person_id = p.person_id and q._line <> p._line
                where p.submission_id = $1) group by _line""",
         "this person_id appears more than once (also on row {value}); each person must have one row"),
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
         f"""select _line, '' from pending.patients where submission_id = $1
            and cast(birth_month || '-01' as date) < cast($3 as date) - interval {MAX_AGE_YEARS} year""",
         f"birth_month gives an age over {MAX_AGE_YEARS} at the period end (value not repeated here): "
         "check the birth month"),
    Rule("death_before_birth", "patients", "date_of_death",
         """select _line, '' from pending.patients where submission_id = $1
            and date_of_death < birth_month || '-01'""",
         "date_of_death is before the month of birth (values not repeated here)"),
    *(Rule("unknown_person", kind, "person_id",
           f"""select _line, '' from pending.{kind} where submission_id = $1
               and (select count(*) from pending.patients where submission_id = $1) > 0
               and person_id not in (select person_id from pending.patients where submission_id = $1
                                     and person_id is not null)""",
           "this person_id is not in patients.csv: every person with records must be listed in patients.csv")
      for kind in FILE_KINDS if kind != "patients"),
    *(_nhs_number_rule(kind) for kind in FILE_KINDS),
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
    if con.execute("select count(*) from pending.patients where submission_id = ?", [submission_id]).fetchone()[0] == 0:
        issues.append(Issue(site_code, period_end, file_names.get("patients", "patients.csv"), None, None,
                            "no_patients", "has no data rows: a submission lists every person registered at a site "
                                           "practice on the period end, so patients.csv cannot be empty"))
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
