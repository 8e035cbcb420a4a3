"""One real pipeline run for every report test: generate a small landing zone, run the nightly job
through Dagster, then build the reports from the warehouse it published (once per session)."""
import functools
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from assets.generator import generate_landing
from assets.reports import ReportIndex, build_reports
from assets.warehouse import connect_warehouse
from orchestration.runner import run_nightly
from orchestration.settings import load_settings
from tests.conftest import env_for
from tests.reports.htmltree import Node, parse

CHROMIUM = Path(os.environ.get("C20P5_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_MISSING = (f"Chromium not found at {CHROMIUM}: install Debian's (apt-get install -y chromium) or set "
                    f"C20P5_CHROMIUM to run the browser tests")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@dataclass(frozen=True)
class Built:
    root: Path
    warehouse: Path
    data_docs: Path
    index: ReportIndex

    def page(self, name: str) -> Node:
        return parsed(self.index.out_dir / name)

    def query(self, sql: str) -> pd.DataFrame:
        """Read the warehouse independently of assets/reports.py, to check the pages against it."""
        con = connect_warehouse(self.warehouse)
        try:
            return con.execute(sql).df()
        finally:
            con.close()


@functools.cache
def parsed(path: Path) -> Node:
    """Site pages are about a megabyte of inline SVG: parse each once per session."""
    return parse(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("reports")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**env_for(root), "C20P5_LOG_LEVEL": "WARNING"}.items():
            mp.setenv(key, value)
        settings = load_settings()
        generate_landing(settings, people_per_site=600, months=3, last_period=date(2026, 10, 31), seed=3)
        outcome = run_nightly()
    assert outcome.success, outcome.describe()
    warehouse = Path(settings.warehouse_url)
    data_docs = settings.work_dir / "data_docs" / "index.html"
    assert data_docs.exists(), "the pipeline run should have built Great Expectations Data Docs"
    index = build_reports(str(warehouse), root / "out" / "reports", data_docs_index=data_docs)
    return Built(root, warehouse, data_docs, index)


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Debian's Chromium driven by Playwright; skipped (with the reason) when either is missing."""
    if not CHROMIUM.exists():
        pytest.skip(CHROMIUM_MISSING)
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: C20P5_TEST_ARTIFACTS (kept, e.g. by CI) or the session's temp dir."""
    target = os.environ.get("C20P5_TEST_ARTIFACTS")
    path = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def copy_warehouse(source: Path, target_dir: Path) -> Path:
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / source.name
    shutil.copy2(source, target)
    return target
