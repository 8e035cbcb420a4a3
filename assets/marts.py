"""The dbt project as Dagster assets: every model, seed and test in one `@dbt_assets`, so dbt tests
become asset checks (error severity blocks downstream, i.e. the publish) in the same run.

Source tests run inside `dbt build` but are not attached as checks to the ingest assets: checks
that a dbt step executes on assets outside it split the dbt op and reorder the run."""

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from dagster_dbt import (DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, DbtProject,
                         dbt_assets)

from orchestration.resources import PipelineResource
from orchestration.settings import DBT_PROJECT_DIR

# The dbt beside this interpreter, so a venv works without being activated.
DBT_EXECUTABLE = str(Path(sys.executable).with_name("dbt"))
DBT_PROJECT = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
TRANSLATOR = DagsterDbtTranslator(settings=DagsterDbtTranslatorSettings(
    enable_asset_checks=True, enable_duplicate_source_asset_keys=True))


def _project_sources_newer_than(manifest: Path) -> bool:
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    watched = ("models", "seeds", "macros", "tests", "dbt_project.yml", "profiles.yml")
    for name in watched:
        root = DBT_PROJECT_DIR / name
        files = [root] if root.is_file() else root.rglob("*")
        if any(f.is_file() and f.stat().st_mtime > built for f in files):
            return True
    return False


def dbt_resource() -> DbtCliResource:
    return DbtCliResource(project_dir=DBT_PROJECT, dbt_executable=DBT_EXECUTABLE)


def ensure_manifest() -> Path:
    """Parse once: the prepared manifest is reused until a dbt file changes (keeps start-up low)."""
    if _project_sources_newer_than(DBT_PROJECT.manifest_path):
        dbt_resource().cli(["parse", "--quiet"], target_path=DBT_PROJECT.target_path).wait()
    return DBT_PROJECT.manifest_path


@dbt_assets(manifest=ensure_manifest(), project=DBT_PROJECT, dagster_dbt_translator=TRANSLATOR)
def dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource,
               pipeline: PipelineResource) -> Iterator:
    """`dbt build` against the private build database of this run's settings."""
    os.environ["C20P5_BUILD_DB_PATH"] = str(pipeline.settings().build_db_path)
    yield from dbt.cli(["build"], context=context).stream()
