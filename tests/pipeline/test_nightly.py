"""The nightly job end to end through Dagster on a small generated landing zone.

Run 1 publishes two months for three sites; run 2 adds a month in which one site's patients file is
corrupted; run 3 changes nothing; a replay on a fresh warehouse repeats run 2's inputs."""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from assets.generator import generate_landing
from assets.submissions import sha256_file
from assets.warehouse import connect_warehouse
from orchestration.runner import RunOutcome, instance_for, run_nightly
from orchestration.settings import SHIPPED_REFERENCE_DIR, Settings, load_settings
from tests.conftest import env_for
from tests.pipeline.oracle import disclose, hypertension_cells

pytestmark = pytest.mark.slow
PERIODS = ("2026-09", "2026-10", "2026-11")
BAD_SITE = "blackpool_central"


@dataclass
class Scenario:
    root: Path
    source: Path
    settings: Settings
    runs: list[RunOutcome]
    snapshots: list[dict[str, pd.DataFrame]]
    corrupted_hashes: dict[str, str]


def snapshot(warehouse: str) -> dict[str, pd.DataFrame]:
    con = connect_warehouse(warehouse)
    try:
        tables = con.execute("""select table_schema, table_name from information_schema.tables
                                where table_catalog = 'warehouse' order by 1, 2""").fetchall()
        return {f"{s}.{t}": con.execute(f'select * from "{s}"."{t}"').df() for s, t in tables}
    finally:
        con.close()


def copy_period(source: Path, landing: Path, period: str) -> None:
    """One month of every site's submissions, and the newer reference files (police.uk) with it."""
    if not (landing / "reference").exists():
        shutil.copytree(source / "reference", landing / "reference")
    for site_dir in sorted((source / "sites").iterdir()):
        shutil.copytree(site_dir / period, landing / "sites" / site_dir.name / period)


def corrupt_patients(folder: Path) -> None:
    """A sex code that does not exist on data row 5 (line 6); the manifest is kept consistent so the
    submission passes the checksum gate and fails the pandera schema."""
    path = folder / "patients.csv"
    lines = path.read_text().splitlines(keepends=True)
    cols = lines[5].split(",")
    cols[3] = "X"
    lines[5] = ",".join(cols)
    path.write_text("".join(lines))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["patients.csv"]["sha256"] = sha256_file(path)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def use_env(mp: pytest.MonkeyPatch, root: Path) -> Settings:
    for key, value in env_for(root).items():
        mp.setenv(key, value)
    return load_settings()


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("nightly")
    with pytest.MonkeyPatch.context() as mp:
        settings = use_env(mp, root)
        source = root / "source" / "landing"
        generate_landing(replace(settings, landing_dir=source), people_per_site=1200, months=3,
                         last_period=date(2026, 11, 30), seed=7)
        corrupt_patients(source / "sites" / BAD_SITE / "2026-11")
        runs, snaps = [], []
        for period in PERIODS[:2]:
            copy_period(source, settings.landing_dir, period)
        runs.append(run_nightly()), snaps.append(snapshot(settings.warehouse_url))
        copy_period(source, settings.landing_dir, PERIODS[2])
        bad = settings.landing_dir / "sites" / BAD_SITE / "2026-11"
        hashes = {p.name: sha256_file(p) for p in bad.iterdir()}
        runs.append(run_nightly()), snaps.append(snapshot(settings.warehouse_url))
        runs.append(run_nightly()), snaps.append(snapshot(settings.warehouse_url))
        yield Scenario(root, source, settings, runs, snaps, hashes)


def site_practices(site: str) -> set[str]:
    """Straight from the shipped NHS England practice mapping (independent of `ref.site_practices`)."""
    gp = pd.read_csv(SHIPPED_REFERENCE_DIR / "gp_practice_map_2026-04_selected.csv", dtype=str)
    where = {"lsc": gp.ICB_CODE == "QE1", "blackpool_central": gp.PCN_CODE == "U97645",
             "burnley_east": gp.PCN_CODE == "U31823"}[site]
    return set(gp[where].PRACTICE_CODE)


def test_runs_succeed(scenario: Scenario) -> None:
    assert [r.success for r in scenario.runs] == [True, True, True], [r.error for r in scenario.runs]
    assert scenario.runs[0].publication == "1" and scenario.runs[0].published == 6 and not scenario.runs[0].withheld


