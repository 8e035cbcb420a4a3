"""Submission rules that need more than one row or file: run as SQL inside the build database.

Each rule is one query over the staged text (the temp view `_staged_<kind>`, with `_line` = line in the
file) of every submission of one site that a run checks (the temp table `_checked`: submission_id,
site_code, period_end), returning the offending rows by submission; the first few of each are reported
with their line numbers. Set-based, not one query per rule per submission (which was quadratic in a
backfill's size); per site, each query's hash tables stay site-sized.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from statistics import median

import duckdb

from checks.issues import WARNING, Issue
from assets.staging import Staging
from checks.schemas import FILE_KINDS

MAX_REPORTED = 20
MAX_AGE_YEARS = 115
VOLUME_ANOMALY_FACTOR = 10


@dataclass(frozen=True)
class Rule:
    name: str
    file: str
    column: str | None
    sql: str  # selects submission_id, _line, value for offending rows of the submissions in _checked
    message: str  # formatted with {value}


@dataclass(frozen=True)
class Checked:
    """One submission the rules look at, and the names its files arrived under."""
    submission_id: str
    site_code: str
    period_end: str
    file_names: dict[str, str]

    def file(self, kind: str) -> str:
        return self.file_names.get(kind, f"{kind}.csv")


# An NHS number: 10 digits whose last is the modulus-11 check digit of the first nine (11 -> 0; 10 never valid).
_NHS_CHECK = "(11 - ({}) % 11) % 11 = try_cast(substr(person_id, 10, 1) as integer)".format(
    " + ".join(f"try_cast(substr(person_id, {i + 1}, 1) as integer) * {10 - i}" for i in range(9)))
NHS_NUMBER_SHARE = 0.5  # random 10-digit tokens pass the check digit 1 time in 11; NHS numbers always do
NHS_NUMBER_MIN = 3


def _nhs_number_rule(kind: str) -> Rule:
    return Rule(
        "nhs_number_as_person_id", kind, "person_id",
        f"""with ten as (select submission_id, _line, {_NHS_CHECK} as valid from _staged_{kind}
                         join _checked using (submission_id) where regexp_full_match(person_id, '[0-9]{{10}}')),
            share as (select submission_id from ten group by submission_id
                      having count(*) filter (where valid) >= {NHS_NUMBER_MIN}
                      and avg(cast(valid as integer)) > {NHS_NUMBER_SHARE})
            select submission_id, _line, '' from ten join share using (submission_id) where valid""",
        "person_id looks like an NHS number (10 digits with a valid check digit, like most person_ids in this "
        "file; not repeated here): send the pseudonymised token, never the NHS number")


# Values of person_id, birth_month and date_of_death are never repeated in a message: messages are
# published in `data_quality`. The row and column say where to look.
RULES: tuple[Rule, ...] = (
    Rule("duplicate_person", "patients", "person_id",
         """select p.submission_id, p._line, string_agg(cast(q._line as varchar), ', ' order by q._line)
            from _staged_patients p join _checked using (submission_id) join _staged_patients q
              on q.submission_id = p.submission_id and q.person_id = p.person_id and q._line <> p._line
            group by p.submission_id, p._line""",
         "this person_id appears more than once (also on row {value}); each person must have one row"),
    Rule("unknown_practice", "patients", "practice_code",
         """select submission_id, _line, practice_code from _staged_patients join _checked using (submission_id)
            where practice_code not in (select practice_code from ref.practices)""",
         "practice_code {value!r} is not a known GP practice (NHS England / ODS practice lists)"),
    Rule("practice_outside_site", "patients", "practice_code",
         """select p.submission_id, p._line, p.practice_code from _staged_patients p join _checked c using (submission_id)
            where p.practice_code in (select practice_code from ref.practices)
            and not exists (select 1 from ref.site_practices s
                            where s.site_code = c.site_code and s.practice_code = p.practice_code)""",
         "practice_code {value!r} is not one of this site's practices (see the site registry's geography)"),
    Rule("unknown_lsoa", "patients", "lsoa_code",
         """select submission_id, _line, lsoa_code from _staged_patients join _checked using (submission_id)
            where lsoa_code is not null and lsoa_code not in (select lsoa_code from ref.lsoa_to_lsoa21)""",
         "lsoa_code {value!r} is not an English LSOA (2021 or 2011)"),
    Rule("registration_order", "patients", "registration_end",
         """select submission_id, _line, registration_end from _staged_patients join _checked using (submission_id)
            where registration_end < registration_start""",
         "registration_end {value} is before registration_start"),
    Rule("impossible_age", "patients", "birth_month",
         f"""select submission_id, _line, '' from _staged_patients join _checked c using (submission_id)
            where cast(birth_month || '-01' as date) < cast(c.period_end as date) - interval {MAX_AGE_YEARS} year""",
         f"birth_month gives an age over {MAX_AGE_YEARS} at the period end (value not repeated here): "
         "check the birth month"),
    Rule("death_before_birth", "patients", "date_of_death",
         """select submission_id, _line, '' from _staged_patients join _checked using (submission_id)
            where date_of_death < birth_month || '-01'""",
         "date_of_death is before the month of birth (values not repeated here)"),
    # A submission with no patients at all is reported as such (no_patients), not row by row here. The
    # submissions with patients are a join with one row each: an EXISTS on submission_id alone hashed
    # every patient row under 338 keys, and ran out of memory at 1 M people (docs/performance.md).
    *(Rule("unknown_person", kind, "person_id",
           f"""with listed as (select p.submission_id, p.person_id from _staged_patients p join _checked using (submission_id))
               select e.submission_id, e._line, '' from _staged_{kind} e
               join (select distinct submission_id from listed) as with_patients using (submission_id)
               where e.person_id is not null
               and not exists (select 1 from listed p where p.submission_id = e.submission_id and p.person_id = e.person_id)""",
           "this person_id is not in patients.csv: every person with records must be listed in patients.csv")
      for kind in FILE_KINDS if kind != "patients"),
    *(_nhs_number_rule(kind) for kind in FILE_KINDS),
)


def rule_issues(con: duckdb.DuckDBPyConnection, staging: Staging, checked: list[Checked]) -> dict[str, list[Issue]]:
    """Every rule for every submission in `checked`: issues by submission_id, in rule order and, within
    a rule, by line. One site at a time (each rule one query over the site's submissions): at 1 M
    people `unknown_person` on events took 82 s over one hash table of every site's patients, and 28 s
    in 26 site-sized ones, whose staged rows lie together (docs/performance.md, session 9)."""
    issues: dict[str, list[Issue]] = {c.submission_id: [] for c in checked}
    for site in sorted({c.site_code for c in checked}):
        issues |= _site_rule_issues(con, staging, [c for c in checked if c.site_code == site])
    return issues


def _site_rule_issues(con: duckdb.DuckDBPyConnection, staging: Staging, checked: list[Checked]
                      ) -> dict[str, list[Issue]]:
    by_id = {c.submission_id: c for c in checked}
    issues: dict[str, list[Issue]] = {c.submission_id: [] for c in checked}
    if not checked:
        return issues
    for kind in FILE_KINDS:
        con.execute(f"create or replace temp view _staged_{kind} as select * from {staging.relation(kind, list(by_id))}")
    con.execute("create or replace temp table _checked (submission_id varchar, site_code varchar, period_end varchar)")
    con.executemany("insert into _checked values (?, ?, ?)", [[c.submission_id, c.site_code, c.period_end] for c in checked])
    with_patients = {r[0] for r in con.execute(
        "select distinct submission_id from _staged_patients join _checked using (submission_id)").fetchall()}
    for c in checked:
        if c.submission_id not in with_patients:
            issues[c.submission_id].append(Issue(
                c.site_code, c.period_end, c.file("patients"), None, None, "no_patients",
                "has no data rows: a submission lists every person registered at a site practice on the period "
                "end, so patients.csv cannot be empty"))
    for rule in RULES:
        rows = con.execute(f"""select submission_id, _line, value, total from (
                select submission_id, _line, value, count(*) over (partition by submission_id) as total,
                       row_number() over (partition by submission_id order by _line) as n
                from ({rule.sql}) as hits(submission_id, _line, value))
            where n <= {MAX_REPORTED} order by submission_id, _line""").fetchall()
        for sub_id, line, value, total in rows:
            c = by_id[sub_id]
            issues[sub_id].append(Issue(c.site_code, c.period_end, c.file(rule.file), line, rule.column, rule.name,
                                        rule.message.format(value=value)))
        for sub_id, total in sorted({(r[0], r[3]) for r in rows if r[3] > MAX_REPORTED}):
            c = by_id[sub_id]
            issues[sub_id].append(Issue(c.site_code, c.period_end, c.file(rule.file), None, rule.column, rule.name,
                                        f"{total} rows break this rule in all; the first {MAX_REPORTED} are listed"))
    con.execute("drop table _checked")
    for kind in FILE_KINDS:
        con.execute(f"drop view _staged_{kind}")
    return issues


class VolumeHistory:
    """Rows per site-period of each kind in raw.<kind>, read once per run and kept up to date as the
    run promotes submissions, so a backfill's later months are judged against its earlier ones.
    raw.<kind> must exist (ingest's `ensure_raw_views`)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, staging: Staging, checked: list[Checked]):
        self.rows: dict[str, dict[tuple[str, str], int]] = defaultdict(dict)   # kind -> (site, period_end) -> rows
        self.pending: dict[str, dict[str, int]] = defaultdict(dict)           # kind -> submission_id -> rows
        if not checked:
            return
        sites = sorted({c.site_code for c in checked})
        ids = [c.submission_id for c in checked]
        for kind in FILE_KINDS:
            for site, period, n in con.execute(f"""select site_code, cast(period_end as varchar), count(*)
                    from raw.{kind} where site_code in (select unnest(?)) group by 1, 2""", [sites]).fetchall():
                self.rows[kind][(site, period)] = n
            self.pending[kind] = staging.rows(con, kind, ids)

    def anomalies(self, c: Checked) -> list[Issue]:
        """A file far larger than this site usually sends is a warning, not an error: it still publishes."""
        issues = []
        for kind in FILE_KINDS:
            rows = self.pending[kind].get(c.submission_id, 0)
            others = [n for (site, period), n in self.rows[kind].items() if site == c.site_code and period != c.period_end]
            usual = median(others) if others else None
            if usual and rows > VOLUME_ANOMALY_FACTOR * usual:
                issues.append(Issue(c.site_code, c.period_end, c.file(kind), None, None, "volume_anomaly",
                                    f"has {rows} rows, more than {VOLUME_ANOMALY_FACTOR} times this site's usual "
                                    f"{int(usual)}: please confirm the extract", WARNING))
        return issues

    def promoted(self, c: Checked) -> None:
        """c's rows now stand for its site-period in raw.<kind> (a re-delivery replaces the earlier ones)."""
        for kind in FILE_KINDS:
            self.rows[kind].pop((c.site_code, c.period_end), None)
            if n := self.pending[kind].get(c.submission_id, 0):  # an empty site-period has no rows to count
                self.rows[kind][(c.site_code, c.period_end)] = n
