"""Shared fixtures: every test runs against its own landing zone, work dir and warehouse."""
from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from orchestration.settings import Settings, load_settings


def env_for(root: Path) -> dict[str, str]:
    return {
        "C20P5_LANDING_DIR": str(root / "landing"),
        "C20P5_WORK_DIR": str(root / "work"),
        "C20P5_WAREHOUSE_URL": str(root / "warehouse" / "evaluation.duckdb"),
    }


def nightly_on_generated_landing(root: Path, people_per_site: int = 400, months: int = 2, seed: int = 11) -> Settings:
    """One nightly run (through Dagster, on the embedded DuckDB default) on a landing zone generated
    under `root`, up to October 2026; it must publish every site. Returns the run's settings."""
    from assets.generator import generate_landing
    from orchestration.runner import run_nightly

    with pytest.MonkeyPatch.context() as mp:
        for key, value in env_for(root).items():
            mp.setenv(key, value)
        settings = load_settings()
        generate_landing(settings, people_per_site=people_per_site, months=months, last_period=date(2026, 10, 31),
                         seed=seed)
        outcome = run_nightly(settings)
    assert outcome.success and not outcome.withheld, outcome.describe()
    return settings


@pytest.fixture
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key, value in env_for(tmp_path).items():
        monkeypatch.setenv(key, value)
    return load_settings()
