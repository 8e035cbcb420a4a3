"""Reporting partitions (SPEC §11): one partition per site and month, key `<YYYY-MM>|<site_code>`.

`period` is monthly, keyed like the landing folder (`2026-10`), from FIRST_PERIOD up to the current
month. `site` is dynamic: the site registry (C20P5_SITES_FILE, read when used, like every setting)
is registered in the Dagster instance by whatever launches runs (the sensor, the schedule, `c20p5`),
so a changed registry needs no reload. A Dagster range over a multi-partition is a rectangle (every
period in the range x every site between the two, in registration order), so one site's month, a
range of months for one site or for every site are each one run, which ingests and publishes only
those site-months.

The nightly run (schedule, `c20p5 run`) is tagged PUBLISH=all: its partitions are the months with
something new (else the latest month) x every site, and it considers every site-period, leaving the
warehouse a complete current snapshot (writing only the site-periods readers would see change). Partitioning it by what is new, not by
everything, keeps a ranged run's per-partition events (about 95 assets each) in proportion.
"""
from __future__ import annotations

import calendar
import warnings
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

import dagster as dg

from orchestration.settings import Settings, load_registry

FIRST_PERIOD = "2023-01"  # the earliest month a backfill can reach
PERIOD, SITE = "period", "site"
SITE_PARTITIONS = "site"   # the dynamic partitions' name in the instance
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
PARTITION = "dagster/partition"
AS_OF = "c20p5/as_of"      # the date a run judges freshness by: the schedule's tick, else today
PUBLISH = "c20p5/publish"  # "all": publish every site-period, not only the run's partitions
FULL_REFRESH = "c20p5/full_refresh"  # "true": dbt rebuilds every period (else assets/incremental.py decides)
LONDON = ZoneInfo("Europe/London")

# end_offset=1: the month in progress is a partition too, so an early extract is not refused.
MONTHS = dg.MonthlyPartitionsDefinition(start_date=FIRST_PERIOD, fmt="%Y-%m", end_offset=1)
REPORTING = dg.MultiPartitionsDefinition({PERIOD: MONTHS, SITE: dg.DynamicPartitionsDefinition(name=SITE_PARTITIONS)})
# A backfill becomes one run per rectangle, not one per site-month (each run builds dbt once).
SINGLE_RUN = dg.BackfillPolicy.single_run()
warnings.filterwarnings("ignore", message=".*`backfill_policy`.*", category=dg.BetaWarning)


def registry_sites() -> list[str]:
    """The site registry in force now (C20P5_SITES_FILE), in its order."""
    return [s.site_code for s in load_registry()]


def instance_sites(instance: dg.DagsterInstance) -> list[str]:
    """Site partitions registered in the instance, in registration order (the order ranges follow)."""
    return list(instance.get_dynamic_partitions(SITE_PARTITIONS))


def missing_sites(instance: dg.DagsterInstance) -> list[str]:
    have = set(instance_sites(instance))
    return [code for code in registry_sites() if code not in have]


def register_sites(instance: dg.DagsterInstance) -> list[str]:
    """Add the registry's new sites as partitions; returns every registered site. A site that left the
    registry stays (its history is still partitioned by it)."""
    if missing := missing_sites(instance):
        instance.add_dynamic_partitions(SITE_PARTITIONS, missing)
    return instance_sites(instance)


def is_period(period: str) -> bool:
    """A month that is a partition now (not before FIRST_PERIOD, not after the current month)."""
    try:
        return MONTHS.has_partition_key(period)
    except Exception:  # a folder name that is not YYYY-MM at all
        return False


