"""Running the nightly job in process: the same Definitions the UI shows, on a persistent Dagster
instance (DAGSTER_HOME if set, else C20P5_WORK_DIR/dagster) so runs appear in `dagster dev`."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import dagster as dg
import duckdb

from orchestration.settings import Settings, load_settings


@dataclass
class RunOutcome:
    success: bool
    run_id: str
    warehouse: str
    publication: str
    published: int = 0
    withheld: list[dict] = field(default_factory=list)
    error: str | None = None

    def describe(self) -> str:
        if not self.success:
            return f"run {self.run_id} FAILED: {self.error}\nthe last publication in {self.warehouse} is unchanged"
        lines = [f"run {self.run_id} succeeded", f"warehouse: {self.warehouse}",
                 f"publication: {self.publication}; {self.published} site-period(s) published"]
        lines += [f"withheld {w['site_code']} {w['period_end']}: {w['reason']}" for w in self.withheld]
        return "\n".join(lines)


def instance_for(settings: Settings) -> dg.DagsterInstance:
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    home = settings.work_dir / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    return dg.DagsterInstance.local_temp(tempdir=str(home))


def run_nightly(settings: Settings | None = None) -> RunOutcome:
    """Materialise the nightly job once and report what was published and withheld."""
    from orchestration.definitions import defs
    settings = settings or load_settings()
    job = defs.resolve_job_def("nightly_refresh")
    with instance_for(settings) as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False, run_config={
            "loggers": {"console": {"config": {"log_level": os.environ.get("C20P5_LOG_LEVEL", "INFO")}}}})
    return _outcome(result, settings)


def _outcome(result: dg.ExecuteInProcessResult, settings: Settings) -> RunOutcome:
    outcome = RunOutcome(result.success, result.run_id, settings.warehouse_url, "none")
    if not result.success:
        failures = [e for e in result.all_events if e.is_step_failure]
        outcome.error = "; ".join(f"{e.step_key}: {e.event_specific_data.error.message.strip()}"
                                  for e in failures) or "see the Dagster run log"
        return outcome
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        if mat.asset_key == dg.AssetKey("warehouse_publication"):
            meta = mat.metadata
            outcome.publication = str(meta["publication_id"].value)
            outcome.published = int(meta["site_periods_published"].value)
            outcome.withheld = list(meta["withheld"].value)
    return outcome


def site_status(settings: Settings | None = None) -> list[str]:
    """Each site's last received, last published and quarantined periods (for `c20p5 status`)."""
    settings = settings or load_settings()
    received = _query(str(settings.build_db_path), """select site_code, max(period_end) filter (where status = 'loaded'),
        string_agg(period_end || ' (' || reason || ')', '; ') filter (where status = 'rejected')
        from audit.submissions group by 1""")
    published = {} if settings.warehouse_is_postgres else dict(_query(settings.warehouse_url,
        "select site_code, max(period_end) from evaluation.indicator_values group by 1", attach=True))
    lines = []
    for site in settings.sites:
        row = next((r for r in received if r[0] == site.site_code), (site.site_code, None, None))
        lines.append(f"{site.site_code}: last received {row[1] or '-'}; last published "
                     f"{published.get(site.site_code, '-')}; quarantined: {row[2] or 'none'}")
    return lines


def _query(path: str, sql: str, attach: bool = False) -> list[tuple]:
    from assets.warehouse import connect_warehouse
    if not os.path.exists(path):
        return []
    con = connect_warehouse(path) if attach else duckdb.connect(path, read_only=True)
    try:
        return con.execute(sql).fetchall()
    except duckdb.CatalogException:
        return []
    finally:
        con.close()


__all__ = ["run_nightly", "site_status", "RunOutcome"]
