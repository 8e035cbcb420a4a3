"""What the report pages say, checked against the warehouse the pipeline published (no browser)."""
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from assets import statistics as st
from assets.reports import (
    gap_ci,
    quintile_populations,
    rank_midpoints,
    read_warehouse,
    sii_line,
    weighted_mean,
    write_reports,
)
from tests.reports.conftest import Built
from tests.reports.htmltree import Node, parse

pytestmark = pytest.mark.slow


def shown(value: float, unit: str) -> str:
    """How a value reads on the page, written out here rather than imported."""
    text = f"{value:,.1f}".replace("-", "−")
    return f"{text}%" if unit == "%" else f"{text} {unit}"


def latest_cells(built: Built, breakdowns: tuple[str, ...]) -> pd.DataFrame:
    """Each site's and indicator's cells at its latest published period."""
    names = ", ".join(f"'{b}'" for b in breakdowns)
    return built.query(f"""select v.* from evaluation.indicator_values v
        join (select site_code, indicator_id, max(period_end) as period_end from evaluation.indicator_values
              group by 1, 2) l using (site_code, indicator_id, period_end)
        where v.breakdown in ({names})""")


def section(page: Node, indicator: str) -> Node:
    return page.one("section", id=f"ind-{indicator}")


def test_index_links_every_site_and_the_national_page(built: Built) -> None:
    sites = built.query("select site_code from evaluation.sites")["site_code"]
    counts = built.query("select site_code, count(*) as n from evaluation.indicator_values group by 1")
    index = built.page("index.html")
    hrefs = {a.attrs["href"] for a in index.select("a")}
    assert {f"site_{c}.html" for c in sites} <= hrefs and "national.html" in hrefs
    for code, n in zip(counts["site_code"], counts["n"]):
        row = index.one("tr", data_site=code)
        assert int(row.attrs["data-rows"]) == n == built.index.rows_per_site[code]
        assert row.one("td", data_status=True).attrs["data-status"] == "published"
    assert set(built.index.site_paths) == set(sites)


def test_pages_are_self_contained_and_links_resolve(built: Built) -> None:
    out = built.index.out_dir
    for path in sorted(out.glob("*.html")):
        page = built.page(path.name)
        assert not page.select("script") and not page.select("link") and not page.select("iframe"), path.name
        assert "default-src 'none'" in page.one("meta", http_equiv="Content-Security-Policy").attrs["content"]
        for node in page.iter():
            for attr in ("src", "href", "xlink:href"):
                target = node.attrs.get(attr)
                if target is None:
                    continue
                assert not re.match(r"^([a-z]+:|//)", target), f"{path.name}: {attr}={target} is not a local link"
                file, _, anchor = target.partition("#")
                if attr != "href" or not file:
                    continue
                assert (out / file).resolve().exists(), f"{path.name}: link to missing {file}"
                if anchor and file.endswith(".html") and (out / file).parent == out:
                    assert built.page(file).select(id=anchor), f"{path.name}: {target} names no element"
        assert "url(http" not in path.read_text(encoding="utf-8")


def test_data_docs_are_linked_relatively(built: Built) -> None:
    link = built.page("index.html").one("a", data_link="data-docs")
    href = link.attrs["href"]
    assert not Path(href).is_absolute()
    assert (built.index.out_dir / href).resolve() == built.data_docs.resolve()


def test_headline_values_match_the_warehouse(built: Built) -> None:
    overall = latest_cells(built, ("overall",))
    for (code, indicator), cell in overall.set_index(["site_code", "indicator_id"]).iterrows():
        headline = section(built.page(f"site_{code}.html"), indicator).one("p", cls="headline")
        value = headline.one("span", cls="value")
        if cell["suppressed"]:
            assert value.text() == "suppressed" and value.attrs["data-value"] == ""
        else:
            assert float(value.attrs["data-value"]) == pytest.approx(cell["value"], rel=1e-12)
            assert value.text() == shown(cell["value"], cell["unit"])
        assert headline.attrs["data-period"] == cell["period_end"].strftime("%Y-%m-%d")
        if pd.notna(cell["target"]) and not cell["suppressed"]:
            assert f"({shown(cell['target'], cell['unit'])})" in headline.text()


def test_suppressed_cells_read_suppressed_never_zero(built: Built) -> None:
    cells = latest_cells(built, ("ethnicity", "plus_group"))
    assert cells["suppressed"].any(), "the generated data should exercise suppression"
    for _, cell in cells.iterrows():
        page = built.page(f"site_{cell['site_code']}.html")
        row = section(page, cell["indicator_id"]).one("tr", data_breakdown=cell["breakdown"],
                                                      data_group=cell["breakdown_value"])
        value = row.one("td", cls="value").text()
        assert row.attrs["data-suppressed"] == str(bool(cell["suppressed"])).lower()
        if cell["suppressed"]:
            assert value == "suppressed"
            assert all(td.text() != "0" or pd.notna(cell[c]) for td, c in
                       zip(row.select("td")[1:3], ("numerator", "denominator"))), "a withheld count shown as 0"
        elif pd.isna(cell["value"]):
            assert value == "–"
        else:
            assert value == shown(cell["value"], cell["unit"])