def partition_key(site_code: str, period: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({PERIOD: period, SITE: site_code})


def period_end(period: str) -> str:
    y, m = (int(x) for x in period.split("-"))
    return date(y, m, calendar.monthrange(y, m)[1]).isoformat()


@dataclass(frozen=True)
class Scope:
    """The site-months one run ingests, and what it publishes: those, or every site-period."""
    periods: tuple[str, ...]  # YYYY-MM, ascending
    sites: tuple[str, ...]    # registration order
    everything: bool = False  # PUBLISH=all: the nightly's complete snapshot

    def covers(self, site_code: str, period: str) -> bool:
        return site_code in self.sites and period in self.periods

    def publishes(self, site_code: str, period_end_iso: str) -> bool:
        return self.everything or self.covers(site_code, str(period_end_iso)[:7])

    @property
    def published_sites(self) -> list[str]:
        return registry_sites() if self.everything else list(self.sites)

    def describe(self) -> str:
        months = self.periods[0] if len(self.periods) == 1 else f"{self.periods[0]}..{self.periods[-1]}"
        sites = "all sites" if set(registry_sites()) <= set(self.sites) else ", ".join(self.sites)
        return f"{months} x {sites}" + (", publishing every site-period" if self.everything else "")

    def dbt_vars(self) -> dict:
        """What dbt is told (`--vars`): the period and sites published. Which periods the models rebuild
        is assets/incremental.py's (`rebuild_from`). A nightly's vars change only with a new latest
        month, so its parse is reused."""
        if self.everything:
            return {"period_end": period_end(self.periods[-1]), "site_codes": registry_sites()}
        out = {"period_start": period_end(self.periods[0]), "period_end": period_end(self.periods[-1]),
               "site_codes": list(self.sites)}
        if len(self.sites) == 1:
            out["site_code"] = self.sites[0]
        return out


def scope_of_run(run: dg.DagsterRun, instance: dg.DagsterInstance) -> Scope:
    """From the run's tags (single key or range), the same for assets and asset checks."""
    tags = run.tags
    everything = tags.get(PUBLISH) == "all"
    if RANGE_START in tags and RANGE_END in tags:
        start, end = (REPORTING.get_partition_key_from_str(tags[k]).keys_by_dimension for k in (RANGE_START, RANGE_END))
        periods = MONTHS.get_partition_keys_in_range(dg.PartitionKeyRange(start[PERIOD], end[PERIOD]))
        order = instance_sites(instance)
        sites = order[order.index(start[SITE]):order.index(end[SITE]) + 1]
        return Scope(tuple(periods), tuple(sites), everything)
    if PARTITION in tags:
        key = REPORTING.get_partition_key_from_str(tags[PARTITION]).keys_by_dimension
        return Scope((key[PERIOD],), (key[SITE],), everything)
    raise dg.Failure("this run has no reporting partition: launch it for a site and month (or a range) "
                     "from the UI, `c20p5 run` or `c20p5 backfill`", allow_retries=False)


def as_of(run: dg.DagsterRun) -> date:
    """The run's as-of date (tag c20p5/as_of, an ISO date or time), else today in London."""
    tag = run.tags.get(AS_OF)
    if tag:
        return datetime.fromisoformat(tag).date() if "T" in tag else date.fromisoformat(tag)
    return datetime.now(LONDON).date()


def rectangle(first: str, last: str, sites: list[str]) -> dg.PartitionKeyRange:
    """Months first..last (YYYY-MM) x the registered sites from sites[0] to sites[-1]."""
    return dg.PartitionKeyRange(str(partition_key(sites[0], first)), str(partition_key(sites[-1], last)))


def range_tags(keys: dg.PartitionKeyRange) -> dict[str, str]:
    return {RANGE_START: keys.start, RANGE_END: keys.end}


def loaded_submissions(settings: Settings, timeout: float = 20.0) -> dict[str, str] | None:
    """"site/YYYY-MM" -> manifest sha (12 characters) of each loaded submission; {} before the first
    run; None (logged) when a run keeps the build database locked for longer than `timeout`."""
    from orchestration.resources import BuildDatabaseLocked, log, peek_build_db, table_exists
    try:
        with peek_build_db(settings, timeout=timeout) as con:
            if con is None or not table_exists(con, "audit", "submissions"):
                return {}
            rows = con.execute("""select site_code || '/' || period, manifest_sha from audit.submissions
                                  where status = 'loaded'""").fetchall()
            return {key: sha[:12] for key, sha in rows}
    except BuildDatabaseLocked as exc:
        log.warning(f"loaded submissions unknown: {exc}")
        return None


def due_range(settings: Settings, loaded: dict[str, str] | None, sites: list[str]) -> dg.PartitionKeyRange | None:
    """The nightly's partitions: months with a submission not loaded yet, through the latest month
    landed or loaded (the latest alone when nothing is new), x `sites` (every registered site).
    Unknown `loaded` (None) counts everything landed as new."""
    from assets.submissions import discover  # here: assets import this module
    landed = [s for s in discover(settings.landing_dir) if is_period(s.period)]
    known = loaded or {}
    new = {s.period for s in landed if known.get(f"{s.site_code}/{s.period}") != s.manifest_sha[:12]}
    periods = sorted({s.period for s in landed} | {k.split("/")[1] for k in known if is_period(k.split("/")[1])})
    if not periods or not sites:
        return None
    return rectangle(min(new | {periods[-1]}), periods[-1], sites)


__all__ = ["REPORTING", "SINGLE_RUN", "Scope", "scope_of_run", "rectangle", "range_tags", "due_range",
           "partition_key", "is_period", "registry_sites", "instance_sites", "register_sites", "missing_sites",
           "period_end", "as_of", "AS_OF", "PUBLISH", "FULL_REFRESH", "SITE_PARTITIONS", "loaded_submissions"]
