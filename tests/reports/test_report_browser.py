"""The reports in a real headless Chromium (Debian's), driven by Playwright: pages open offline without
console errors, charts render with a size, and a screenshot of one site shows the warehouse's numbers."""
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from tests.reports.conftest import CHROMIUM, CHROMIUM_MISSING, Built

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason=CHROMIUM_MISSING)]
pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed (pip install -e "
                    "'.[test]'; the browser is Debian's Chromium, never `playwright install`)")
SITE, INDICATOR = "lsc", "HYP_TREATED_TO_TARGET"
PINK, BLUE = (0xAE, 0x25, 0x73), (0x00, 0x5E, 0xB8)  # Core20 and chart colours in assets/reports.py


@dataclass
class Visit:
    page: object
    problems: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def context(browser: object) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, offline=True)
    yield context
    context.close()


def open_page(context: object, path: Path) -> Visit:
    """Open a file, recording console errors/warnings, page errors and every request."""
    page = context.new_page()
    seen = Visit(page)
    page.on("console", lambda m: m.type in ("error", "warning") and seen.problems.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: seen.problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: seen.problems.append(f"request failed: {r.url}"))
    page.on("request", lambda r: seen.requests.append(r.url))
    page.goto(path.as_uri(), wait_until="load")
    return seen


@dataclass(frozen=True)
class Rendered:
    title: str
    problems: list[str]
    requests: list[str]
    charts: list[list[float]]  # width, height, number of drawn marks of each chart's <svg>
    icons: list[float]         # widths of the SPC badges


@pytest.fixture(scope="module")
def rendered(built: Built, context: object) -> dict[str, Rendered]:
    """Every page opened once (site pages are large); the tests below assert on what was seen."""
    out = {}
    for path in [built.index.index_path, built.index.national_path, *built.index.site_paths.values()]:
        seen = open_page(context, path)
        charts = seen.page.eval_on_selector_all("figure.chart > svg", """els => els.map(s => {
            const r = s.getBoundingClientRect();
            return [r.width, r.height, s.querySelectorAll('path, use, text').length]; })""")
        icons = seen.page.eval_on_selector_all(".badge svg", "els => els.map(s => s.getBoundingClientRect().width)")
        out[path.name] = Rendered(seen.page.title(), seen.problems, seen.requests, charts, icons)
        seen.page.close()
    return out


def test_every_page_opens_offline_without_console_errors(rendered: dict[str, Rendered]) -> None:
    for name, page in rendered.items():
        assert page.problems == [], f"{name}: {page.problems}"
        assert all(url.startswith("file://") for url in page.requests), f"{name} fetched {page.requests}"
        assert page.title, name


def test_charts_render_with_a_size(built: Built, rendered: dict[str, Rendered]) -> None:
    for name, page in rendered.items():
        expected = len(built.page(name).select("figure", cls="chart"))
        assert len(page.charts) == expected, name
        assert all(w > 100 and h > 50 and marks > 10 for w, h, marks in page.charts), f"{name}: {page.charts}"
        if name != "index.html":
            assert expected > 0 and page.icons and min(page.icons) > 0, name


def test_screenshot_of_a_site_shows_the_warehouse_numbers(built: Built, context: object, artifacts_dir: Path) -> None:
    cell = built.query(f"""select * from evaluation.indicator_values where site_code = '{SITE}'
        and indicator_id = '{INDICATOR}' and breakdown = 'overall' order by period_end desc limit 1""").iloc[0]
    summary = built.query(f"""select * from evaluation.inequality_summary where site_code = '{SITE}'
        and indicator_id = '{INDICATOR}' and period_end = '{cell['period_end'].date()}'""").iloc[0]
    seen = open_page(context, built.index.site_paths[SITE])
    assert seen.problems == []
    page = seen.page
    page.screenshot(path=str(artifacts_dir / f"site_{SITE}_top.png"))
    block = page.locator(f"#ind-{INDICATOR}")
    block.scroll_into_view_if_needed()
    shot = artifacts_dir / f"site_{SITE}_{INDICATOR}.png"
    block.screenshot(path=str(shot))

    value = f"{cell['value']:.1f}%"
    assert block.locator(".headline .value").inner_text() == value
    assert page.locator(f"table.summary tr[data-indicator={INDICATOR}] td.value").inner_text() == value
    assert f"({cell['target']:.1f}%)" in block.locator(".headline .pill").inner_text()
    assert f"{summary['sii']:.1f}" in block.locator("figure[data-chart=quintile] figcaption").inner_text()
    gap_text = block.locator("figure[data-chart=gap] svg").text_content()
    assert f"gap {summary['absolute_gap']:.1f}".replace("-", "−") in gap_text
    _assert_suppressed_cells_visible(built, block)

    box = block.bounding_box()
    for chart in block.locator("figure.chart").all():
        inner = chart.bounding_box()
        assert chart.is_visible() and inner["width"] > 0 and box["y"] <= inner["y"] <= box["y"] + box["height"]
    image = Image.open(shot).convert("RGB")
    assert abs(image.width - box["width"]) <= 2 and abs(image.height - box["height"]) <= 2
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 50, "the screenshot looks blank"
    assert _has_colour(colours, PINK) and _has_colour(colours, BLUE), "chart colours missing from the screenshot"


def _assert_suppressed_cells_visible(built: Built, block: object) -> None:
    suppressed = built.query(f"""select breakdown_value from evaluation.indicator_values where site_code = '{SITE}'
        and indicator_id = '{INDICATOR}' and breakdown in ('ethnicity', 'plus_group') and suppressed
        and period_end = (select max(period_end) from evaluation.indicator_values where site_code = '{SITE}')""")
    for group in suppressed["breakdown_value"]:
        row = block.locator(f"tr[data-group='{group}']")
        assert row.locator("td.value").inner_text() == "suppressed" and row.is_visible()


def _has_colour(colours: list[tuple[int, tuple[int, int, int]]], rgb: tuple[int, int, int], tol: int = 12) -> bool:
    return any(n >= 20 and all(abs(a - b) <= tol for a, b in zip(c, rgb)) for n, c in colours)


def test_data_docs_link_is_on_the_page(built: Built, context: object) -> None:
    link = open_page(context, built.index.index_path).page.locator("a[data-link=data-docs]")
    assert link.is_visible()
    href = link.get_attribute("href")
    assert (built.index.out_dir / href).resolve() == built.data_docs.resolve()