def test_a_gap_removed_by_suppression_reads_suppressed(built: Built) -> None:
    cells = latest_cells(built, ("core20",))
    cells = cells[cells["breakdown_value"].isin(["core20", "not_core20"])]
    hidden = cells.groupby(["site_code", "indicator_id"])["suppressed"].any()
    assert hidden.any(), "the generated data should suppress some Core20 cells"
    for (code, indicator), suppressed in hidden.items():
        row = built.page(f"site_{code}.html").one("table", cls="summary").one("tr", data_indicator=indicator)
        gap = row.one("td", cls="gap")
        assert (gap.text() == "suppressed") == suppressed, (code, indicator, gap.text())


def test_spc_limits_and_icons_come_from_the_statistics_module(built: Built) -> None:
    overall = built.query("""select site_code, indicator_id, period_end, value, target from evaluation.indicator_values
                             where breakdown = 'overall' order by period_end""")
    catalogue = built.query("select indicator_id, direction from evaluation.indicators").set_index("indicator_id")
    summary = built.query("""select * from evaluation.inequality_summary s where period_end =
        (select max(period_end) from evaluation.inequality_summary x where x.site_code = s.site_code
           and x.indicator_id = s.indicator_id)""").set_index(["site_code", "indicator_id"])
    for (code, indicator), series in overall.groupby(["site_code", "indicator_id"]):
        direction = catalogue.loc[indicator, "direction"]
        target = series["target"].iloc[0]
        expected = st.xmr([None if pd.isna(v) else v for v in series["value"]],
                          target=None if pd.isna(target) else target,
                          direction=direction if direction in ("higher", "lower") else None)
        block = section(built.page(f"site_{code}.html"), indicator)
        chart = block.one("figure", data_chart="spc")
        for attr, value in (("data-mean", expected.mean), ("data-ucl", expected.ucl), ("data-lcl", expected.lcl)):
            if np.isnan(value):  # under two observed points: no limits to draw
                assert chart.attrs[attr] == ""
            else:
                assert float(chart.attrs[attr]) == pytest.approx(value, rel=1e-12, abs=1e-12)
        published = summary.loc[(code, indicator)]
        assert block.select("span", data_variation=published["spc_variation"])
        assert block.select("span", data_assurance=published["spc_assurance"])


def test_sii_line_is_the_weighted_least_squares_fit() -> None:
    numerators, populations = np.array([61, 48, 40, 22, 15]), np.array([210, 180, 160, 120, 90])
    result = st.sii_from_counts(numerators, populations, value_type=2, multiplier=100.0, reps=2000, seed=7)
    values = numerators / populations * 100
    slope, intercept = np.polyfit(rank_midpoints(populations), values, 1, w=np.sqrt(populations))
    assert result.sii == pytest.approx(slope)
    assert sii_line(weighted_mean(values, populations), result.sii) == pytest.approx((intercept, intercept + slope))
    assert float(np.average(rank_midpoints(populations), weights=populations)) == pytest.approx(0.5)


def test_suppressed_quintiles_share_what_core20_and_the_rest_leave() -> None:
    assert quintile_populations([100, None, 50, None, 50], known_total=300) == [100, 50, 50, 50, 50]
    assert quintile_populations([100, None, 50, 50, 50], known_total=240) is None  # rounding left nothing
    assert list(rank_midpoints(None)) == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9])


def _expected_anchor(cells: pd.DataFrame, core20: pd.DataFrame) -> float | None:
    """The rule written out again: all five quintiles, else Core20 and the rest, else no line."""
    for group in (cells, core20):
        if len(group) and group["value"].notna().all() and group["denominator"].notna().all():
            return float(np.average(group["value"], weights=group["denominator"].astype(float)))
    return None


def test_quintile_chart_draws_the_published_sii(built: Built) -> None:
    cells = latest_cells(built, ("imd_quintile", "core20"))
    cells = cells[cells["breakdown_value"] != "unknown"].sort_values("breakdown_value")
    summary = built.query("select * from evaluation.inequality_summary")
    drawn = 0
    for (code, indicator, period), group in cells.groupby(["site_code", "indicator_id", "period_end"]):
        row = summary[(summary.site_code == code) & (summary.indicator_id == indicator)
                      & (summary.period_end == period)]
        chart = section(built.page(f"site_{code}.html"), indicator).one("figure", data_chart="quintile")
        line = json.loads(chart.attrs["data-line"])
        sii = None if row.empty or pd.isna(row["sii"].iloc[0]) else row["sii"].iloc[0]
        anchor = _expected_anchor(group[group.breakdown == "imd_quintile"], group[group.breakdown == "core20"])
        if sii is None or anchor is None:
            assert line is None and chart.attrs["data-sii"] == ("" if sii is None else repr(float(sii)))
            continue
        assert line[1] - line[0] == pytest.approx(sii)
        assert (line[0] + line[1]) / 2 == pytest.approx(anchor)
        drawn += 1
    assert drawn, "the generated data should give at least one SII line"


