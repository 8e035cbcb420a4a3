"""The fault scenario's two nightly runs, in a subprocess (`python -m tests.faults.scenario <root>`),
so that the tests that do not need it run meanwhile (conftest.py starts it with the session).

<root> already holds the site registry (`sites.yaml`) and the generated landing zone
(`source/landing`); the environment points C20P5_* at <root>. This writes:
- `result.json`: both runs' outcomes, each case's expected errors, the planted folders' checksums
  (just before run 2) and any case that could not be planted;
- `before.duckdb`: the warehouse as run 1 left it (a copy: the publisher checkpoints before its
  rename, so the file is whole).
"""
from __future__ import annotations

import json
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

from tests.faults.cases import GOOD_SITES, PERIOD_1, PERIOD_2, PIPELINE_CASES, REJECTED, WAITING, Plant
from tests.faults.support import copy_period, folder_hashes, pcn_practices, quick_report_pages


def main(root: Path) -> None:
    import assets.reports
    from orchestration.runner import run_nightly
    from orchestration.settings import load_settings
    assets.reports.render_pages = quick_report_pages  # see support.quick_report_pages
    settings = load_settings()
    source = root / "source" / "landing"
    pcns = json.loads((root / "pcns.json").read_text())
    result: dict = {"runs": [], "expected": {}, "hashes": {}, "plant_errors": {}}

    copy_period(source, settings.landing_dir, PERIOD_1)
    result["runs"].append(asdict(run_nightly()))
    shutil.copy(settings.warehouse_url, root / "before.duckdb")

    copy_period(source, settings.landing_dir, PERIOD_2)
    other = pcn_practices()[pcns[GOOD_SITES[0]]][0]
    for case in PIPELINE_CASES:
        try:
            expected = case.plant(Plant(settings.landing_dir, source, case.name, other))
            result["expected"][case.name] = [asdict(e) for e in expected]
        except Exception as exc:  # that case's tests fail, not the whole scenario
            result["plant_errors"][case.name] = f"{type(exc).__name__}: {exc}"
            result["expected"][case.name] = []
    for case in PIPELINE_CASES:
        if case.outcome in (REJECTED, WAITING) and case.name not in result["plant_errors"]:
            result["hashes"][case.name] = folder_hashes(settings.landing_dir / "sites" / case.site / case.period)
    result["runs"].append(asdict(run_nightly()))
    (root / "result.json").write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
