"""assets/incremental.plan_build: which periods a dbt build rebuilds, from the record of builds and
submissions in a real (in-memory) DuckDB build database."""
from __future__ import annotations

import duckdb
import pytest

from assets.incremental import BuildPlan, plan_build, record_finish, record_start

MANIFEST = {"nodes": {
    "model.c20p5.a": {"resource_type": "model", "schema": "main_intermediate", "alias": "a",
                      "config": {"materialized": "incremental"}},
    "model.c20p5.dim": {"resource_type": "model", "schema": "main_marts", "alias": "dim",
                        "config": {"materialized": "table"}},
    "seed.c20p5.s": {"resource_type": "seed", "schema": "main_seeds", "alias": "s", "config": {"materialized": "seed"}},
    "test.c20p5.t": {"resource_type": "test", "schema": "x", "alias": "t", "config": {"materialized": "test"}},
}}
CODE = "code-v1"


@pytest.fixture
def con():
    con = duckdb.connect()
    for schema in ("audit", "main_intermediate", "main_seeds"):
        con.execute(f"create schema {schema}")
    con.execute("create table main_intermediate.a (period_end date)")
    con.execute("create table main_seeds.s (code varchar)")
    con.execute("create table audit.reference (fingerprint varchar, loaded_at timestamp)")
    con.execute("insert into audit.reference values ('ref-1', now())")
    con.execute("""create table audit.submissions (submission_id varchar, site_code varchar, period varchar,
                   period_end varchar, status varchar, decided_at timestamp)""")
    yield con
    con.close()


def good_build(con, plan: BuildPlan) -> None:
    record_finish(con, record_start(con, plan, "run"))


def promote(con, period_end: str) -> None:
    con.execute("insert into audit.submissions values ('s', 'x', ?, ?, 'loaded', now())", [period_end[:7], period_end])


def test_the_first_build_is_a_full_refresh(con) -> None:
    plan = plan_build(con, MANIFEST, "2026-10-31", code=CODE)
    assert (plan.rebuild_from, plan.reason) == (None, "no earlier build")
    assert plan.dbt_flags() == ["--full-refresh"] and plan.dbt_vars() == {} and plan.loads_seeds


def test_after_a_good_build_only_the_runs_periods(con) -> None:
    good_build(con, plan_build(con, MANIFEST, "2026-10-31", code=CODE))
    plan = plan_build(con, MANIFEST, "2026-11-30", code=CODE)
    assert (plan.rebuild_from, plan.reason) == ("2026-11-30", "the run's first period")
    assert plan.dbt_vars() == {"rebuild_from": "2026-11-30"} and not plan.loads_seeds
    assert plan.dbt_flags() == ["--exclude-resource-type", "unit_test"]


def test_a_snapshot_promoted_since_the_last_good_build_is_rebuilt(con) -> None:
    good_build(con, plan_build(con, MANIFEST, "2026-10-31", code=CODE))
    promote(con, "2026-03-31")  # e.g. promoted by a run whose dbt step never started
    plan = plan_build(con, MANIFEST, "2026-11-30", code=CODE)
    assert (plan.rebuild_from, plan.reason) == ("2026-03-31", "a snapshot promoted since the last good build")


def test_promotions_before_the_last_good_build_do_not_count(con) -> None:
    promote(con, "2026-03-31")
    good_build(con, plan_build(con, MANIFEST, "2026-10-31", code=CODE))
    assert plan_build(con, MANIFEST, "2026-11-30", code=CODE).rebuild_from == "2026-11-30"


def test_an_unfinished_build_widens_the_next(con) -> None:
    good_build(con, plan_build(con, MANIFEST, "2026-10-31", code=CODE))
    record_start(con, plan_build(con, MANIFEST, "2026-06-30", code=CODE), "failed run")  # never finished
    plan = plan_build(con, MANIFEST, "2026-11-30", code=CODE)
    assert (plan.rebuild_from, plan.reason) == ("2026-06-30", "an unfinished build since the last good one")
    good_build(con, plan)
    assert plan_build(con, MANIFEST, "2026-11-30", code=CODE).rebuild_from == "2026-11-30"


def test_an_unfinished_full_refresh_forces_another(con) -> None:
    good_build(con, plan_build(con, MANIFEST, "2026-10-31", code=CODE))
    record_start(con, plan_build(con, MANIFEST, "2026-10-31", code="code-v2"), "failed run")
    plan = plan_build(con, MANIFEST, "2026-11-30", code=CODE)
    assert (plan.rebuild_from, plan.reason) == (None, "a full refresh since the last good build did not finish")


@pytest.mark.parametrize("change", ["code", "reference"])
def test_changed_code_or_reference_is_a_full_refresh(con, change: str) -> None:
    good_build(con, plan_build(con, MANIFEST, "2026-10-31", code=CODE))
    if change == "reference":
        con.execute("update audit.reference set fingerprint = 'ref-2'")
    plan = plan_build(con, MANIFEST, "2026-11-30", code="code-v2" if change == "code" else CODE)
    assert plan.rebuild_from is None and "changed" in plan.reason


def test_a_full_refresh_can_be_asked_for(con) -> None:
    good_build(con, plan_build(con, MANIFEST, "2026-10-31", code=CODE))
    plan = plan_build(con, MANIFEST, "2026-11-30", code=CODE, force_full=True)
    assert (plan.rebuild_from, plan.reason) == (None, "asked for")


@pytest.mark.parametrize("table", ["main_intermediate.a", "main_seeds.s"])
def test_a_missing_incremental_table_or_seed_is_a_full_refresh(con, table: str) -> None:
    good_build(con, plan_build(con, MANIFEST, "2026-10-31", code=CODE))
    con.execute(f"drop table {table}")
    plan = plan_build(con, MANIFEST, "2026-11-30", code=CODE)
    assert (plan.rebuild_from, plan.reason, plan.loads_seeds) == (None, f"{table} is missing", True)


def test_the_code_fingerprint_follows_the_dbt_project(tmp_path, monkeypatch) -> None:
    from assets import incremental
    files = {p.relative_to(incremental.DBT_PROJECT_DIR).parts[0] for p in incremental.project_files()}
    assert {"models", "macros", "seeds", "dbt_project.yml"} <= files
    assert not any(p.name in ("manifest.json", "partial_parse.msgpack") for p in incremental.project_files())

    project = tmp_path / "dbt_project"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text("name: x\n")
    model, statistics = project / "models" / "a.sql", tmp_path / "statistics.py"
    model.write_text("select 1")
    statistics.write_text("X = 1\n")
    monkeypatch.setattr(incremental, "PROJECT_ROOT", tmp_path)
    monkeypatch.setattr(incremental, "DBT_PROJECT_DIR", project)
    monkeypatch.setattr(incremental, "PYTHON_MODULES", (statistics,))
    first = incremental.code_fingerprint()
    assert incremental.code_fingerprint() == first
    model.write_text("select 2")
    second = incremental.code_fingerprint()
    statistics.write_text("X = 2\n")
    assert len({first, second, incremental.code_fingerprint()}) == 3
