"""Dagster asset checks on the marts and on the submissions.

- Great Expectations suites on the marts. GX runs on data frames read from the build database (its
  SQL datasource returns nothing on DuckDB). Each site the run publishes is validated on its own,
  so an error-severity failure withholds only that site: the verdicts go to `audit.mart_checks`,
  which the publish reads. Only site-periods whose rows changed since they last passed (or whose
  suite changed) are read and validated (assets/changes.py); a site with none passes as before.
- Freshness, one check per site of the registry (as the definitions load): a site is overdue when
  no new period has been accepted within FRESHNESS_DAYS of its last period_end. The publish applies
  the same rule (`freshness`) to every site it publishes and records it in `evaluation.data_quality`.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb

from assets.changes import SitePeriod, code_token, combine, mart_digests, remember, rows_of, unseen
from checks.expectations import MARTS, SiteResult, validate_site_frames
from orchestration.partitions import as_of, registry_sites, scope_of_run
from orchestration.resources import PipelineResource, table_exists
from orchestration.retries import RETRY_POLICY, data_errors_fail_fast

FRESHNESS_DAYS = 35
GX_CONSUMER = "great_expectations"
SUITE_TOKEN = code_token("checks/expectations.py")  # new expectations re-validate every site-period


@dg.asset_check(asset=dg.AssetKey(["marts", "fct_indicator_values"]), name="great_expectations_marts", blocking=True,
                additional_deps=[dg.AssetKey(["marts", "fct_inequality_summary"])], retry_policy=RETRY_POLICY,
                description="GX suites on fct_indicator_values and fct_inequality_summary, per site the run "
                            "publishes; Data Docs under C20P5_WORK_DIR/data_docs. A failing site is withheld from "
                            "publication (WARN); a suite that cannot run is an ERROR and blocks the publish.")
def great_expectations_marts(context: dg.AssetCheckExecutionContext, pipeline: PipelineResource) -> dg.AssetCheckResult:
    with data_errors_fail_fast("Great Expectations on the marts"):
        return _validate_marts(context, pipeline)


def _validate_marts(context: dg.AssetCheckExecutionContext, pipeline: PipelineResource) -> dg.AssetCheckResult:
    settings = pipeline.settings()
    sites = scope_of_run(context.run, context.instance).published_sites
    with pipeline.build_db() as con:
        verdicts = validate_changed_marts(con, sites, settings.work_dir / "data_docs")
        _record(con, context.run.run_id, verdicts)
    failed = [r for r in verdicts.results if not r.success]
    index = next((r.docs_index for r in verdicts.results if r.docs_index), None)
    return dg.AssetCheckResult(
        passed=not failed, severity=dg.AssetCheckSeverity.WARN,
        metadata={"sites_checked": len(verdicts.results), "site_periods_checked": len(verdicts.checked),
                  "sites_unchanged_since_passing": dg.MetadataValue.json(verdicts.carried),
                  "sites_failed": dg.MetadataValue.json([r.site_code for r in failed]),
                  "failures": dg.MetadataValue.md("\n".join(f"- {r.site_code}: {e}" for r in failed for e in r.errors) or "none"),
                  "data_docs": dg.MetadataValue.path(str(index)) if index else "not built"})


@dataclass(frozen=True)
class MartVerdicts:
    results: list[SiteResult]     # the sites validated now
    carried: list[str]            # sites whose every site-period is unchanged since it last passed
    checked: set[SitePeriod]      # the site-periods validated now


def validate_changed_marts(con: duckdb.DuckDBPyConnection, sites: list[str], docs_dir: Path | None) -> MartVerdicts:
    """Validate the site-periods of `sites` whose marts' rows (or suite) changed since they last passed;
    a site with none passes as before. A failed site-period is not recorded, so it is validated again."""
    expected = {k: combine(d, SUITE_TOKEN) for k, d in mart_digests(con, sites).items()}
    todo = unseen(con, GX_CONSUMER, expected)
    results = validate_site_frames({m: rows_of(con, m, todo) for m in MARTS}, docs_dir) if todo else []
    passed = {r.site_code for r in results if r.success}
    remember(con, GX_CONSUMER, {k: expected[k] for k in todo if k[0] in passed})
    carried = sorted({s for s, _ in expected} - {r.site_code for r in results})
    return MartVerdicts(results, carried, todo)


def _record(con: duckdb.DuckDBPyConnection, run_id: str, verdicts: MartVerdicts) -> None:
    """Each site's verdict for this run: validated now, or unchanged since its rows last passed."""
    con.execute("""create table if not exists audit.mart_checks (run_id varchar, site_code varchar,
        check_name varchar, severity varchar, passed boolean, message varchar)""")
    rows = [(run_id, r.site_code, r.success, "; ".join(str(e) for e in r.errors) or f"{r.evaluated} expectations passed")
            for r in verdicts.results]
    rows += [(run_id, site, True, "every site-period unchanged since its rows last passed") for site in verdicts.carried]
    if rows:
        con.executemany("insert into audit.mart_checks values (?, ?, 'great_expectations', 'error', ?, ?)", rows)


