"""The dbt project in one Dagster step: `dbt build` of every model and test, with the marts (the
models under models/marts/) as its Dagster assets and their dbt tests as asset checks (error severity
blocks downstream, i.e. the publish) in the same run.

Only the marts are assets. A partitioned asset costs one materialization event per partition of the
run, ~10 ms of Dagster each: the 35 staging and intermediate models were ~12,000 of a 26-site x
13-month nightly's events (338 partitions) and most of the dbt step's "overhead" (docs/performance.md,
session 6). They are still built and tested in the same `dbt build`, a failing test still fails the
step (and so blocks the publish), dbt docs still show them, and each mart's Dagster dependencies are
the assets it is built from (staged_extracts, reference_data, the seeds), not the hidden models between.

Partitioned like the ingest: dbt is told the run's site-months through `--vars` (period_start,
period_end, site_codes, and site_code for a one-site run). The models are incremental by period
(assets/incremental.py): a build rebuilds every site's periods from the earliest that changed since the
last good build (`rebuild_from`), or all of them (`--full-refresh`), which keeps comparators and trends
whole; the publish picks the run's site-periods.

New `--vars` make dbt re-parse the whole project (dbt-core #3102). Each distinct set of vars therefore
gets its own target directory under C20P5_WORK_DIR/dbt, whose partial_parse.msgpack the next run
with the same vars (the nightly, a retry, a re-run) reuses; a new set starts from the prepared one.

Seeds (45 of the project's 86 nodes: the codelists, the catalogue, lookups) are not Dagster assets
either, for the same reason (a seed is the same table for every partition). They are built first, with
their tests, in a dbt call of their own, on a full refresh only (they are part of the code an
incremental build found unchanged). (Making the dbt assets unpartitioned instead cuts every model's
events, but then the publish, downstream, is no longer reached by a Dagster asset backfill over
partitions: docs/performance.md.)

The main call is made without Dagster's dbt selection (`dbt build --select +<mart> ...`, the marts the
run materializes and everything upstream but the seeds), and only the results of the marts and of the
tests on them are handed to Dagster; the rest, source tests included, stay in dbt's log."""

import hashlib
import json
import os
import queue
import shutil
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import dagster as dg
from dagster_dbt import (DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, DbtProject,
                         dbt_assets)

from assets.incremental import plan_build, project_files, record_finish, record_start
from orchestration.partitions import FULL_REFRESH, REPORTING, SINGLE_RUN, period_end, scope_of_run
from orchestration.resources import BUILD_DB_MEMORY, PipelineResource
from orchestration.retries import RETRY_POLICY, data_errors_fail_fast
from orchestration.settings import DBT_PROJECT_DIR

# The dbt beside this interpreter, so a venv works without being activated.
DBT_EXECUTABLE = str(Path(sys.executable).with_name("dbt"))
DBT_PROJECT = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
KEEP_TARGETS = 12  # per-vars target directories kept (each holds a manifest and a partial parse)
PARTIAL_PARSE = "partial_parse.msgpack"


def _project_sources_newer_than(manifest: Path) -> bool:
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    return any(f.stat().st_mtime > built for f in project_files())


def dbt_resource() -> DbtCliResource:
    return DbtCliResource(project_dir=DBT_PROJECT, dbt_executable=DBT_EXECUTABLE)


def ensure_manifest() -> Path:
    """Parse once: the prepared manifest (and its partial parse) is reused until a dbt file changes."""
    if _project_sources_newer_than(DBT_PROJECT.manifest_path):
        dbt_resource().cli(["parse", "--quiet"], target_path=DBT_PROJECT.target_path).wait()
    return DBT_PROJECT.manifest_path


def target_for(work_dir: Path, dbt_vars: dict) -> Path:
    """One target directory per distinct set of vars, so its partial parse can be reused."""
    digest = hashlib.sha256(json.dumps(dbt_vars, sort_keys=True).encode()).hexdigest()[:16]
    target = work_dir / "dbt" / f"vars-{digest}"
    target.mkdir(parents=True, exist_ok=True)
    os.utime(target)  # most recently used: kept by _prune_targets
    return target