@pytest.mark.parametrize("site", ["lsc", "blackpool_central", "burnley_east"])
def test_published_values_equal_the_independent_oracle(scenario: Scenario, site: str) -> None:
    published = scenario.snapshots[0]["evaluation.indicator_values"]
    truth_dir = scenario.source.parent / "generator_truth"
    for period in (date(2026, 9, 30), date(2026, 10, 31)):
        expected = hypertension_cells(truth_dir, site, period, site_practices(site))
        got = published[(published.site_code == site) & (published.period_end == pd.Timestamp(period))]
        got = got.set_index(["indicator_id", "breakdown", "breakdown_value"])
        assert len(expected) > 10
        for row in expected.itertuples():
            cell = got.loc[(row.indicator_id, row.breakdown, row.breakdown_value)]
            num, den = disclose(row.numerator), disclose(row.denominator)
            assert _same(cell.numerator, num) and _same(cell.denominator, den), (period, row)
            assert bool(cell.suppressed) == (num is None or den is None)
            if not cell.suppressed and row.denominator:
                assert cell.value == pytest.approx(100 * row.numerator / row.denominator, rel=1e-12)
                assert cell.lower_ci < cell.value < cell.upper_ci or row.numerator in (0, row.denominator)


def _same(published: object, expected: float | None) -> bool:
    return pd.isna(published) if expected is None else float(published) == expected


def test_planted_gradient_is_recovered(scenario: Scenario) -> None:
    """Core20 people are planted with less control of blood pressure: the published gap shows it."""
    summary = scenario.snapshots[0]["evaluation.inequality_summary"]
    lsc = summary[(summary.site_code == "lsc") & (summary.indicator_id == "HYP_TREATED_TO_TARGET")]
    assert (lsc.absolute_gap < 0).all() and (lsc.sii > 0).all() and (lsc.sii_lower_ci > 0).all()


def test_corrupted_site_is_withheld_and_quarantined(scenario: Scenario) -> None:
    run = scenario.runs[1]
    [withheld] = run.withheld
    assert (withheld["site_code"], withheld["period_end"]) == (BAD_SITE, "2026-11-30")
    assert "patients.csv, row 6, column sex" in withheld["reason"]
    # only what changed: the new month of the two good sites (the earlier months' rows are as published,
    # and the bad site's earlier months keep theirs: test_withheld_sites_earlier_rows_are_unchanged)
    assert run.published == 2
    values = scenario.snapshots[1]["evaluation.indicator_values"]
    latest = values.groupby("site_code").period_end.max().dt.strftime("%Y-%m-%d").to_dict()
    assert latest == {"lsc": "2026-11-30", "burnley_east": "2026-11-30", BAD_SITE: "2026-10-31"}
    # the quarantined submission is the file the site sent, byte for byte, beside its error report
    [target] = (scenario.settings.quarantine_dir / BAD_SITE).iterdir()
    assert {p.name: sha256_file(p) for p in (target / "submission").iterdir()} == scenario.corrupted_hashes
    report = json.loads((target / "errors.json").read_text())
    assert {(e["file"], e["row"], e["column"]) for e in report["errors"]} == {("patients.csv", 6, "sex")}
    assert not (scenario.settings.landing_dir / "sites" / BAD_SITE / "2026-11").exists()
    dq = scenario.snapshots[1]["evaluation.data_quality"]
    assert ((dq.site_code == BAD_SITE) & (dq.file == "patients.csv") & (dq.row == 6) & (dq.column == "sex")).any()
    pubs = scenario.snapshots[1]["evaluation.publications"]
    assert BAD_SITE in pubs.iloc[-1].sites_withheld and "row 6" in pubs.iloc[-1].sites_withheld


def test_withheld_sites_earlier_rows_are_unchanged(scenario: Scenario) -> None:
    def rows(snap: dict[str, pd.DataFrame]) -> pd.DataFrame:
        v = snap["evaluation.indicator_values"]
        v = v[v.site_code == BAD_SITE].drop(columns="publication_id")
        return v.sort_values(list(v.columns)).reset_index(drop=True)
    pd.testing.assert_frame_equal(rows(scenario.snapshots[0]), rows(scenario.snapshots[1]))


