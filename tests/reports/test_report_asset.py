"""The Dagster asset `evaluation_reports`, where it writes, and reading either warehouse target."""
import datetime as dt
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from assets.reports import (
    TABLES,
    evaluation_reports,
    normalise,
    read_warehouse,
    report_dir,
)
from assets.warehouse import connect_warehouse
from orchestration.resources import PipelineResource
from orchestration.settings import load_settings
from tests.conftest import env_for
from tests.reports.conftest import Built, copy_warehouse

KEY = dg.AssetKey("evaluation_reports")


def test_asset_is_in_the_publish_group_after_the_publication() -> None:
    assert evaluation_reports.group_names_by_key[KEY] == "publish"
    assert evaluation_reports.asset_deps[KEY] == {dg.AssetKey("warehouse_publication")}
    assert "pipeline" in evaluation_reports.required_resource_keys


def test_report_dir_is_beside_the_warehouse(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    assert report_dir(load_settings(env)) == tmp_path / "warehouse" / "reports"
    postgres = load_settings({**env, "C20P5_WAREHOUSE_URL": "postgresql://evaluator@db.example/c20p5"})
    assert report_dir(postgres) == tmp_path / "work" / "reports"


def _materialize(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> dg.AssetMaterialization:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = dg.materialize([evaluation_reports], resources={"pipeline": PipelineResource()})
    assert result.success
    return result.asset_materializations_for_node("evaluation_reports")[0]


@pytest.mark.slow
def test_asset_writes_reports_beside_the_warehouse(built: Built, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """On a copy of the published warehouse cut to two indicators, so the pages draw quickly."""
    warehouse = copy_warehouse(built.warehouse, tmp_path / "warehouse")
    con = connect_warehouse(warehouse, read_only=False)
    for table in ("indicator_values", "inequality_summary"):
        con.execute(f"delete from evaluation.{table} "
                    "where indicator_id not in ('HYP_TREATED_TO_TARGET', 'KNIFE_CRIME_RATE')")
    counts = dict(con.execute("select site_code, count(*) from evaluation.indicator_values group by 1").fetchall())
    con.close()
    env = {**env_for(tmp_path), "C20P5_WAREHOUSE_URL": str(warehouse), "C20P5_WORK_DIR": str(built.data_docs.parent.parent)}
    meta = _materialize(monkeypatch, env).metadata
    index = Path(meta["index"].value)
    assert index == warehouse.parent / "reports" / "index.html" and index.exists()
    assert Path(meta["national"].value).exists()
    rows = meta["rows_per_site"].value
    for code, n in counts.items():
        assert f"| {code} | {n} | site_{code}.html |" in rows
        assert (index.parent / f"site_{code}.html").exists()
    assert meta["withheld"].value == "none"
    assert (index.parent / meta["data_docs"].value).resolve() == built.data_docs.resolve()

    # no new publication: the pages are left as they are
    written = {p.name: p.stat().st_mtime_ns for p in index.parent.glob("*.html")}
    again = _materialize(monkeypatch, env).metadata
    assert again["reports"].value == "up to date (no new publication)"
    assert {p.name: p.stat().st_mtime_ns for p in index.parent.glob("*.html")} == written
    # a new publication: every page is written again and names it
    con = connect_warehouse(warehouse, read_only=False)
    latest = con.execute("select max(publication_id) from evaluation.publications").fetchone()[0]
    con.execute(f"""insert into evaluation.publications select {latest + 1}, published_at, code_version,
                    content_hash, input_checksums, sites_published, sites_withheld, run_id
                    from evaluation.publications where publication_id = {latest}""")
    con.close()
    meta = _materialize(monkeypatch, env).metadata
    assert meta["reports"].value == "written" and meta["site_pages_drawn"].value == 0
    # it changed no site's figures: the index and the national and data-quality pages name it, the
    # site pages (which name the publication that last changed their figures) are left as they were
    rewritten = {p.name for p in index.parent.glob("*.html") if p.stat().st_mtime_ns > written[p.name]}
    assert rewritten == {"index.html", "national.html", "data_quality.html"}
    assert f'data-publication="{latest + 1}"' in index.read_text()


def test_asset_without_a_warehouse_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    meta = _materialize(monkeypatch, env_for(tmp_path)).metadata
    assert meta["reports"].value.startswith("not written")
    assert not (tmp_path / "warehouse" / "reports").exists()


@pytest.mark.slow
def test_rows_read_through_psycopg_normalise_like_duckdb(built: Built) -> None:
    """psycopg returns plain Python values (dates, None for NULL, object columns); the pages must see
    the same frames as from DuckDB."""
    con = connect_warehouse(built.warehouse)
    try:
        raw = {t: con.execute(f"select * from evaluation.{t}").df() for t in TABLES}
    finally:
        con.close()
    as_psycopg = {t: _python_values(f) for t, f in raw.items()}
    from_duckdb, from_pg = read_warehouse(str(built.warehouse)), normalise(as_psycopg)
    for table in ("indicator_values", "inequality_summary"):
        pd.testing.assert_frame_equal(getattr(from_pg, table), getattr(from_duckdb, table), check_dtype=True)


def _python_values(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.astype(object).where(frame.notna(), None)
    if "period_end" in out:
        out["period_end"] = [v.date() if isinstance(v, (pd.Timestamp, dt.datetime)) else v for v in out["period_end"]]
    return out