def _prune_targets(work_dir: Path, keep: int = KEEP_TARGETS) -> None:
    dirs = sorted((work_dir / "dbt").glob("vars-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in dirs[keep:]:
        shutil.rmtree(old, ignore_errors=True)


SEEDS = "resource_type:seed"
MARTS_PATH = "models/marts/"  # the dbt models that are Dagster assets
MANIFEST = json.loads(ensure_manifest().read_text())  # read once, here


def is_mart(node: Mapping[str, Any]) -> bool:
    return node.get("resource_type") == "model" and node.get("original_file_path", "").startswith(MARTS_PATH)


def _asset_ancestors(manifest: Mapping[str, Any], unique_id: str) -> list[str]:
    """The nearest upstream nodes that are Dagster assets (or stand for one: sources, seeds), through the
    models that are not."""
    found, seen, todo = [], set(), list(manifest["nodes"][unique_id]["depends_on"]["nodes"])
    while todo:
        uid = todo.pop()
        if uid in seen:
            continue
        seen.add(uid)
        node = manifest["nodes"].get(uid) or manifest["sources"].get(uid, {})
        if is_mart(node) or not uid.startswith("model."):
            found.append(uid)
        else:
            todo.extend(node["depends_on"]["nodes"])
    return sorted(found)


class MartsTranslator(DagsterDbtTranslator):
    """A mart depends, in Dagster, on the assets it is built from, not on the models between them."""

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        if not is_mart(manifest["nodes"].get(unique_id, {})):
            return spec
        keys = {super(MartsTranslator, self).get_asset_spec(manifest, uid, project).key
                for uid in _asset_ancestors(manifest, unique_id)}
        return spec.replace_attributes(deps=[dg.AssetDep(k) for k in sorted(keys, key=str)])


TRANSLATOR = MartsTranslator(settings=DagsterDbtTranslatorSettings(
    enable_asset_checks=True, enable_duplicate_source_asset_keys=True))


MART_KEYS = {uid: TRANSLATOR.get_asset_spec(MANIFEST, uid, DBT_PROJECT).key
             for uid, node in MANIFEST["nodes"].items() if is_mart(node)}


def _marts_of(keys: set[dg.AssetKey]) -> set[str]:
    """The unique ids of the marts with these asset keys."""
    return {uid for uid, key in MART_KEYS.items() if key in keys}


def _names(marts: set[str], prefix: str = "") -> str:
    return " ".join(f"{prefix}{MANIFEST['nodes'][uid]['name']}" for uid in sorted(marts))


def _of_a_mart(unique_id: str | None, marts: set[str]) -> bool:
    """One of `marts`, or a test on one: the dbt results the step hands to Dagster."""
    node = MANIFEST["nodes"].get(unique_id or "", {})
    if node.get("resource_type") == "test":
        parents = node["depends_on"]["nodes"]
        return (node.get("attached_node") or (parents[0] if len(parents) == 1 else None)) in marts
    return unique_id in marts


class DrainedPipe:
    """A subprocess's stdout read into memory by a thread of its own, iterated like the pipe.

    dagster-dbt reads dbt's stdout in the step's thread, between storing the Dagster events of the
    lines before. At 338 partitions that is ~16,500 materializations, and dbt sat blocked on a full
    pipe for 161 s of a 405 s build (docs/performance.md, session 5). Drained, dbt runs on while
    the events are stored; the lines (a few MB of JSON) wait in memory."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._pipe, self._lines = pipe, queue.SimpleQueue()
        self._reader = threading.Thread(target=self._drain, name="dbt-stdout", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        try:
            for line in self._pipe:
                self._lines.put(line)
        finally:
            self._lines.put(None)  # end of output (or the pipe failed: the process's exit code tells)

    def __iter__(self) -> Iterator[bytes]:
        while (line := self._lines.get()) is not None:
            yield line

    @property
    def closed(self) -> bool:
        return self._pipe.closed

    def __enter__(self) -> "DrainedPipe":
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._reader.is_alive():  # else it still reads (an interrupted step): it ends with the process
            self._pipe.close()


@dbt_assets(manifest=MANIFEST, project=DBT_PROJECT, dagster_dbt_translator=TRANSLATOR, select=f"path:{MARTS_PATH}",
            partitions_def=REPORTING, backfill_policy=SINGLE_RUN, retry_policy=RETRY_POLICY)
def dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource,
               pipeline: PipelineResource) -> Iterator:
    """`dbt build --vars {...}` against the private build database of this run's settings."""
    settings = pipeline.settings()
    os.environ["C20P5_BUILD_DB_PATH"] = str(settings.build_db_path)
    os.environ["C20P5_BUILD_DB_MEMORY"] = BUILD_DB_MEMORY
    scope = scope_of_run(context.run, context.instance)
    marts = _marts_of(set(context.selected_asset_keys))
    if not marts:  # only checks were picked (the UI's "Execute checks"): their marts' tests, no build
        checked = _marts_of({k.asset_key for k in context.selected_asset_check_keys})
        target = target_for(settings.work_dir, scope.dbt_vars())
        with data_errors_fail_fast("dbt test"):
            yield from _results(dbt, ["test", "--select", _names(checked), "--vars", json.dumps(scope.dbt_vars())],
                                target, checked, context)
        return
    with pipeline.build_db() as con:
        plan = plan_build(con, MANIFEST, period_end(scope.periods[0]),
                          force_full=context.run.tags.get(FULL_REFRESH) == "true")
        build_id = record_start(con, plan, context.run_id)
    dbt_vars = {**scope.dbt_vars(), **plan.dbt_vars()}
    target = target_for(settings.work_dir, dbt_vars)
    reused = (target / PARTIAL_PARSE).exists()
    _prune_targets(settings.work_dir)
    context.log.info(f"dbt build of {plan.describe()} --vars {json.dumps(dbt_vars)}: "
                     f"{'partial parse of an earlier run with these vars' if reused else 'new vars, full parse'}")
    started = time.monotonic()
    vars_arg = ["--vars", json.dumps(dbt_vars)]
    with data_errors_fail_fast("dbt build"):
        if plan.loads_seeds:
            dbt.cli(["build", "--select", SEEDS, *vars_arg], target_path=target).wait()
        # the selected marts and every model and test they are built from
        yield from _results(dbt, ["build", "--select", _names(marts, "+"), "--exclude", SEEDS, *vars_arg,
                                  *plan.dbt_flags()], target, marts, context)
    with pipeline.build_db() as con:
        record_finish(con, build_id)
    context.log.info(f"dbt build finished in {time.monotonic() - started:.1f} s")


def _results(dbt: DbtCliResource, args: list[str], target: Path, marts: set[str],
             context: dg.AssetExecutionContext) -> Iterator:
    """`dbt <args>` without Dagster's selection; the results of `marts` and of the tests on them, as
    Dagster events (every other node's stay in dbt's log)."""
    invocation = dbt.cli(args, manifest=MANIFEST, dagster_dbt_translator=TRANSLATOR, target_path=target)
    invocation.process.stdout = DrainedPipe(invocation.process.stdout)
    for event in invocation.stream_raw_events():
        if _of_a_mart(event.raw_event["data"].get("node_info", {}).get("unique_id"), marts):
            yield from event.to_default_asset_events(manifest=MANIFEST, dagster_dbt_translator=TRANSLATOR,
                                                     context=context, target_path=target, project=DBT_PROJECT)