def test_national_page_puts_every_site_side_by_side(built: Built) -> None:
    latest = built.query("""select * from evaluation.inequality_summary s where period_end =
        (select max(period_end) from evaluation.inequality_summary x where x.site_code = s.site_code
           and x.indicator_id = s.indicator_id)""")
    national = built.page("national.html")
    for indicator, rows in latest.groupby("indicator_id"):
        block = section(national, indicator)
        assert block.select("figure", data_chart="forest") and block.select("figure", data_chart="gap_trend")
        assert {r.attrs["data-site"] for r in block.select("tr", data_site=True)} == set(rows["site_code"])
        for _, s in rows.iterrows():
            row = block.one("tr", data_site=s["site_code"])
            for cls, column in (("gap", "absolute_gap"), ("sii", "sii")):
                cell = row.one("td", cls=cls).attrs["data-value"]
                assert (cell == "") if pd.isna(s[column]) else float(cell) == pytest.approx(s[column], rel=1e-12)


def test_gap_ci_combines_the_two_published_intervals() -> None:
    core20 = pd.Series({"value": 40.0, "lower_ci": 34.0, "upper_ci": 47.0})
    rest = pd.Series({"value": 60.0, "lower_ci": 56.0, "upper_ci": 63.0})
    lower, upper = gap_ci(core20, rest)
    assert lower == pytest.approx(-20 - np.hypot(6, 3)) and upper == pytest.approx(-20 + np.hypot(7, 4))
    assert gap_ci(core20, rest.replace(56.0, np.nan)) is None


def test_withheld_and_unpublished_sites_are_shown(built: Built, tmp_path: Path) -> None:
    """A publication that withheld burnley_east's next month, and a registered site with nothing published
    (one indicator only, to keep the pages quick to draw)."""
    tables = read_warehouse(str(built.warehouse))
    reason = "submission quarantined: patients.csv row 5 column sex: 'X' is not a valid sex code"
    publications = tables.publications.copy()
    publications.loc[publications.index[-1], "sites_withheld"] = json.dumps(
        [{"site_code": "burnley_east", "period_end": "2026-11-30", "reason": reason}])

    def trim(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[(frame["indicator_id"] == "HYP_TREATED_TO_TARGET") & (frame["site_code"] != "lsc")]

    index = write_reports(replace(tables, publications=publications, indicator_values=trim(tables.indicator_values),
                                  inequality_summary=trim(tables.inequality_summary)), tmp_path)
    assert index.withheld == [{"site_code": "burnley_east", "period_end": "2026-11-30", "reason": reason}]
    page = parse((tmp_path / "site_burnley_east.html").read_text(encoding="utf-8"))
    assert reason in page.one("div", data_withheld="burnley_east").text()
    assert page.select("p", cls="headline"), "a withheld site keeps showing its last good publication"
    assert not parse((tmp_path / "site_blackpool_central.html").read_text()).select("div", data_withheld=True)
    assert "Nothing has been published" in parse((tmp_path / "site_lsc.html").read_text()).text()
    statuses = {r.attrs["data-site"]: r.one("td", data_status=True).attrs["data-status"]
                for r in parse((tmp_path / "index.html").read_text()).select("tr", data_site=True)}
    assert statuses == {"blackpool_central": "published", "burnley_east": "withheld", "lsc": "unpublished"}


def test_the_same_publication_renders_the_same_bytes(built: Built, tmp_path: Path) -> None:
    """Re-running a publication rewrites identical pages (fixed SVG ids, no build timestamp)."""
    tables = read_warehouse(str(built.warehouse))
    one = {f: frame[frame["indicator_id"] == "KNIFE_CRIME_RATE"] for f, frame in
           (("indicator_values", tables.indicator_values), ("inequality_summary", tables.inequality_summary))}
    first = write_reports(replace(tables, **one), tmp_path / "first")
    second = write_reports(replace(tables, **one), tmp_path / "second")
    for path in first.out_dir.glob("*.html"):
        assert path.read_bytes() == (second.out_dir / path.name).read_bytes(), path.name
    assert sorted(p.name for p in first.out_dir.iterdir()) == sorted(p.name for p in second.out_dir.iterdir())


def test_interval_bars_honour_zero_bounds_and_survive_an_interval_missing_its_point() -> None:
    from assets.reports import _extent, forest_chart
    assert _extent(2.0, 0.0, 5.0) == [[2.0], [3.0]]  # a lower bound of 0 is a bound, not "missing"
    assert _extent(2.0, None, None) == [[0.0], [0.0]]
    assert _extent(2.0, 3.0, 1.0) == [[0.0], [0.0]]  # an interval that does not contain its point
    rows = [{"gap": -4.0, "gap_ci": (-1.0, 2.0), "sii": 3.0, "sii_ci": (1.0, 5.0), "trend": "gap narrowing",
             "gap_missing": "", "sii_missing": "", "site_code": "s", "site_name": "S"}]
    meta = pd.Series({"indicator_name": "HYP", "unit": "%"})
    assert "<svg" in forest_chart("c1", rows, meta)  # matplotlib refused negative extents before
