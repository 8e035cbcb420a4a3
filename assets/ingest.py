"""Ingestion assets: manifest and checksum first, one staging asset for the six file kinds, pandera as blocking checks.

landed_submissions -> raw_extracts (six file kinds, staged as text) -> [pandera check per kind] -> staged_extracts
A submission with any error is quarantined untouched; the others are loaded: the views `raw.<kind>`
show their staged rows (Parquet files, assets/staging.py), which are written once and never copied.
Partitioned by site and month (orchestration/partitions.py): a run ingests its partitions'
submissions only. The schema checks run over all of the run's submissions at once, one scan per kind;
the rules one query per rule and site; never one per submission. Every step retries transient I/O and fails at once on anything else.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb

from assets.reference import REFERENCE_FILES, load_reference, reference_fingerprint
from orchestration.settings import SHIPPED_REFERENCE_DIR, Settings
from assets.staging import Staging, sql_text
from assets.submissions import (Submission, check_header, discover, load_pending, quarantine,
                                validate_pending_many, verify_manifest)
from checks.issues import ERROR, Issue, record_issues
from checks.rules import Checked, VolumeHistory, rule_issues
from checks.schemas import FILE_COLUMNS, FILE_KINDS
from orchestration.partitions import REPORTING, SINGLE_RUN, Scope, is_period, scope_of_run
from orchestration.resources import PipelineResource
from orchestration.retries import RETRY_POLICY, data_errors_fail_fast

GROUP = "ingest"
# Every ingest asset is partitioned by site and month: a run ingests only its partitions' submissions.
PARTITIONED = {"partitions_def": REPORTING, "backfill_policy": SINGLE_RUN, "retry_policy": RETRY_POLICY}


def _ensure_audit(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""create table if not exists audit.submissions (submission_id varchar primary key,
        site_code varchar, period varchar, period_end varchar, manifest_sha varchar, folder varchar,
        status varchar, run_id varchar, reason varchar, quarantine_path varchar,
        received_at timestamp default current_timestamp, decided_at timestamp)""")
    record_issues(con, "", "", [])  # creates audit.issues


@dataclass(frozen=True)
class Pending:
    submission: Submission

    @staticmethod
    def of_run(con: duckdb.DuckDBPyConnection, run_id: str) -> list[Submission]:
        rows = con.execute("""select site_code, period, folder, manifest_sha from audit.submissions
                              where status = 'pending' and run_id = ? order by 1, 2""", [run_id]).fetchall()
        return [Submission(s, p, Path(f), sha) for s, p, f, sha in rows]


@dg.asset(group_name=GROUP, retry_policy=RETRY_POLICY,
          description="Reference data (deprivation, lookups, practices, populations, police.uk crimes, site "
                      "registry) loaded into schema `ref` of the build database. Not partitioned: every site-month "
                      "uses the same reference data, reloaded only when a file changes.")
