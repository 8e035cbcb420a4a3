"""Great Expectations suites on the marts, wired in as a Dagster asset check.

GX runs on data frames read from the build database (its SQL datasource returns nothing on
DuckDB). Each site is validated on its own, so an error-severity failure withholds only that
site: the verdicts go to `audit.mart_checks`, which the publish reads.
"""

import dagster as dg
import duckdb

from checks.expectations import validate_site_frames
from orchestration.resources import PipelineResource

MARTS = ("fct_indicator_values", "fct_inequality_summary")


@dg.asset_check(asset=dg.AssetKey(["marts", "fct_indicator_values"]), name="great_expectations_marts", blocking=True,
                additional_deps=[dg.AssetKey(["marts", "fct_inequality_summary"])],
                description="GX suites on fct_indicator_values and fct_inequality_summary, per site; Data Docs "
                            "under C20P5_WORK_DIR/data_docs. A failing site is withheld from publication (WARN); "
                            "a suite that cannot run is an ERROR and blocks the publish.")
def great_expectations_marts(context: dg.AssetCheckExecutionContext, pipeline: PipelineResource) -> dg.AssetCheckResult:
    settings = pipeline.settings()
    docs_dir = settings.work_dir / "data_docs"
    with pipeline.build_db() as con:
        frames = {m: con.execute(f"select * from marts.{m}").df() for m in MARTS}
        results = validate_site_frames(frames, docs_dir)
        _record(con, context.run.run_id, results)
    failed = [r for r in results if not r.success]
    index = next((r.docs_index for r in results if r.docs_index), None)
    return dg.AssetCheckResult(
        passed=not failed, severity=dg.AssetCheckSeverity.WARN,
        metadata={"sites_checked": len(results), "sites_failed": dg.MetadataValue.json([r.site_code for r in failed]),
                  "failures": dg.MetadataValue.md("\n".join(f"- {r.site_code}: {e}" for r in failed for e in r.errors) or "none"),
                  "data_docs": dg.MetadataValue.path(str(index)) if index else "not built"})


def _record(con: duckdb.DuckDBPyConnection, run_id: str, results: list) -> None:
    con.execute("""create table if not exists audit.mart_checks (run_id varchar, site_code varchar,
        check_name varchar, severity varchar, passed boolean, message varchar)""")
    for r in results:
        con.execute("insert into audit.mart_checks values (?, ?, 'great_expectations', 'error', ?, ?)",
                    [run_id, r.site_code, r.success,
                     "; ".join(str(e) for e in r.errors) or f"{r.evaluated} expectations passed"])
