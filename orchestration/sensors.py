"""The submission sensor (SPEC §11): starts the nightly job when a newly completed submission lands.

The cursor is the set of manifest checksums already seen, so each submission starts work once, a
re-delivered identical submission is not seen as new, and a corrected one (new manifest) is."""
import json

import dagster as dg

from assets.submissions import discover
from orchestration.jobs import nightly_job
from orchestration.settings import load_settings


@dg.sensor(job=nightly_job, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Watches C20P5_LANDING_DIR for complete submissions (manifest.json present).")
def submission_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    seen = set(json.loads(context.cursor)) if context.cursor else set()
    current = {s.submission_id for s in discover(load_settings().landing_dir)}
    new = sorted(current - seen)
    if not new:
        return dg.SensorResult(skip_reason="no new complete submissions", cursor=context.cursor)
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key="|".join(new), tags={"c20p5/submissions": ",".join(new)[:4000]})],
        cursor=json.dumps(sorted(seen | current)))
