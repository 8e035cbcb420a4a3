"""The dbt project as Dagster assets: every model, seed and test in one `@dbt_assets`, so dbt tests
become asset checks (error severity blocks downstream, i.e. the publish) in the same run.

Partitioned like the ingest: dbt is told the run's site-months through `--vars` (period_start,
period_end, site_codes, and site_code for a one-site run). The models are incremental by period
(assets/incremental.py): a build rebuilds every site's periods from the earliest that changed since the
last good build (`rebuild_from`), or all of them (`--full-refresh`), which keeps comparators and trends
whole; the publish picks the run's site-periods.

New `--vars` make dbt re-parse the whole project (dbt-core #3102). Each distinct set of vars therefore
gets its own target directory under C20P5_WORK_DIR/dbt, whose partial_parse.msgpack the next run
with the same vars (the nightly, a retry, a re-run) reuses; a new set starts from the prepared one.

Seeds (45 of the project's 86 nodes: the codelists, the catalogue, lookups) are built by the same step
but are not Dagster assets: a partitioned asset costs one materialization event per partition of the
run, ~10 ms of Dagster each (45 x 338 partitions of a 26-site x 13-month nightly was ~2 min), and a seed
is the same table for every partition. They are built first, with their tests, in a dbt call of their
own, on a full refresh only (they are part of the code an incremental build found unchanged). (Making the dbt assets unpartitioned instead cuts every model's events, but then the publish,
downstream, is no longer reached by a Dagster asset backfill over partitions: docs/performance.md.)

Source tests run inside `dbt build` but are not attached as checks to the ingest assets: checks
that a dbt step executes on assets outside it split the dbt op and reorder the run."""

import hashlib
import json
import os
import queue
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import dagster as dg
from dagster_dbt import (DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, DbtProject,
                         dbt_assets)

from assets.incremental import plan_build, project_files, record_finish, record_start
from orchestration.partitions import FULL_REFRESH, REPORTING, SINGLE_RUN, period_end, scope_of_run
from orchestration.resources import PipelineResource
from orchestration.retries import RETRY_POLICY, data_errors_fail_fast
from orchestration.settings import DBT_PROJECT_DIR

# The dbt beside this interpreter, so a venv works without being activated.
DBT_EXECUTABLE = str(Path(sys.executable).with_name("dbt"))
DBT_PROJECT = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
TRANSLATOR = DagsterDbtTranslator(settings=DagsterDbtTranslatorSettings(
    enable_asset_checks=True, enable_duplicate_source_asset_keys=True))
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


@dbt_assets(manifest=ensure_manifest(), project=DBT_PROJECT, dagster_dbt_translator=TRANSLATOR, exclude=SEEDS,
            partitions_def=REPORTING, backfill_policy=SINGLE_RUN, retry_policy=RETRY_POLICY)
def dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource,
               pipeline: PipelineResource) -> Iterator:
    """`dbt build --vars {...}` against the private build database of this run's settings."""
    settings = pipeline.settings()
    os.environ["C20P5_BUILD_DB_PATH"] = str(settings.build_db_path)
    scope = scope_of_run(context.run, context.instance)
    with pipeline.build_db() as con:
        plan = plan_build(con, json.loads(DBT_PROJECT.manifest_path.read_text()), period_end(scope.periods[0]),
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
        build = dbt.cli(["build", *vars_arg, *plan.dbt_flags()], context=context, target_path=target)
        build.process.stdout = DrainedPipe(build.process.stdout)
        yield from build.stream()
    with pipeline.build_db() as con:
        record_finish(con, build_id)
    context.log.info(f"dbt build finished in {time.monotonic() - started:.1f} s")
