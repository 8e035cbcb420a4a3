"""Shared fixtures: every test runs against its own landing zone, work dir and warehouse."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestration.settings import Settings, load_settings


def env_for(root: Path) -> dict[str, str]:
    return {
        "C20P5_LANDING_DIR": str(root / "landing"),
        "C20P5_WORK_DIR": str(root / "work"),
        "C20P5_WAREHOUSE_URL": str(root / "warehouse" / "evaluation.duckdb"),
    }


@pytest.fixture
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key, value in env_for(tmp_path).items():
        monkeypatch.setenv(key, value)
    return load_settings()