# ---------------------------------------------------------------------------------------------
# Freshness
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Freshness:
    site_code: str
    last_period_end: str | None  # the latest accepted period, None if nothing accepted yet
    as_of: date
    overdue: bool

    @property
    def due_by(self) -> date | None:
        return date.fromisoformat(self.last_period_end) + timedelta(days=FRESHNESS_DAYS) if self.last_period_end else None

    @property
    def message(self) -> str:
        if self.last_period_end is None:
            return f"no submission accepted yet (as of {self.as_of})"
        state = f"overdue by {(self.as_of - self.due_by).days} day(s)" if self.overdue else "on time"
        return (f"last period {self.last_period_end}; the next was due by {self.due_by} "
                f"({FRESHNESS_DAYS} days later): {state} as of {self.as_of}")


def freshness(con: duckdb.DuckDBPyConnection, site_code: str, on: date) -> Freshness:
    last = None
    if table_exists(con, "audit", "submissions"):
        last = con.execute("""select max(period_end) from audit.submissions
                              where site_code = ? and status in ('loaded', 'superseded')""", [site_code]).fetchone()[0]
    overdue = last is None or on > date.fromisoformat(last) + timedelta(days=FRESHNESS_DAYS)
    return Freshness(site_code, last, on, overdue)


def _freshness_checks(site_codes: list[str]) -> dg.AssetChecksDefinition:
    """One check per site (`freshness_<site>`, WARN: never blocks anything) on staged_extracts, after
    this run's submissions are accepted; all evaluated in one step (26 steps of their own cost ~8 s of
    a run in step overhead alone)."""
    specs = [dg.AssetCheckSpec(f"freshness_{code}", asset="staged_extracts",
                               description=f"`{code}` is overdue when no new period has been accepted within "
                                           f"{FRESHNESS_DAYS} days of its last period_end (as of the run's date). "
                                           "The publish records the same verdict in evaluation.data_quality.")
             for code in site_codes]

    @dg.multi_asset_check(specs=specs, name="freshness_checks", can_subset=True, retry_policy=RETRY_POLICY)
    def _checks(context: dg.AssetCheckExecutionContext, pipeline: PipelineResource) -> Iterator[dg.AssetCheckResult]:
        wanted = {key.name for key in context.selected_asset_check_keys}
        with data_errors_fail_fast("the freshness checks"), pipeline.build_db() as con:
            verdicts = [freshness(con, code, as_of(context.run)) for code in site_codes if f"freshness_{code}" in wanted]
        for verdict in verdicts:
            yield dg.AssetCheckResult(
                asset_key="staged_extracts", check_name=f"freshness_{verdict.site_code}", passed=not verdict.overdue,
                severity=dg.AssetCheckSeverity.WARN, metadata={
                    "last_period_end": verdict.last_period_end or "none", "as_of": str(verdict.as_of),
                    "due_by": str(verdict.due_by or "-"), "message": verdict.message})
    return _checks


FRESHNESS_CHECKS = [_freshness_checks(registry_sites())]

__all__ = ["great_expectations_marts", "validate_changed_marts", "MartVerdicts", "FRESHNESS_CHECKS", "FRESHNESS_DAYS", "freshness", "Freshness"]
