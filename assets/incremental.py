"""Which periods a dbt build rebuilds (dbt_project/macros/incremental.sql).

Every period-keyed model is an incremental table. A build rebuilds every site's periods from the
earliest one that may differ from what the build database holds, through the latest:
  - the run's own earliest period (what it was asked to build),
  - every period whose raw snapshot was promoted since the last good build started,
  - the periods of any build since then that did not finish (it may have rebuilt some models only).
Everything is rebuilt (`--full-refresh`), seeds included, when there was no good build, when a
period-keyed table or a seed is missing, or when anything else the models read changed: the dbt project's files (models, macros,
seeds, tests, vars), the Python statistics module, the dbt/DuckDB versions, or the reference data.

The record of builds is `audit.dbt_builds` in the build database, next to what it describes."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import duckdb

from assets.changes import file_digest
from orchestration.resources import table_exists
from orchestration.settings import DBT_PROJECT_DIR, PROJECT_ROOT

# What dbt reads from the project: a change to any of them can change every period.
DBT_SOURCES = ("models", "seeds", "macros", "tests", "dbt_project.yml", "profiles.yml")
PYTHON_MODULES = (PROJECT_ROOT / "assets" / "statistics.py",)  # imported by the dbt Python model
VERSIONED = ("dbt-core", "dbt-duckdb", "duckdb")
BUILDS = "audit.dbt_builds"


@dataclass(frozen=True)
class BuildPlan:
    rebuild_from: str | None  # ISO period_end, or None: every period (a full refresh)
    reason: str
    fingerprint: str

    def dbt_vars(self) -> dict[str, str]:
        return {"rebuild_from": self.rebuild_from} if self.rebuild_from else {}

    def dbt_flags(self) -> list[str]:
        """An incremental build skips dbt's unit tests: its code is the last good build's (the
        fingerprint), whose unit tests passed (21 of them, 15-40 s a night at 100k people)."""
        return ["--exclude-resource-type", "unit_test"] if self.rebuild_from else ["--full-refresh"]

    @property
    def loads_seeds(self) -> bool:
        """Seeds are code (their files are in the fingerprint): an incremental build's are already loaded
        and tested, by the last good build."""
        return self.rebuild_from is None

    def describe(self) -> str:
        what = f"periods from {self.rebuild_from}" if self.rebuild_from else "full refresh"
        return f"{what} ({self.reason})"


def project_files() -> list[Path]:
    files: list[Path] = []
    for name in DBT_SOURCES:
        root = DBT_PROJECT_DIR / name
        files += [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return files


def code_fingerprint() -> str:
    """The models' code: the dbt project's files, the statistics module and the engine versions."""
    files = file_digest([*project_files(), *PYTHON_MODULES], root=PROJECT_ROOT)
    return hashlib.sha256(f"{files}\0{json.dumps({p: version(p) for p in VERSIONED})}".encode()).hexdigest()


def _ensure_builds(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"""create table if not exists {BUILDS} (build_id bigint primary key, run_id varchar,
        fingerprint varchar, rebuild_from date, reason varchar, started_at timestamp, finished_at timestamp)""")


def _fingerprint(con: duckdb.DuckDBPyConnection, code: str) -> str:
    reference = (con.execute("select max(fingerprint) from audit.reference").fetchone()[0]
                 if table_exists(con, "audit", "reference") else None)
    return hashlib.sha256(f"{code}\0{reference or ''}".encode()).hexdigest()


def incremental_relations(manifest: dict) -> list[tuple[str, str]]:
    """(schema, table) of every enabled incremental model of the manifest."""
    return sorted((n["schema"], n["alias"]) for n in manifest["nodes"].values()
                  if n["resource_type"] == "model" and n["config"].get("materialized") == "incremental")


def seed_relations(manifest: dict) -> list[tuple[str, str]]:
    return sorted((n["schema"], n["alias"]) for n in manifest["nodes"].values() if n["resource_type"] == "seed")


def _missing(con: duckdb.DuckDBPyConnection, relations: list[tuple[str, str]]) -> list[str]:
    present = set(con.execute("select table_schema, table_name from information_schema.tables").fetchall())
    return [f"{s}.{t}" for s, t in relations if (s, t) not in present]


def plan_build(con: duckdb.DuckDBPyConnection, manifest: dict, run_from: str, code: str | None = None,
               force_full: bool = False) -> BuildPlan:
    """What this build rebuilds; `run_from` is the period_end of the run's earliest period, `force_full`
    the run's full-refresh tag (`c20p5 run --full-refresh`)."""
    _ensure_builds(con)
    fingerprint = _fingerprint(con, code or code_fingerprint())

    def full(reason: str) -> BuildPlan:
        return BuildPlan(None, reason, fingerprint)

    if force_full:
        return full("asked for")
    last = con.execute(f"""select started_at, fingerprint from {BUILDS} where finished_at is not null
                           order by build_id desc limit 1""").fetchone()
    if last is None:
        return full("no earlier build")
    if last[1] != fingerprint:
        return full("the dbt project, the statistics code or the reference data changed")
    missing = _missing(con, incremental_relations(manifest) + seed_relations(manifest))
    if missing:
        return full(f"{missing[0]} is missing" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    unfinished = con.execute(f"""select count(*), count(rebuild_from), min(rebuild_from) from {BUILDS}
                                 where finished_at is null and started_at >= ?""", [last[0]]).fetchone()
    if unfinished[0] > unfinished[1]:
        return full("a full refresh since the last good build did not finish")
    promoted = con.execute("""select min(cast(period_end as date)) from audit.submissions
                              where status = 'loaded' and decided_at >= ?""", [last[0]]).fetchone()[0] \
        if table_exists(con, "audit", "submissions") else None
    starts = {str(run_from): "the run's first period"}
    if unfinished[2] is not None:
        starts.setdefault(str(unfinished[2]), "an unfinished build since the last good one")
    if promoted is not None:
        starts.setdefault(str(promoted), "a snapshot promoted since the last good build")
    since = min(starts)
    return BuildPlan(since, starts[since], fingerprint)


def record_start(con: duckdb.DuckDBPyConnection, plan: BuildPlan, run_id: str) -> int:
    _ensure_builds(con)
    build_id = con.execute(f"select coalesce(max(build_id), 0) + 1 from {BUILDS}").fetchone()[0]
    con.execute(f"insert into {BUILDS} values (?, ?, ?, cast(? as date), ?, now(), null)",
                [build_id, run_id, plan.fingerprint, plan.rebuild_from, plan.reason])
    return build_id


def record_finish(con: duckdb.DuckDBPyConnection, build_id: int) -> None:
    con.execute(f"update {BUILDS} set finished_at = now() where build_id = ?", [build_id])
