"""The nightly schedule (SPEC §11): 02:00 Europe/London."""
import dagster as dg

from orchestration.jobs import nightly_job

nightly_schedule = dg.ScheduleDefinition(
    name="nightly_refresh_0200",
    job=nightly_job,
    cron_schedule="0 2 * * *",
    execution_timezone="Europe/London",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Runs whatever is due every night; a second run the same night publishes nothing new.",
)
