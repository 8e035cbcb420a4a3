"""The nightly schedule (SPEC §11): 02:00 Europe/London, running whatever is due.

Due = the months with a submission not loaded yet (else the latest month), for every site: one run
that ingests what is new, rebuilds the marts, re-checks every site's freshness and leaves the
warehouse a complete current snapshot of every site-period (writing only those whose rows changed),
or writes nothing when readers would see no change. Running it twice in a night is therefore harmless."""
from datetime import datetime

import dagster as dg

from orchestration.jobs import TRIGGER, nightly_job
from orchestration.partitions import AS_OF, LONDON, PUBLISH, due_range, loaded_submissions, range_tags, register_sites
from orchestration.settings import load_settings


@dg.schedule(job=nightly_job, name="nightly_refresh_0200", cron_schedule="0 2 * * *",
             execution_timezone="Europe/London", default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Runs whatever is due every night; a second run the same night publishes nothing new.")
def nightly_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    settings = load_settings()
    sites = register_sites(context.instance)  # the registry as it is tonight
    keys = due_range(settings, loaded_submissions(settings), sites)
    if keys is None:
        return dg.SkipReason(f"nothing landed in {settings.landing_dir} or loaded yet")
    tick = context.scheduled_execution_time or datetime.now(LONDON)
    return dg.RunRequest(tags={**range_tags(keys), TRIGGER: "schedule", PUBLISH: "all",
                               AS_OF: tick.astimezone(LONDON).date().isoformat()})
