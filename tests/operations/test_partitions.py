"""Partitions, backfill policy, retries and the Definitions the UI shows."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import dagster as dg
import pytest

from assets.submissions import discover
from orchestration.definitions import defs
from orchestration.partitions import (AS_OF, LONDON, PUBLISH, REPORTING, Scope, due_range, instance_sites,
                                      is_period, rectangle, register_sites, registry_sites, scope_of_run)
from orchestration.retries import RETRY_POLICY
from orchestration.schedules import nightly_schedule
from orchestration.settings import Settings, load_registry

SITES = [s.site_code for s in load_registry()]


def run_with(**tags: str) -> dg.DagsterRun:
    return dg.DagsterRun(job_name="nightly_refresh", tags=tags)


def test_sites_are_the_registry_registered_in_the_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with dg.instance_for_test() as instance:
        assert register_sites(instance) == SITES and instance_sites(instance) == SITES
        registry = tmp_path / "sites.yaml"
        registry.write_text("sites:\n  - {site_code: zz_new, programme: complete_care_communities, "
                            "geography: {practices: [P00001]}}\n")
        monkeypatch.setenv("C20P5_SITES_FILE", str(registry))  # read when used: no reload needed
        assert register_sites(instance) == [*SITES, "zz_new"]
        assert "2026-10|zz_new" in REPORTING.get_partition_keys(dynamic_partitions_store=instance)
    assert is_period("2026-10") and not is_period("2022-12") and not is_period("Oct-2026")


# Not per site-month: the reference data every site-month uses, and the reports of the whole warehouse.
UNPARTITIONED = {dg.AssetKey("reference_data"), dg.AssetKey("evaluation_reports")}


def test_the_pipeline_is_partitioned_by_site_month_backfilled_in_one_run_and_retried() -> None:
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if not node.is_materializable or key in UNPARTITIONED:
            assert key in UNPARTITIONED or not node.is_materializable
            continue
        assert node.partitions_def == REPORTING and node.backfill_policy == dg.BackfillPolicy.single_run(), key
        assert defs.resolve_assets_def(key).op.retry_policy == RETRY_POLICY, key
    assert graph.get(dg.AssetKey("reference_data")).partitions_def is None


def test_a_range_is_a_rectangle_of_months_and_sites() -> None:
    with dg.instance_for_test() as instance:
        register_sites(instance)
        one = rectangle("2026-08", "2026-10", ["blackpool_central"])
        scope = scope_of_run(run_with(**{"dagster/asset_partition_range_start": one.start,
                                         "dagster/asset_partition_range_end": one.end}), instance)
        assert scope == Scope(("2026-08", "2026-09", "2026-10"), ("blackpool_central",))
        assert scope.dbt_vars() == {"period_start": "2026-08-31", "period_end": "2026-10-31",
                                    "site_codes": ["blackpool_central"], "site_code": "blackpool_central"}
        every = rectangle("2026-10", "2026-10", SITES)
        assert len(REPORTING.get_partition_keys_in_range(every, dynamic_partitions_store=instance)) == len(SITES)
        single = scope_of_run(run_with(**{"dagster/partition": "2026-10|lsc"}), instance)
        assert single.describe() == "2026-10 x lsc" and not single.publishes("lsc", "2026-09-30")
        nightly = scope_of_run(run_with(**{"dagster/partition": "2026-10|lsc", PUBLISH: "all"}), instance)
    assert nightly.publishes("burnley_east", "2024-01-31") and nightly.published_sites == SITES
    assert nightly.dbt_vars() == {"period_end": "2026-10-31", "site_codes": SITES}


def test_the_nightly_covers_the_new_months_through_the_latest_for_every_site(isolated_settings: Settings) -> None:
    for period in ("2026-07", "2026-09"):
        (isolated_settings.landing_dir / "sites" / "lsc" / period).mkdir(parents=True)
        (isolated_settings.landing_dir / "sites" / "lsc" / period / "manifest.json").write_text("{}")
    sha = {s.period: s.manifest_sha[:12] for s in discover(isolated_settings.landing_dir)}
    first, last = SITES[0], SITES[-1]
    keys = due_range(isolated_settings, {"lsc/2026-05": "x", "lsc/2026-09": sha["2026-09"]}, SITES)
    assert (keys.start, keys.end) == (f"2026-07|{first}", f"2026-09|{last}")  # 07 is new
    keys = due_range(isolated_settings, {"lsc/2026-07": sha["2026-07"], "lsc/2026-09": sha["2026-09"]}, SITES)
    assert (keys.start, keys.end) == (f"2026-09|{first}", f"2026-09|{last}")  # nothing new: the latest
    assert due_range(isolated_settings, None, SITES).start == f"2026-07|{first}"  # unknown: all landed is new


def test_the_schedule_skips_when_nothing_landed(isolated_settings: Settings) -> None:
    with dg.instance_for_test() as instance:
        result = nightly_schedule(dg.build_schedule_context(
            instance=instance, scheduled_execution_time=datetime(2026, 11, 24, 2, 0, tzinfo=LONDON)))
    assert isinstance(result, dg.SkipReason)


def test_the_ui_shows_the_sensors_schedule_and_a_freshness_check_per_site() -> None:
    assert {s.name for s in defs.sensors} == {"submission_sensor", "run_failure_alert"}
    checks = {k.name for k in defs.resolve_asset_graph().asset_check_keys}
    assert {f"freshness_{code}" for code in registry_sites()} <= checks
    assert AS_OF == "c20p5/as_of"