def test_pandera_check_reported_the_failure_in_dagster(scenario: Scenario) -> None:
    with instance_for(scenario.settings) as instance:
        records = instance.all_logs(scenario.runs[1].run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    evaluations = {r.dagster_event.event_specific_data.check_name: r.dagster_event.event_specific_data
                   for r in records}
    patients = evaluations["patients_schema"]
    assert not patients.passed and patients.severity == dg.AssetCheckSeverity.WARN
    assert patients.metadata["failures"].value == 1
    assert evaluations["events_schema"].passed


def test_the_all_sites_comparator_is_disclosure_controlled(scenario: Scenario) -> None:
    """Equal to the oracle's all-sites value where every site has people in the cell; null on a
    suppressed row; null for an indicator only one site reports (it would be that site's own value)."""
    published = scenario.snapshots[0]["evaluation.indicator_values"]
    assert published.loc[published.suppressed, "comparator_value"].isna().all()
    one_site = published[published.indicator_id == "SHARP_OBJECT_ASSAULT_ADMISSIONS"]
    assert set(one_site.site_code) == {"blackpool_central"} and one_site.comparator_value.isna().all()
    truth_dir = scenario.source.parent / "generator_truth"
    period = date(2026, 10, 31)
    cells = pd.concat([hypertension_cells(truth_dir, s, period, site_practices(s))
                       for s in ("lsc", "blackpool_central", "burnley_east")])
    overall = cells[(cells.indicator_id == "HYP_PREVALENCE") & (cells.breakdown == "overall")]
    expected = 100 * overall.numerator.sum() / overall.denominator.sum()
    got = published[(published.indicator_id == "HYP_PREVALENCE") & (published.breakdown == "overall")
                    & (published.period_end == pd.Timestamp(period))].comparator_value
    assert got.tolist() == pytest.approx([expected] * 3, rel=1e-12)


def test_the_publish_shows_what_it_published_and_withheld_in_the_dagster_ui(scenario: Scenario) -> None:
    """Run 2's warehouse_publication materialization carries a Markdown preview: indicator rows per
    site in this publication (counted here from the site schemas' rows that carry its id) and the
    withheld site-period with its reason."""
    with instance_for(scenario.settings) as instance:
        records = instance.all_logs(scenario.runs[1].run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    [preview] = {r.asset_materialization.metadata["preview"] for r in records
                 if r.asset_materialization.asset_key == dg.AssetKey("warehouse_publication")}
    assert isinstance(preview, dg.MarkdownMetadataValue)
    shown = {site: int(n) for site, n in re.findall(r"^\| (\w+) \| (\d+) \|$", preview.md_str, re.M)}
    snap, publication = scenario.snapshots[1], int(scenario.runs[1].publication)
    written = {s: int((snap[f"site_{s}.indicator_values"].publication_id == publication).sum())
               for s in ("lsc", "blackpool_central", "burnley_east")}
    assert shown == {s: n for s, n in written.items() if n} and len(shown) == 2
    [withheld] = scenario.runs[1].withheld
    assert f"- {BAD_SITE} {withheld['period_end']}: {withheld['reason']}" in preview.md_str.splitlines()


def test_second_run_on_the_same_inputs_changes_nothing(scenario: Scenario) -> None:
    assert scenario.runs[2].publication == "unchanged"
    assert scenario.snapshots[2].keys() == scenario.snapshots[1].keys()
    for name, frame in scenario.snapshots[1].items():
        pd.testing.assert_frame_equal(frame, scenario.snapshots[2][name], obj=name)


def test_replaying_the_inputs_reproduces_the_publication(scenario: Scenario, tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        settings = use_env(mp, tmp_path)
        for period in PERIODS:
            copy_period(scenario.source, settings.landing_dir, period)
        assert run_nightly().success
        replay = snapshot(settings.warehouse_url)
    for table in ("evaluation.indicator_values", "evaluation.inequality_summary", "site_lsc.indicator_values"):
        a = scenario.snapshots[1][table].drop(columns="publication_id")
        b = replay[table].drop(columns="publication_id")
        pd.testing.assert_frame_equal(a.sort_values(list(a.columns)).reset_index(drop=True),
                                      b.sort_values(list(b.columns)).reset_index(drop=True), obj=table)


def test_person_level_data_never_reaches_the_warehouse(scenario: Scenario) -> None:
    for name, frame in scenario.snapshots[1].items():
        assert not {"person_id", "birth_month", "lsoa_code"} & set(frame.columns), name
    site = scenario.snapshots[1]["site_lsc.indicator_values"]
    assert {"practice", "pcn"} <= set(site.breakdown)
    assert not {"practice", "pcn"} & set(scenario.snapshots[1]["evaluation.indicator_values"].breakdown)


def test_dbt_docs_describe_every_indicator_model(scenario: Scenario, tmp_path: Path) -> None:
    """`dbt docs generate` works against the build database, and indicator models carry the
    catalogue's wording (rendered doc blocks)."""
    import subprocess
    import sys

    from orchestration.settings import DBT_PROJECT_DIR
    dbt = Path(sys.executable).with_name("dbt")
    env = {**__import__("os").environ, "C20P5_BUILD_DB_PATH": str(scenario.settings.build_db_path)}
    done = subprocess.run([str(dbt), "docs", "generate", "--target-path", str(tmp_path)], cwd=DBT_PROJECT_DIR,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    nodes = {n["name"]: n for n in manifest["nodes"].values() if n["resource_type"] == "model"}
    assert "Hypertension treated to target" in nodes["int_ind__hyp_treated_to_target"]["description"]
    assert all(n["description"] for name, n in nodes.items() if name.startswith(("fct_", "dim_", "int_ind__")))
    catalog = json.loads((tmp_path / "catalog.json").read_text())
    assert any(k.endswith("fct_indicator_values") for k in catalog["nodes"])


# --- planted truth recovered (issue: every indicator and PLUS group) --------------------------------
Z_9999 = 3.8906  # two-sided 99.99%: across ~100 independent checks a false alarm is unlikely


def _build_db(scenario: Scenario):
    import duckdb
    return duckdb.connect(str(scenario.settings.build_db_path), read_only=True)


def _pooled_by_quintile() -> str:
    return """select indicator_id, breakdown_value as quintile, unit, sum(numerator) as x, sum(denominator) as n
              from marts.fct_indicator_values
              where breakdown = 'imd_quintile' and breakdown_value <> 'unknown' and indicator_id not like '%_DSR'
                -- one period per site (its latest), so each person counts once
                and (site_code, period_end) in (select site_code, max(period_end) from marts.fct_indicator_values group by 1)
              group by all having sum(denominator) > 0 order by 1, 2"""


def test_every_indicator_recovers_its_planted_gradient(scenario: Scenario) -> None:
    """Pooled over sites for the latest period from the unrounded marts, each quintile's value lies within a
    99.99% interval (Wilson for %, Byar for rates) of what the generator planted, from the SPEC alone."""
    from assets.generator import PLANTED
    from assets.statistics import rate_ci, wilson_ci
    con = _build_db(scenario)
    rows = con.execute(_pooled_by_quintile()).fetchall()
    con.close()
    seen, misses = set(), []
    for indicator, quintile, unit, x, n in rows:
        planted = PLANTED[indicator][int(quintile) - 1]
        if unit == "%":
            low, up = wilson_ci(x, n, confidence=0.9999)
        else:
            low, up = (v / n for v in rate_ci(x, 1.0, multiplier=1.0, confidence=0.9999))
        seen.add(indicator)
        if not low <= planted <= up:
            misses.append((indicator, quintile, x, n, planted, round(low, 4), round(up, 4)))
    assert seen == set(PLANTED), set(PLANTED) - seen
    assert not misses, misses


def test_planted_gradients_point_the_right_way(scenario: Scenario) -> None:
    """Where the sample can tell quintile 1 from quintile 5 (planted difference over 4 standard
    errors), the published pooled values order them the way the generator planted."""
    from math import sqrt

    from assets.generator import PLANTED
    con = _build_db(scenario)
    pooled = {(i, q): (x / n, n, unit) for i, q, unit, x, n in con.execute(_pooled_by_quintile()).fetchall()}
    con.close()
    checked = 0
    for indicator, p in PLANTED.items():
        q1, q5 = pooled.get((indicator, "1")), pooled.get((indicator, "5"))
        if not (q1 and q5):
            continue
        var = (lambda v, n: v * (1 - v) / n) if q1[2] == "%" else (lambda v, n: v / n)
        if abs(p[0] - p[4]) / sqrt(var(p[0], q1[1]) + var(p[4], q5[1])) > 4:
            assert (q1[0] - q5[0]) * (p[0] - p[4]) > 0, indicator
            checked += 1
    assert checked >= 2, checked  # at 1,200 people a site only the widest gradients have the power


def test_plus_group_membership_recovers_planted_prevalence(scenario: Scenario) -> None:
    from assets.generator import PLANTED_PLUS
    from assets.statistics import wilson_ci
    con = _build_db(scenario)
    rows = con.execute("""
        select g.plus_group, p.imd_quintile, count(m.person_id) as x, count(*) as n
        from intermediate.int_registered_population p
        join ref.site_plus_groups g on g.site_code = p.site_code
        left join intermediate.int_plus_group_members m
          on m.site_code = p.site_code and m.period_end = p.period_end and m.person_id = p.person_id
         and m.plus_group = g.plus_group
        where p.imd_quintile is not null and (g.plus_group <> 'looked_after_child' or p.age < 18)
          and (p.site_code, p.period_end) in (select site_code, max(period_end)
                                              from intermediate.int_registered_population group by 1)
        group by all""").fetchall()
    con.close()
    checked = {g for g, *_ in rows if g in PLANTED_PLUS}
    assert checked >= {"homeless", "gypsy_roma_traveller", "justice_contact", "learning_disability", "carer"}
    for group, quintile, x, n in rows:
        if group in PLANTED_PLUS:
            low, up = wilson_ci(x, n, confidence=0.9999)
            assert low <= PLANTED_PLUS[group][quintile - 1] <= up, (group, quintile, x, n)
