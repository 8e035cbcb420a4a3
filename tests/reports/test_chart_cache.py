"""The chart cache: a rebuild reuses the charts whose inputs did not change, and the pages it writes
are byte for byte the pages of a build that draws everything afresh."""
import dataclasses
from pathlib import Path

import pandas as pd

from assets.reports import CHART_FOLDER, WarehouseTables, read_warehouse, write_reports
from tests.reports.conftest import Built


def _pages(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.html"))}


def _charts(folder: Path) -> set[str]:
    return {p.name for p in (folder / CHART_FOLDER).glob("*.svg")}


def _one_site_changed(tables: WarehouseTables) -> tuple[WarehouseTables, str, str]:
    """A later publication in which one site's overall value of one indicator moved (its latest period)."""
    iv = tables.indicator_values
    overall = iv[(iv["breakdown"] == "overall") & iv["value"].notna()]
    row = overall.iloc[0]
    hit = ((iv["site_code"] == row["site_code"]) & (iv["indicator_id"] == row["indicator_id"])
           & (iv["breakdown"] == "overall") & (iv["period_end"] == row["period_end"]))
    changed = iv.copy()
    changed.loc[hit, "value"] = changed.loc[hit, "value"] * 1.1 + 0.5
    changed["publication_id"] = changed["publication_id"] + 1  # every row belongs to the new publication
    return dataclasses.replace(tables, indicator_values=changed), row["site_code"], row["indicator_id"]


def test_a_rebuild_reuses_unchanged_charts_and_writes_the_same_pages(built: Built, tmp_path: Path) -> None:
    tables = read_warehouse(str(built.warehouse))
    cached, fresh = tmp_path / "cached", tmp_path / "fresh"
    write_reports(tables, cached)
    first = _charts(cached)
    write_reports(tables, fresh, reuse_charts=False)
    assert not (fresh / CHART_FOLDER).exists()
    assert _pages(cached) == _pages(fresh) and len(first) > 20

    write_reports(tables, cached)  # nothing changed: every chart from the cache, none added or dropped
    assert _charts(cached) == first and _pages(cached) == _pages(fresh)

    later, site, indicator = _one_site_changed(tables)
    write_reports(later, cached)
    write_reports(later, tmp_path / "later", reuse_charts=False)
    assert _pages(cached) == _pages(tmp_path / "later")
    assert _pages(cached)[f"site_{site}.html"] != _pages(fresh)[f"site_{site}.html"]
    redrawn, dropped = _charts(cached) - first, first - _charts(cached)
    # that site's charts of that indicator, and the national ones that show every site's value of it
    assert 1 <= len(redrawn) <= 6 and len(dropped) == len(redrawn), (site, indicator, len(redrawn))


def test_the_cache_key_ignores_the_publication_id_but_not_the_cells() -> None:
    from assets.reports import _fingerprint
    frame = pd.DataFrame({"publication_id": [1, 1], "value": [1.0, 2.0], "site_code": ["a", None]}, index=[10, 11])
    later = frame.assign(publication_id=2).set_axis([0, 1]).copy()
    assert _fingerprint(frame) == _fingerprint(later)
    assert _fingerprint(frame) != _fingerprint(later.assign(value=[1.0, 2.5]))
    assert _fingerprint(frame) != _fingerprint(later.iloc[::-1])  # row order is drawn
    assert _fingerprint(frame.iloc[0]) == _fingerprint(later.iloc[0])
    assert _fingerprint(frame.iloc[0]) != _fingerprint(frame.iloc[1])


def test_site_pages_drawn_in_worker_processes_equal_pages_drawn_in_one(built: Built) -> None:
    from assets.reports import ReportContext, render_pages, report_sites
    ctx = ReportContext(read_warehouse(str(built.warehouse)), None)
    codes = report_sites(ctx)
    assert len(codes) >= 2
    assert render_pages(ctx, codes, workers=2) == render_pages(ctx, codes, workers=1)


def _new_publication(tables: WarehouseTables, sites: set[str], withheld: str = "[]") -> WarehouseTables:
    """A later publication that rewrote only `sites`' rows (as the publish does), one value of the first
    of them moved; `withheld` is its sites_withheld."""
    pubs = tables.publications
    new_id = int(pubs["publication_id"].max()) + 1
    row = pubs.iloc[[-1]].assign(publication_id=new_id, sites_withheld=withheld)
    iv = tables.indicator_values.copy()
    mine = iv["site_code"].isin(sites)
    iv.loc[mine, "publication_id"] = new_id
    if sites:
        moved = mine & (iv["breakdown"] == "overall") & iv["value"].notna()
        first = moved[moved].index[0]
        iv.loc[first, "value"] = iv.loc[first, "value"] * 1.1 + 0.5
    return dataclasses.replace(tables, indicator_values=iv,
                               publications=pd.concat([pubs, row], ignore_index=True))


def test_only_the_pages_of_sites_whose_figures_changed_are_drawn_again(built: Built, tmp_path: Path) -> None:
    """Every page of a partial redraw equals, byte for byte, the page a full draw writes."""
    tables = read_warehouse(str(built.warehouse))
    cached = tmp_path / "cached"
    codes = sorted(tables.sites["site_code"])
    assert write_reports(tables, cached).drawn == codes
    assert write_reports(tables, cached).drawn == []  # nothing changed

    site = codes[0]
    later = _new_publication(tables, {site})
    assert write_reports(later, cached).drawn == [site]
    write_reports(later, tmp_path / "full", reuse_charts=False)
    assert _pages(cached) == _pages(tmp_path / "full")
    assert f'data-publication="{int(later.publications["publication_id"].max())}"' in _pages(cached)[f"site_{site}.html"]

    # a publication that changed no figures but withheld another site: only that site's page (its banner)
    other = codes[1]
    withheld = f'[{{"site_code": "{other}", "period_end": "2026-11-30", "reason": "volume check failed"}}]'
    latest = _new_publication(later, set(), withheld)
    assert write_reports(latest, cached).drawn == [other]
    write_reports(latest, tmp_path / "full2", reuse_charts=False)
    assert _pages(cached) == _pages(tmp_path / "full2")
    assert "volume check failed" in _pages(cached)[f"site_{other}.html"]

    (cached / f"site_{codes[2]}.html").unlink()  # a missing page is drawn whatever the record says
    assert write_reports(latest, cached).drawn == [codes[2]]
