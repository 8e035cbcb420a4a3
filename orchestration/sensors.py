"""Sensors (SPEC §11): start work for each newly completed submission; alert when a run fails.

Submission sensor. A submission is complete when its manifest.json exists and every file matches
the manifest's checksum and row count; then it starts one run for its site and month (run_key =
submission id, so Dagster itself never starts the same submission twice). The cursor, which
Dagster keeps in its instance storage across restarts, remembers per site and month the manifest
last started: the same manifest again (an identical re-delivery) is recognised and skipped; a
different one (a corrected re-delivery) starts a run that replaces the earlier snapshot and
republishes that site-month. Submissions already loaded by another run (the nightly, a backfill)
are not started again. A submission still arriving (files not matching yet) is waited for, up to
SETTLE_SECONDS after its manifest was written, then handed to a run, which quarantines it.
"""
from __future__ import annotations

import json
import time

import dagster as dg

from assets.submissions import Submission, discover, verify_manifest
from checks.issues import ERROR
from orchestration.alerts import LAUNCHED_BY, failure_summary, run_failure_details, send_alert
from orchestration.jobs import TRIGGER, nightly_job
from orchestration.partitions import SITE_PARTITIONS, is_period, loaded_submissions, missing_sites, partition_key, registry_sites
from orchestration.settings import Settings, load_settings

SUBMISSION = "c20p5/submission"
DELIVERY = "c20p5/delivery"  # new | corrected
SETTLE_SECONDS = 3600
ARRIVING = {"manifest_json", "missing_file", "checksum", "row_count"}  # what a copy in progress looks like

Cursor = dict[str, dict]  # "site/YYYY-MM" -> {"sha": manifest sha (12), "mtime": manifest mtime}


@dg.sensor(job=nightly_job, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Starts one run per newly completed submission in C20P5_LANDING_DIR (manifest present, "
                       "checksums match) for its site and month; identical re-deliveries are skipped.")
def submission_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    settings = load_settings()
    cursor = load_cursor(context.cursor)
    loaded = loaded_submissions(settings, timeout=2.0)
    if loaded is None:
        context.log.info("build database busy (a run is writing it): deciding on the cursor alone")
        loaded = {}
    requests, notes = [], []
    for sub in discover(settings.landing_dir):
        request, note = _consider(sub, settings, cursor, loaded)
        requests += [request] if request else []
        notes += [note] if note else []
    for note in notes:
        context.log.info(note)
    state = json.dumps(cursor, sort_keys=True)
    # New registry sites become partitions (Dagster adds them before launching the runs).
    sites = [dg.AddDynamicPartitionsRequest(SITE_PARTITIONS, missing)] if (missing := missing_sites(context.instance)) else []
    if not requests:
        return dg.SensorResult(skip_reason="; ".join(["no new complete submissions", *notes])[:2000], cursor=state,
                               dynamic_partitions_requests=sites)
    return dg.SensorResult(run_requests=requests, cursor=state, dynamic_partitions_requests=sites)


def _consider(sub: Submission, settings: Settings, cursor: Cursor, loaded: dict[str, str]
              ) -> tuple[dg.RunRequest | None, str | None]:
    key, sha = f"{sub.site_code}/{sub.period}", sub.manifest_sha[:12]
    mtime = (sub.folder / "manifest.json").stat().st_mtime
    seen = cursor.get(key)
    if seen and seen["sha"] == sha:
        if seen.get("mtime") == mtime:
            return None, None
        seen["mtime"] = mtime
        return None, f"{key}: identical re-delivery of {sub.submission_id} recognised and skipped"
    if loaded.get(key) == sha:
        cursor[key] = {"sha": sha, "mtime": mtime}
        return None, f"{key}: {sub.submission_id} is already loaded (by another run); not started again"
    if sub.site_code not in registry_sites() or not is_period(sub.period):
        return None, (f"{key}: not a registry site or not a reporting month; the nightly run quarantines it "
                      "(or loads it once its month is a partition)")
    arriving = _still_arriving(sub, settings)
    if arriving and time.time() - mtime < SETTLE_SECONDS:
        return None, f"{key}: still arriving ({arriving}); waiting"
    delivery = "corrected" if (seen or key in loaded) else "new"
    cursor[key] = {"sha": sha, "mtime": mtime}
    return dg.RunRequest(run_key=sub.submission_id, partition_key=str(partition_key(sub.site_code, sub.period)),
                         tags={TRIGGER: "sensor", SUBMISSION: sub.submission_id, DELIVERY: delivery}), None


def _still_arriving(sub: Submission, settings: Settings) -> str | None:
    issues = [i for i in verify_manifest(sub, settings) if i.severity == ERROR and i.check in ARRIVING]
    return issues[0].describe() if issues else None


def load_cursor(text: str | None) -> Cursor:
    """The cursor; also reads the earlier format (a JSON list of submission ids)."""
    if not text:
        return {}
    data = json.loads(text)
    if isinstance(data, list):
        return {i.rsplit("/", 1)[0]: {"sha": i.rsplit("/", 1)[1], "mtime": None} for i in data}
    return data


@dg.run_failure_sensor(name="run_failure_alert", default_status=dg.DefaultSensorStatus.RUNNING,
                       minimum_interval_seconds=30,
                       description="Posts a JSON alert to C20P5_ALERT_WEBHOOK when a run fails (logged if unset).")
def run_failure_alert(context: dg.RunFailureSensorContext) -> None:
    run = context.dagster_run
    if run.tags.get(LAUNCHED_BY) == "cli":
        return  # `c20p5` reported this failure itself
    steps = {e.step_key: e.event_specific_data.error.message.strip()
             for e in context.get_step_failure_events() if e.event_specific_data.error}
    error = "; ".join(f"{k}: {v}" for k, v in steps.items()) or context.failure_event.message or "see the run log"
    details = run_failure_details(run.run_id, run.job_name, dict(run.tags), error, steps)
    send_alert(load_settings(), "run_failure", failure_summary(details), details, log=context.log)


__all__ = ["submission_sensor", "run_failure_alert", "load_cursor"]
