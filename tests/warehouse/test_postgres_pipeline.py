"""The nightly job end to end through Dagster, publishing to PostgreSQL: `c20p5 generate` then
`c20p5 run` with C20P5_WAREHOUSE_URL=postgresql://… (the CLI, as an operator runs it)."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from assets.warehouse import EVALUATOR_ROLE, INDICATOR_VALUE_COLUMNS, INEQUALITY_COLUMNS
from orchestration.settings import SHIPPED_SITES_FILE, load_sites
from tests.warehouse.conftest import PgDatabase, new_database, pg_frame

pytestmark = pytest.mark.slow
SITES = sorted(s.site_code for s in load_sites(SHIPPED_SITES_FILE))


@dataclass
class Run:
    db: PgDatabase
    stdout: str


def c20p5(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "c20p5"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "orchestration.cli"]
    return subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def run(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    root = tmp_path_factory.mktemp("pg_pipeline")
    with new_database(pg_server) as db:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("C20P5_", "DAGSTER_HOME"))}
        env.update(C20P5_LANDING_DIR=str(root / "landing"), C20P5_WORK_DIR=str(root / "work"),
                   C20P5_WAREHOUSE_URL=db.publisher_url, C20P5_LOG_LEVEL="WARNING")
        generated = c20p5("generate", "--people", "800", "--months", "2", env=env)
        assert generated.returncode == 0, generated.stderr[-3000:]
        result = c20p5("run", env=env)
        assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-5000:])
        yield Run(db, result.stdout)


def test_the_run_publishes_every_site_to_postgresql(run: Run) -> None:
    assert "publication: 1;" in run.stdout and "6 site-period(s) published" in run.stdout
    url = run.db.publisher_url
    columns = pg_frame(url, """select table_name, string_agg(column_name, ',' order by ordinal_position) as c
                               from information_schema.columns where table_schema = 'evaluation' group by 1""")
    columns = dict(zip(columns.table_name, columns.c))
    assert columns["indicator_values"] == ",".join(INDICATOR_VALUE_COLUMNS)
    assert columns["inequality_summary"] == ",".join(INEQUALITY_COLUMNS)
    national = pg_frame(url, "select distinct site_code, breakdown from evaluation.indicator_values")
    assert sorted(set(national.site_code)) == SITES and not {"practice", "pcn"} & set(national.breakdown)
    for site in SITES:
        local = pg_frame(url, f"select distinct site_code, breakdown from site_{site}.indicator_values")
        assert set(local.site_code) == {site} and {"practice", "pcn"} & set(local.breakdown), site


def test_no_small_number_reaches_the_postgresql_warehouse(run: Run) -> None:
    url = run.db.publisher_url
    for table in ["evaluation.indicator_values_history", *(f"site_{s}.indicator_values" for s in SITES)]:
        bad = pg_frame(url, f"""select count(*) filter (where numerator between 1 and 7 or denominator between 1 and 7
                                                         or numerator % 5 <> 0 or denominator % 5 <> 0) as small,
            count(*) filter (where suppressed and num_nonnulls(value, lower_ci, upper_ci) > 0) as leaked,
            count(*) filter (where suppressed) as suppressed from {table}""").iloc[0]
        assert bad.small == 0 and bad.leaked == 0 and bad.suppressed > 0, (table, bad)
    gaps = pg_frame(url, """select count(*) as n from evaluation.inequality_summary s
        join evaluation.indicator_values v using (site_code, period_end, indicator_id)
        where v.breakdown = 'core20' and v.suppressed
          and ((v.breakdown_value = 'core20' and s.core20_value is not null)
            or (v.breakdown_value = 'not_core20' and s.not_core20_value is not null))""")
    assert gaps.n[0] == 0


def test_the_run_sets_up_roles_evaluators_and_sites_log_in_with(run: Run) -> None:
    evaluator = run.db.login_as(EVALUATOR_ROLE)
    assert sorted(pg_frame(evaluator, "select distinct site_code from evaluation.indicator_values").site_code) == SITES
    site = run.db.login_as(f"c20p5_site_{SITES[0]}")
    assert set(pg_frame(site, "select distinct site_code from evaluation.indicator_values").site_code) == {SITES[0]}
    assert set(pg_frame(site, f"select distinct site_code from site_{SITES[0]}.sites").site_code) == {SITES[0]}