def reference_data(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    with data_errors_fail_fast("loading reference data"):
        try:
            return _load_reference(context, pipeline)
        except duckdb.Error as exc:
            problems = reference_problems(pipeline.settings())
            if not problems:
                raise
            raise dg.Failure(description="a reference file in the landing zone cannot be used: "
                             + "; ".join(p.describe() for p in problems[:10]), allow_retries=False) from exc


def _load_reference(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    settings = pipeline.settings()
    fingerprint = reference_fingerprint(settings)
    with pipeline.build_db() as con:
        con.execute("create table if not exists audit.reference (fingerprint varchar, loaded_at timestamp)")
        current = con.execute("select max(fingerprint) from audit.reference").fetchone()[0]
        if current == fingerprint:
            context.log.info("reference data unchanged; kept")
            return dg.MaterializeResult(metadata={"reloaded": False, "imd_vintage": settings.imd_vintage})
        counts = load_reference(con, settings)
        con.execute("delete from audit.reference")
        con.execute("insert into audit.reference values (?, current_timestamp)", [fingerprint])
    return dg.MaterializeResult(metadata={"reloaded": True, "imd_vintage": settings.imd_vintage,
                                          "rows": dg.MetadataValue.json(counts)})


def reference_problems(settings: Settings) -> list[Issue]:
    """Where a newer reference file under <landing>/reference/ departs from the shipped one it replaces:
    a missing column, or a value that is not a number in a column the shipped file has as numbers."""
    out: list[Issue] = []
    con = duckdb.connect()
    try:
        for name in REFERENCE_FILES.values():
            override = settings.landing_dir / "reference" / name
            if override.exists():
                out += _reference_file_problems(con, override, SHIPPED_REFERENCE_DIR / name)
    finally:
        con.close()
    return out


def _reference_file_problems(con: duckdb.DuckDBPyConnection, override: Path, shipped: Path) -> list[Issue]:
    def issue(row: int, column: str, message: str) -> Issue:
        return Issue("reference", "", f"reference/{override.name}", row, column, "reference_file", message)
    expected = con.execute(f"describe select * from read_csv('{shipped}', header=true)").fetchall()
    con.execute(f"create or replace temp table _ref as select * from read_csv('{override}', header=true, all_varchar=true)")
    header = [r[0] for r in con.execute("describe _ref").fetchall()]
    missing = [c for c, *_ in expected if c not in header]
    if missing:
        return [issue(1, missing[0], f"is missing column(s) {', '.join(missing)} of the file it replaces")]
    numeric = [c for c, kind, *_ in expected if kind in ("BIGINT", "INTEGER", "DOUBLE", "SMALLINT", "HUGEINT")]
    out = []
    for column in numeric:  # rowid follows file order, so the line is rowid + 2 (header is line 1)
        bad = con.execute(f"""select rowid + 2, "{column}" from _ref where trim("{column}") <> ''
                              and try_cast("{column}" as double) is null order by rowid limit 1""").fetchone()
        if bad:
            out.append(issue(bad[0], column, f"value {bad[1]!r} is not a number"))
    return out


@dg.asset(group_name=GROUP, deps=[reference_data], **PARTITIONED,
          description="Complete submissions of this run's site-months whose manifest, row counts and checksums "
                      "verify; the others are quarantined before any parsing. Submissions of other site-months "
                      "are left alone (and listed as skipped); an identical re-delivery of a loaded one is skipped.")
def landed_submissions(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    with data_errors_fail_fast("checking landed submissions"):
        return _land(context, pipeline, scope_of_run(context.run, context.instance))


def _land(context: dg.AssetExecutionContext, pipeline: PipelineResource, scope: Scope) -> dg.MaterializeResult:
    settings = pipeline.settings()
    run_id = context.run.run_id
    accepted, skipped, rejected, outside, waiting = [], [], [], [], []
    with pipeline.build_db() as con:
        _ensure_audit(con)
        for sub in discover(settings.landing_dir):
            if _orphan(sub, settings):
                pass  # unknown site or a malformed folder: any run quarantines it (verify_manifest says why)
            elif not is_period(sub.period):
                waiting.append(sub.submission_id)  # a month before FIRST_PERIOD or not started yet
                continue
            elif not scope.covers(sub.site_code, sub.period):
                outside.append(sub.submission_id)
                continue
            if _already_loaded(con, sub):
                skipped.append(sub.submission_id)
                continue
            issues = verify_manifest(sub, settings)
            if any(i.severity == ERROR for i in issues):
                rejected.append(_reject(con, sub, issues, settings, run_id, "manifest"))
                continue
            _mark_pending(con, sub, run_id)
            accepted.append(sub.submission_id)
    context.log.info(f"partitions {scope.describe()}: {len(accepted)} new submission(s), {len(skipped)} already "
                     f"loaded (skipped), {len(rejected)} rejected, {len(outside)} outside this run's partitions "
                     f"(skipped){f', {len(waiting)} not in any reporting month yet: {waiting}' if waiting else ''}")
    return dg.MaterializeResult(metadata={
        "partitions": scope.describe(),
        "new": dg.MetadataValue.json(accepted), "already_loaded_skipped": dg.MetadataValue.json(skipped),
        "rejected": dg.MetadataValue.json(rejected),
        "outside_partitions_skipped": dg.MetadataValue.json(outside),
        "not_a_reporting_month": dg.MetadataValue.json(waiting)})


def _orphan(sub: Submission, settings: Settings) -> bool:
    """A folder no partition can ever cover: not a registry site, or not a YYYY-MM month."""
    if settings.site(sub.site_code) is None:
        return True
    try:
        y, m = sub.period.split("-")
        return not (len(sub.period) == 7 and 1 <= int(m) <= 12 and len(y) == 4)
    except ValueError:
        return True


def _mark_pending(con: duckdb.DuckDBPyConnection, sub: Submission, run_id: str) -> None:
    con.execute("delete from audit.submissions where submission_id = ?", [sub.submission_id])
    con.execute("""insert into audit.submissions (submission_id, site_code, period, period_end, manifest_sha,
        folder, status, run_id) values (?, ?, ?, ?, ?, ?, 'pending', ?)""",
                [sub.submission_id, sub.site_code, sub.period, sub.period_end, sub.manifest_sha,
                 str(sub.folder), run_id])


def _already_loaded(con: duckdb.DuckDBPyConnection, sub: Submission) -> bool:
    """An identical re-delivery (same manifest bytes) of a loaded submission is skipped."""
    return con.execute("select count(*) from audit.submissions where submission_id = ? and status = 'loaded'",
                       [sub.submission_id]).fetchone()[0] > 0


def _reject(con: duckdb.DuckDBPyConnection, sub: Submission, issues: list[Issue], settings: Settings, run_id: str,
            stage: str) -> dict:
    record_issues(con, run_id, stage, issues)
    errors = [i for i in issues if i.severity == ERROR]
    reason = "; ".join(i.describe() for i in errors[:3]) + (f" (+{len(errors) - 3} more)" if len(errors) > 3 else "")
    target = quarantine(sub, issues, settings)
    con.execute("delete from audit.submissions where submission_id = ?", [sub.submission_id])
    con.execute("""insert into audit.submissions (submission_id, site_code, period, period_end, manifest_sha, folder,
        status, run_id, reason, quarantine_path, decided_at) values (?, ?, ?, ?, ?, ?, 'rejected', ?, ?, ?, now())""",
                [sub.submission_id, sub.site_code, sub.period, sub.period_end, sub.manifest_sha, str(sub.folder),
                 run_id, reason, str(target)])
    for kind in FILE_KINDS:
        Staging(settings.staging_dir).clear(kind, [sub.submission_id])
    return {"submission": sub.submission_id, "reason": reason, "quarantine": str(target)}


@dg.asset(group_name=GROUP, deps=[landed_submissions], **PARTITIONED,
          description="The six files of this run's verified submissions, staged as text in one Parquet file "
                      "per submission and kind under <work>/staged/ ("
                      + "; ".join(f"{k}: {', '.join(c)}" for k, c in FILE_COLUMNS.items()) + "). One asset, not one per file kind: each partitioned asset costs an event per "
                        "site-month in every run.")
def raw_extracts(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    with data_errors_fail_fast("staging extract files"):
        return _stage(context, pipeline)


def _stage(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    loaded: dict[str, dict[str, int]] = {}
    staging = Staging(pipeline.settings().staging_dir)
    with pipeline.build_db() as con:
        _ensure_audit(con)
        subs = Pending.of_run(con, context.run.run_id)
        ids = [s.submission_id for s in subs]
        keep = {r[0] for r in con.execute("select submission_id from audit.submissions where status in "
                                          "('pending', 'loaded')").fetchall()}
        if swept := staging.sweep(keep):
            context.log.info(f"removed {swept} staged file(s) of no pending or loaded submission")
        for kind in FILE_KINDS:
            staging.clear(kind, ids)  # a retry starts again: no file of an earlier attempt stands
            for sub in subs:
                issues = check_header(sub, kind) or load_pending(con, staging, sub, kind)
                record_issues(con, context.run.run_id, f"load_{kind}", issues)
            loaded[kind] = staging.rows(con, kind, ids)
    return dg.MaterializeResult(metadata={
        "rows_by_kind": dg.MetadataValue.json({k: sum(v.values()) for k, v in loaded.items()}),
        "rows_by_submission": dg.MetadataValue.json(
            {s.submission_id: {k: loaded[k][s.submission_id] for k in FILE_KINDS} for s in subs})})


SCHEMA_SPECS = [dg.AssetCheckSpec(f"{kind}_schema", asset="raw_extracts", blocking=True,
                                  description=f"pandera schema of `{kind}` (checks/schemas.py), lazily: every failing "
                                              "value with its file, line and column. A failing submission is withheld "
                                              "and quarantined (WARN here, so the other sites go on); a check that "
                                              "cannot run is an ERROR.")
                for kind in FILE_KINDS]


@dg.multi_asset_check(specs=SCHEMA_SPECS, name="extract_schemas", can_subset=True, retry_policy=RETRY_POLICY)
def extract_schemas(context: dg.AssetCheckExecutionContext, pipeline: PipelineResource) -> Iterator[dg.AssetCheckResult]:
    """The six schema checks in one step and one connection (six steps cost six step start-ups)."""
    wanted = {key.name for key in context.selected_asset_check_keys}
    kinds = [k for k in FILE_KINDS if f"{k}_schema" in wanted]
    run_id = context.run.run_id
    results = []
    staging = Staging(pipeline.settings().staging_dir)
    with data_errors_fail_fast("the schema checks"), pipeline.build_db() as con:
        subs = Pending.of_run(con, run_id)
        for kind in kinds:
            with data_errors_fail_fast(f"the {kind} schema check"):
                results.append(_validate(con, staging, run_id, subs, kind))
    yield from results


def _validate(con: duckdb.DuckDBPyConnection, staging: Staging, run_id: str, subs: list[Submission],
              kind: str) -> dg.AssetCheckResult:
    # an unreadable file is already reported by the load
    unreadable = _with_errors(con, run_id, f"load_{kind}")
    readable = [s for s in subs if _key(s) not in unreadable]
    report: list[dict] = []
    for issues in validate_pending_many(staging, readable, kind).values():
        record_issues(con, run_id, f"schema_{kind}", issues)
        report += [i.as_dict() for i in issues]
    return dg.AssetCheckResult(
        asset_key="raw_extracts", check_name=f"{kind}_schema", passed=not report, severity=dg.AssetCheckSeverity.WARN,
        metadata={"failures": len(report), "report": dg.MetadataValue.json(report[:500]),
                  "summary": dg.MetadataValue.md(_markdown(report))})


def _with_errors(con: duckdb.DuckDBPyConnection, run_id: str, stage: str | None = None) -> set[tuple[str, str]]:
    """The site-periods (`_key`) with an error-severity issue in this run (in `stage`, if given), in one
    grouped query for all of the run's submissions rather than one per submission."""
    sql = "select site_code, period_end from audit.issues where run_id = ? and severity = ?"
    params = [run_id, ERROR]
    if stage:
        sql += " and stage = ?"
        params.append(stage)
    return {(site, period) for site, period in con.execute(sql + " group by 1, 2", params).fetchall()}


def _key(sub: Submission) -> tuple[str, str]:
    """How audit.issues names a submission: its site and period end."""
    return sub.site_code, sub.period_end


def _markdown(report: list[dict]) -> str:
    if not report:
        return "All staged files conform."
    lines = ["| site | period | where | problem |", "|---|---|---|---|"]
    lines += [f"| {r['site_code']} | {r['period_end']} | {r['where']} | {r['message']} |" for r in report[:50]]
    return "\n".join(lines)


@dg.asset(group_name=GROUP, deps=[raw_extracts], **PARTITIONED,
          description="Accepted submissions loaded: the views `raw.<kind>` show their staged rows (one snapshot "
                      "per site and period; a corrected re-delivery replaces the earlier one). Rejected ones are "
                      "quarantined.")
def staged_extracts(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    with data_errors_fail_fast("promoting staged extracts"):
        return _promote_run(context, pipeline)


def _promote_run(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    settings = pipeline.settings()
    staging = Staging(settings.staging_dir)
    run_id = context.run.run_id
    accepted: list[Submission] = []
    rejected = []
    with pipeline.build_db() as con:
        _ensure_audit(con)
        ensure_raw_views(con, staging)
        subs = Pending.of_run(con, run_id)
        failed = _with_errors(con, run_id)  # kept up to date below with the rules' errors as they are recorded
        checked = {s.submission_id: _checked(s) for s in subs if _key(s) not in failed}
        found = rule_issues(con, staging, list(checked.values()))
        volumes = VolumeHistory(con, staging, list(checked.values()))
        for sub in subs:
            if c := checked.get(sub.submission_id):
                issues = found[sub.submission_id] + volumes.anomalies(c)
                record_issues(con, run_id, "rules", issues)
                failed |= {(i.site_code, i.period_end) for i in issues if i.severity == ERROR}
            if _key(sub) in failed:
                rejected.append(_reject(con, sub, _issues_of(con, run_id, sub), settings, run_id, "decision"))
                continue
            accepted.append(sub)
            if c:
                volumes.promoted(c)  # the next months of this site are judged against this one too
        _promote(con, staging, accepted)
        loaded = con.execute("""select site_code, period_end from audit.submissions where status = 'loaded'
                                order by 1, 2""").fetchall()
    ids = [s.submission_id for s in accepted]
    context.log.info(f"accepted {ids}; rejected {[r['submission'] for r in rejected]}")
    return dg.MaterializeResult(metadata={
        "accepted": dg.MetadataValue.json(ids), "rejected": dg.MetadataValue.json(rejected),
        "site_periods_loaded": len(loaded)})


def _checked(sub: Submission) -> Checked:
    return Checked(sub.submission_id, sub.site_code, sub.period_end,
                   {k: sub.data_file(k).name for k in FILE_KINDS if sub.data_file(k)})


def _issues_of(con: duckdb.DuckDBPyConnection, run_id: str, sub: Submission) -> list[Issue]:
    rows = con.execute("""select site_code, period_end, file, "row", "column", "check", message, severity
        from audit.issues where run_id = ? and site_code = ? and period_end = ? order by severity, file, "row" """,
                       [run_id, sub.site_code, sub.period_end]).fetchall()
    return [Issue(*r) for r in rows]


def ensure_raw_views(con: duckdb.DuckDBPyConnection, staging: Staging) -> None:
    """raw.<kind>, dbt's sources, as they stand: a build database from before the Parquet staging is
    moved into it first, and a loaded submission whose staged file is missing is an error here, by
    name, rather than in the middle of dbt. They exist before the first submission is loaded."""
    _migrate_tables(con, staging)
    loaded = _loaded(con)
    missing = [str(staging.path(i, k)) for i in loaded for k in FILE_KINDS if not staging.path(i, k).exists()]
    if missing:
        raise dg.Failure(description=f"{len(missing)} staged file(s) of loaded submissions are missing, e.g. "
                                     f"{missing[0]}: the staging folder {staging.root} must stay beside the build "
                                     "database. Restore it, or remove the build database and the folder: the next "
                                     "run loads every submission in the landing zone again", allow_retries=False)
    _define_raw_views(con, staging, loaded)


def _loaded(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in con.execute("""select submission_id from audit.submissions where status = 'loaded'
                                         order by site_code, period""").fetchall()]


def _define_raw_views(con: duckdb.DuckDBPyConnection, staging: Staging, loaded: list[str]) -> None:
    """raw.<kind>: the staged rows of the loaded submissions, one snapshot per site and period. A view of
    their files, not a copy: copying the rows out of staging took 160 s of a 1 M-people refresh
    (docs/performance.md). Made again whenever the loaded submissions change."""
    for kind in FILE_KINDS:
        cols = ", ".join(f'"{c}"' for c in FILE_COLUMNS[kind])
        con.execute(f"""create or replace view raw.{kind} as
            select site_code, period_end, submission_id, {cols} from {staging.relation(kind, loaded)}""")


def _migrate_tables(con: duckdb.DuckDBPyConnection, staging: Staging) -> None:
    """A build database from before the Parquet staging held the loaded rows in a table: raw.<kind>
    (before session 9) or staged.<kind> (session 9). Each loaded submission's rows are written to its
    file, then the table goes; a run's pending rows are staged again by its next run. One-off."""
    for schema in ("raw", "staged"):
        for kind in FILE_KINDS:
            if con.execute("""select count(*) from information_schema.tables where table_schema = ?
                              and table_name = ? and table_type = 'BASE TABLE'""", [schema, kind]).fetchone()[0]:
                _migrate_table(con, staging, f"{schema}.{kind}", kind)
    con.execute("drop schema if exists pending cascade")
    con.execute("drop schema if exists staged cascade")


def _migrate_table(con: duckdb.DuckDBPyConnection, staging: Staging, table: str, kind: str) -> None:
    cols = ", ".join(f'"{c}"' for c in FILE_COLUMNS[kind])
    order = "_line, rowid" if table.startswith("staged.") else "rowid"
    for sid in _loaded(con):  # a file for each, even of no rows: a loaded submission has all six
        target = staging.path(sid, kind)
        target.parent.mkdir(parents=True, exist_ok=True)
        con.execute(f"""copy (select submission_id, site_code, period_end, {cols} from {table}
                              where submission_id = {sql_text(sid)} order by {order})
                        to {sql_text(str(target))} (format parquet, compression zstd)""")
    con.execute(f"drop table {table}")


def _promote(con: duckdb.DuckDBPyConnection, staging: Staging, subs: list[Submission]) -> None:
    """Load `subs`, all in one transaction: each becomes its site-period's snapshot in raw.<kind>, and
    the snapshot it replaces leaves staging once that has committed. No row is copied. Of two
    deliveries of one site-period, the later in `subs` stands, as if promoted one after the other."""
    if not subs:
        return
    standing = {(s.site_code, s.period): s for s in subs}
    # the snapshots these replace, and the earlier of two deliveries of one site-period in `subs`
    replaced = [r[0] for r in con.execute("""select submission_id from audit.submissions where status = 'loaded'
        and list_contains(?, site_code || '/' || period)""", [[f"{s}/{p}" for s, p in standing]]).fetchall()]
    replaced += [s.submission_id for s in subs if standing[(s.site_code, s.period)] is not s]
    con.execute("begin")
    for sub in subs:
        con.execute("""update audit.submissions set status = 'superseded'
                       where site_code = ? and period = ? and status = 'loaded'""", [sub.site_code, sub.period])
        con.execute("update audit.submissions set status = 'loaded', decided_at = now() where submission_id = ?",
                    [sub.submission_id])
    _define_raw_views(con, staging, _loaded(con))
    con.execute("commit")
    for kind in FILE_KINDS:  # after the commit: until then the replaced snapshots are still loaded
        staging.clear(kind, replaced)


def submissions_summary(con: duckdb.DuckDBPyConnection) -> list[dict]:
    """Each submission's status for the CLI and the publication record."""
    rows = con.execute("""select submission_id, site_code, period_end, status, reason, quarantine_path
                          from audit.submissions order by site_code, period_end""").fetchall()
    return [dict(zip(["submission_id", "site_code", "period_end", "status", "reason", "quarantine"], r)) for r in rows]


__all__ = ["reference_data", "landed_submissions", "raw_extracts", "extract_schemas", "staged_extracts",
           "submissions_summary"]
