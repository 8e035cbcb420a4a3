"""Evaluation reports (issue 9): static HTML read by evaluators beside the warehouse.

For each publication: one self-contained page per site, a national comparison of every site, and an
index. Charts are drawn with matplotlib straight to inline SVG (no JavaScript, no CDN, no network at
view time; a Content-Security-Policy in every page makes the browser refuse any fetch). Everything is
read from the published warehouse only, so a report can never show what disclosure control withheld;
statistics come from assets/statistics.py (XmR limits, gap labels), not a second implementation.
See docs/reports.md.
"""

import functools
import hashlib
import html
import io
import json
import multiprocessing
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import matplotlib
import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from assets import statistics as st
from assets.changes import code_token
from assets.warehouse import (BIGINT, BOOL, DATE, FLOAT, INDICATOR_VALUE_SPEC, INEQUALITY_SPEC, TEXT, Spec,
                              read_queries)
from orchestration.resources import PipelineResource
from orchestration.retries import RETRY_POLICY
from orchestration.settings import Settings, is_postgres_url

TABLES = ("indicator_values", "inequality_summary", "indicators", "sites", "publications", "data_quality")
ETHNIC_GROUPS = ("Asian", "Black", "Mixed", "White", "Other", "Not stated")
POPULATION_ORDER = {"adult": 0, "cyp": 1, "area": 2}
SPC_MIN_POINTS = 15  # the min_points xmr() uses by default: MDC's "15 or more points" before judging
SUPPRESSED, NO_DATA = "suppressed", "–"
CHART_FOLDER = ".charts"  # the chart cache beside the pages (cached_chart)
PAGES_DRAWN = ".pages.json"  # what each site page in a report folder was drawn from (page_digest)
DATA_QUALITY_FILE = "data_quality.html"

# NHS identity colours; the SPC ones are Making Data Count's icon colours.
BLUE, PINK, GREY, DARK, RED, GREEN = "#005EB8", "#AE2573", "#768692", "#212B32", "#DA291C", "#007F3B"
SITE_COLOURS = ("#003087", "#AE2573", "#00A499", "#330072", "#FFB81C", "#41B6E6", "#8A1538", "#768692")
MDC = {"improvement": "#00B0F0", "concern": "#E46C0A", "neither": "#7030A0", "common": "#A6A6A6"}
# Text stays text (searchable, testable); fixed ids so a publication always renders the same bytes; a "$" in a
# site or indicator name is printed, not parsed as mathtext.
RC = {"svg.fonttype": "none", "svg.hashsalt": "c20p5-reports", "font.size": 8.5, "text.parse_math": False,
      "axes.spines.top": False, "axes.spines.right": False, "axes.titlesize": 9.5, "axes.titleweight": "bold"}


# ---------------------------------------------------------------------------------------------
# Reading the warehouse (DuckDB file or PostgreSQL), one consistent snapshot
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WarehouseTables:
    indicator_values: pd.DataFrame
    inequality_summary: pd.DataFrame
    indicators: pd.DataFrame
    sites: pd.DataFrame
    publications: pd.DataFrame
    data_quality: pd.DataFrame


def read_warehouse(url: str) -> WarehouseTables:
    """Every table the pages show, from one publication (one snapshot of the warehouse)."""
    if not is_postgres_url(url) and not Path(url).exists():
        raise FileNotFoundError(f"warehouse {url} not found: run the nightly job (c20p5 run) first")
    return normalise(read_queries(url, {t: f"select * from evaluation.{t}" for t in TABLES}))


def normalise(frames: dict[str, pd.DataFrame]) -> WarehouseTables:
    """One dtype per column whichever target was read: psycopg hands back Python dates, ints and
    Nones in object columns, DuckDB typed columns. The fact tables follow the warehouse contract."""
    iv = _typed(frames["indicator_values"], INDICATOR_VALUE_SPEC)
    iv["suppressed"] = iv["suppressed"].fillna(False).astype(bool)
    indicators = frames["indicators"].copy()
    indicators["target"] = pd.to_numeric(indicators["target"], errors="coerce").astype(float)
    publications = frames["publications"].copy()
    publications["publication_id"] = publications["publication_id"].astype("int64")
    data_quality = frames["data_quality"].copy()
    data_quality["publication_id"] = data_quality["publication_id"].astype("int64")
    return WarehouseTables(iv, _typed(frames["inequality_summary"], INEQUALITY_SPEC), indicators,
                           frames["sites"].copy(), publications.sort_values("publication_id").reset_index(drop=True),
                           data_quality)


_DTYPES = {BIGINT: "Int64", FLOAT: "float64", TEXT: "str", BOOL: "boolean"}


def _typed(frame: pd.DataFrame, spec: Spec) -> pd.DataFrame:
    out = frame.copy()
    for column, kind in spec:
        if kind == DATE:
            out[column] = pd.to_datetime(out[column]).astype("datetime64[us]")
        elif kind in (BIGINT, FLOAT):
            out[column] = pd.to_numeric(out[column], errors="coerce").astype(_DTYPES[kind])
        else:
            out[column] = out[column].astype(_DTYPES[kind])
    return out


# ---------------------------------------------------------------------------------------------
# Small formatting helpers
# ---------------------------------------------------------------------------------------------

def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _f(value: object) -> float | None:
    """A plain float, or None for NULL/NaN/NA (pandas hands back all three)."""
    if value is None or pd.isna(value):
        return None
    return float(value)


def fmt_number(value: object, digits: int = 1) -> str:
    v = _f(value)
    return NO_DATA if v is None else f"{v:,.{digits}f}".replace("-", "−")


def fmt_value(value: object, unit: str) -> str:
    v = _f(value)
    if v is None:
        return NO_DATA
    return f"{fmt_number(v)}%" if unit == "%" else f"{fmt_number(v)} {unit}"


def fmt_ci(lower: object, upper: object) -> str:
    if _f(lower) is None or _f(upper) is None:
        return NO_DATA
    return f"{fmt_number(lower)} to {fmt_number(upper)}"


def fmt_count(value: object) -> str:
    v = _f(value)
    return NO_DATA if v is None else f"{int(v):,}"


def gap_unit(unit: str) -> str:
    """Differences of percentages are percentage points, not per cent."""
    return "percentage points" if unit == "%" else unit


def _data(value: object) -> str:
    v = _f(value)
    return "" if v is None else repr(v)


def _period(ts: object) -> str:
    return pd.Timestamp(ts).strftime("%Y-%m-%d")


PLUS_LABELS = {
    "homeless": "Experiencing homelessness", "learning_disability": "Learning disability", "autism": "Autism",
    "gypsy_roma_traveller": "Gypsy, Roma and Traveller", "justice_contact": "In contact with the justice system",
    "carer": "Carers", "asylum_refugee": "Asylum seekers and refugees", "looked_after_child": "Looked-after children",
    "coastal": "Coastal communities", "ethnic_minority": "Ethnic minority communities"}


def _label(group: str) -> str:
    return PLUS_LABELS.get(group, group)


def _withheld_period(entry: dict) -> str:
    return "all periods" if entry["period_end"] == "*" else str(entry["period_end"])


def _or_suppressed(count: object) -> str:
    return SUPPRESSED if _f(count) is None else fmt_count(count)


def _direction(meta: pd.Series) -> str | None:
    return meta.get("direction") if meta.get("direction") in ("higher", "lower") else None


# ---------------------------------------------------------------------------------------------
# Statistics for display (built on assets/statistics.py)
# ---------------------------------------------------------------------------------------------

def quintile_populations(denominators: list[object], known_total: float | None) -> list[float] | None:
    """Published quintile denominators. A suppressed one gets an equal share of what the Core20 and rest
    denominators (people with a known IMD, suppressed far less often) leave over; None when nothing is
    left to share (rounding), so the chart falls back to equal fifths."""
    pops = [_f(d) for d in denominators]
    missing = [i for i, p in enumerate(pops) if not p]
    if not missing:
        return pops
    left = (known_total or 0.0) - sum(p for p in pops if p)
    if left <= 0:
        return None
    return [left / len(missing) if i in missing else p for i, p in enumerate(pops)]


def rank_midpoints(populations: Iterable[object] | None, groups: int = 5) -> np.ndarray:
    """Cumulative-rank midpoints (0 = most deprived) from the quintile populations; equal fifths when
    they are unknown."""
    pops = np.array([_f(p) or 0.0 for p in ([] if populations is None else populations)], dtype=float)
    if pops.size == 0 or np.any(pops <= 0):
        return (np.arange(groups) + 0.5) / groups
    share = pops / pops.sum()
    return np.cumsum(share) - share / 2


def weighted_mean(values: Iterable[object], weights: Iterable[object]) -> float | None:
    """Population-weighted mean, or None unless every value and weight is known."""
    pairs = [(_f(v), _f(w)) for v, w in zip(values, weights)]
    if not pairs or any(v is None or not w for v, w in pairs):
        return None
    vals, pops = np.array(pairs).T
    return float(np.average(vals, weights=pops))


def sii_line(mean: float | None, sii: float | None) -> tuple[float, float] | None:
    """(fitted at rank 0, fitted at rank 1) of the SII line. The weighted least-squares line on the
    cumulative-rank midpoints passes through the population-weighted mean at rank 0.5 (the weighted
    mean of the midpoints is exactly 0.5), so its ends are that mean -/+ sii/2."""
    if mean is None or sii is None:
        return None
    return mean - sii / 2, mean + sii / 2


def sii_anchor(quintiles: list[pd.Series | None], core20: list[pd.Series | None]) -> float | None:
    """The population-weighted mean of the five quintiles: from the quintiles when all are published, else
    from Core20 and the rest (the same people: quintile 1, and quintiles 2-5), else unknown."""
    for cells in (quintiles, core20):
        if all(c is not None for c in cells):
            mean = weighted_mean([c["value"] for c in cells], [c["denominator"] for c in cells])
            if mean is not None:
                return mean
    return None


def gap_ci(core20: pd.Series | None, rest: pd.Series | None) -> tuple[float, float] | None:
    """95% CI of core20 - not_core20 by the MOVER method (Newcombe's hybrid score for proportions):
    each end combines the two published intervals, so it needs nothing but the warehouse cells."""
    if core20 is None or rest is None:
        return None
    p1, l1, u1 = (_f(core20[c]) for c in ("value", "lower_ci", "upper_ci"))
    p2, l2, u2 = (_f(rest[c]) for c in ("value", "lower_ci", "upper_ci"))
    if None in (p1, l1, u1, p2, l2, u2):
        return None
    d = p1 - p2
    return d - float(np.hypot(p1 - l1, u2 - p2)), d + float(np.hypot(u1 - p1, p2 - l2))


def gap_trend(gaps: pd.Series, meta: pd.Series) -> str | None:
    """Narrowing or widening between the first and latest published gap (statistics.gap_trend_label)."""
    known = gaps.dropna()
    if len(known) < 2:
        return None
    # The label does not depend on polarity (|gap| shrinks or grows); "neither" indicators pass "higher".
    return st.gap_trend_label(float(known.iloc[0]), float(known.iloc[-1]), _direction(meta) or "higher")


def point_signals(values: list[float | None], direction: str | None) -> list[str]:
    """MDC colour of each observed point: which side any special-cause rule puts it on."""
    flags = st.special_cause_flags(values)
    ys = np.array([v for v in values if v is not None], dtype=float)
    mean = float(np.mean(ys)) if ys.size else float("nan")
    out = []
    for i, y in enumerate(ys):
        level = flags["beyond_limits"][i] or flags["shift"][i] or flags["two_of_three"][i]
        trend = 1 if flags["trend_up"][i] else -1 if flags["trend_down"][i] else 0
        out.append(_signal_kind((1 if y > mean else -1) if level else trend, direction))
    return out


def _signal_kind(signal: int, direction: str | None) -> str:
    if signal == 0:
        return "common"
    if direction is None:
        return "neither"
    return "improvement" if signal == (1 if direction == "higher" else -1) else "concern"


# ---------------------------------------------------------------------------------------------
# Charts: matplotlib figures serialised to inline SVG
# ---------------------------------------------------------------------------------------------

# Drawing is nearly all of a report build (about 5 s a site). A chart whose inputs did not change since
# the last build (every site but one on a night that brings one site's month) is read back from a cache
# beside the pages, keyed by this file, matplotlib's version and the chart's arguments.
CHART_CACHE: ContextVar[Path | None] = ContextVar("chart_cache", default=None)
_DRAWING_CODE = hashlib.sha256(Path(__file__).read_bytes() + matplotlib.__version__.encode()).hexdigest()


def _fingerprint(arg: object) -> bytes:
    """What a chart draws from an argument, as bytes: frames and rows without the publication id (never
    drawn) or their positions in the warehouse's tables, so the same cells give the same key in every
    publication. Content hashes, not pickles: two equal frames can pickle differently."""
    if isinstance(arg, pd.DataFrame):
        frame = arg.drop(columns=["publication_id"], errors="ignore")
        layout = repr((list(frame.columns), [str(t) for t in frame.dtypes])).encode()
        return layout + pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()
    if isinstance(arg, pd.Series):
        return repr(list(arg.drop(labels=["publication_id"], errors="ignore").items())).encode()
    if isinstance(arg, dict):
        return b"{" + b",".join(_fingerprint(k) + b":" + _fingerprint(v) for k, v in arg.items()) + b"}"
    if isinstance(arg, (list, tuple)):
        return b"[" + b",".join(_fingerprint(v) for v in arg) + b"]"
    return repr(arg).encode()  # ids, numbers, dates, SpcView: reprs of plain values


def cached_chart(draw: Callable[..., str]) -> Callable[..., str]:
    """Memoise a chart function's SVG on disk while CHART_CACHE names a folder (write_reports sets it)."""
    @functools.wraps(draw)
    def chart(*args: object) -> str:
        folder = CHART_CACHE.get()
        if folder is None:
            return draw(*args)
        key = hashlib.sha256(f"{_DRAWING_CODE}|{draw.__name__}".encode())
        for arg in args:
            part = _fingerprint(arg)
            key.update(len(part).to_bytes(8, "little") + part)
        path = folder / f"{key.hexdigest()}.svg"
        if path.exists():
            os.utime(path)  # used by this build: kept by _prune_chart_cache
            return path.read_text(encoding="utf-8")
        text = draw(*args)
        _write(path, text)
        return text
    return chart


def _prune_chart_cache(folder: Path, since: float) -> None:
    """Drop the charts this build did not use, so the cache holds one publication's charts, not all."""
    for path in folder.glob("*.svg"):
        if path.stat().st_mtime < since:
            path.unlink(missing_ok=True)


def _new_figure(width: float = 5.2, height: float = 3.0, **grid: object) -> tuple[Figure, list[Axes]]:
    with rc_context(RC):
        fig = Figure(figsize=(width, height))
        axes = fig.subplots(**grid) if grid else fig.subplots()
    return fig, list(np.atleast_1d(axes))


def _layout(fig: Figure, left: float = 0.6, bottom: float = 0.45, top: float = 0.15, **space: float) -> None:
    """Fixed margins in inches: tight_layout would draw every figure twice, doubling the build time."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left / w, right=1 - 0.15 / w, bottom=bottom / h, top=1 - top / h, **space)


def _label_inches(labels: Iterable[str]) -> float:
    """Room for y tick labels at 8.5 pt (about 0.062 in a character) plus the ticks."""
    return 0.25 + 0.062 * max((len(t) for t in labels), default=4)


def svg(fig: Figure, chart_id: str, label: str) -> str:
    """The figure as an <svg> element safe to inline many times in one page: the XML prolog and
    metadata dropped, and every id prefixed so two charts never share a marker or clip path."""
    buf = io.StringIO()
    with rc_context(RC):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    text = re.sub(r'\bid="([^"]+)"', rf'id="{chart_id}-\1"', text)
    text = re.sub(r'href="#([^"]+)"', rf'href="#{chart_id}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{chart_id}-\1)", text)
    return text.replace("<svg ", f'<svg role="img" aria-label="{_e(label)}" ', 1)


def _figure(kind: str, chart_id: str, label: str, fig: Figure, caption: str, attrs: str = "") -> str:
    return (f'<figure class="chart" data-chart="{kind}" id="{chart_id}"{attrs}>{svg(fig, chart_id, label)}'
            f"<figcaption>{caption}</figcaption></figure>")


def _extent(value: float, low: float | None, high: float | None) -> list[list[float]]:
    """Matplotlib's asymmetric bar extents [[below], [above]]; a missing bound draws no bar on that
    side, and a bound on the wrong side of its value (an interval that does not contain its point
    estimate) draws none either rather than stopping the report."""
    below = 0.0 if low is None else max(0.0, value - low)
    above = 0.0 if high is None else max(0.0, high - value)
    return [[below], [above]]


def _errorbar(ax: Axes, xs: list, ys: list, lows: list, highs: list, color: str, **kw: object) -> None:
    """Points with asymmetric CI bars; rows without a value are skipped."""
    keep = [i for i, y in enumerate(ys) if y is not None]
    if not keep:
        return
    bars = [_extent(ys[i], lows[i], highs[i]) for i in keep]
    ax.errorbar([xs[i] for i in keep], [ys[i] for i in keep], yerr=[[b[0][0] for b in bars], [b[1][0] for b in bars]],
                fmt="o", color=color, capsize=3, ms=4.5, lw=1.2, **kw)


def _mark_missing(ax: Axes, xs: list, texts: list[str], horizontal: bool = False) -> None:
    """Write 'suppressed' (or 'no data') where a point would be, so a gap never reads as zero."""
    for x, text in zip(xs, texts):
        if horizontal:
            ax.annotate(text, (0.01, x), xycoords=("axes fraction", "data"), va="center", fontsize=7.5,
                        color=GREY, style="italic")
        else:
            ax.annotate(text, (x, 0.03), xycoords=("data", "axes fraction"), ha="center", fontsize=7.5,
                        color=GREY, style="italic", rotation=90 if text == SUPPRESSED else 0)


def _missing_text(row: pd.Series | None) -> str:
    return SUPPRESSED if row is not None and bool(row["suppressed"]) else "no data"


@cached_chart
def quintile_chart(chart_id: str, quintiles: pd.DataFrame, core20: pd.DataFrame, summary: pd.Series | None,
                   meta: pd.Series) -> str:
    """Values by IMD quintile at their cumulative-rank midpoints, CIs, and the SII line."""
    fig, (ax,) = _new_figure()
    rows = [_row(quintiles, "breakdown_value", q) for q in "12345"]
    groups = [_row(core20, "breakdown_value", g) for g in ("core20", "not_core20")]
    known = sum(_f(g["denominator"]) or 0.0 for g in groups) if all(g is not None for g in groups) else None
    xs = list(rank_midpoints(quintile_populations(_column(rows, "denominator"), known)))
    ys = [_f(v) for v in _column(rows, "value")]
    _errorbar(ax, xs, ys, [_f(v) for v in _column(rows, "lower_ci")], [_f(v) for v in _column(rows, "upper_ci")],
              BLUE, label="quintile value (95% CI)")
    missing = [(x, _missing_text(r)) for x, y, r in zip(xs, ys, rows) if y is None]
    _mark_missing(ax, [x for x, _ in missing], [t for _, t in missing])
    sii = _f(summary["sii"]) if summary is not None else None
    line = sii_line(sii_anchor(rows, groups), sii)
    if line:
        ax.plot([0, 1], line, "--", color=PINK, lw=1.5, label=f"SII {fmt_number(sii)}")
    _target_line(ax, meta)
    ax.set_xlim(0, 1)
    ax.set_xticks(xs, [f"Q{q}" for q in "12345"])
    ax.set_xlabel("IMD quintile (Q1 most deprived) at its cumulative population rank, 0 to 1")
    ax.set_ylabel(meta["unit"])
    _legend(ax)
    _layout(fig, bottom=0.55, top=0.35)
    caption = _sii_caption(summary, meta["unit"], line is not None)
    return _figure("quintile", chart_id, f"{meta['indicator_name']} by IMD quintile", fig, caption,
                   f' data-sii="{_data(sii)}" data-line="{_e(json.dumps(line))}"')


def _column(rows: list[pd.Series | None], column: str) -> list[object]:
    return [r[column] if r is not None else None for r in rows]


def _sii_caption(summary: pd.Series | None, unit: str, drawn: bool) -> str:
    if summary is None or _f(summary["sii"]) is None:
        return "Slope index of inequality: not available (a quintile is empty, zero or suppressed)."
    undrawn = "" if drawn else " The line is not drawn: too many cells are suppressed to place it."
    s = summary
    return (f"Slope index of inequality (least minus most deprived, fitted): <b>{fmt_number(s['sii'])}</b> "
            f"{_e(gap_unit(unit))} (95% CI {fmt_ci(s['sii_lower_ci'], s['sii_upper_ci'])}); relative index "
            f"{fmt_number(s['rii'], 2)} (95% CI {fmt_ci(s['rii_lower_ci'], s['rii_upper_ci'])}).{undrawn}")


def _target_line(ax: Axes, meta: pd.Series) -> None:
    target = _f(meta.get("target"))
    if target is not None:
        ax.axhline(target, color=RED, lw=1, ls=":", label=f"target {fmt_number(target)}")


def _legend(ax: Axes) -> None:
    """Above the plot area, so it can never hide a point or an interval."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, frameon=False, loc="lower left", bbox_to_anchor=(0, 1.0), ncols=3,
                  borderaxespad=0.2, handlelength=1.6, columnspacing=1.2)


def _row(frame: pd.DataFrame, column: str, value: object) -> pd.Series | None:
    hit = frame[frame[column] == value]
    return hit.iloc[0] if len(hit) else None


@cached_chart
def gap_chart(chart_id: str, core20: pd.DataFrame, summary: pd.DataFrame, meta: pd.Series) -> str:
    """Core20 and the rest over time with CIs; the gap between them shaded and labelled per period."""
    fig, (ax,) = _new_figure()
    periods = sorted(set(core20["period_end"]) | set(summary["period_end"]))
    xs = list(range(len(periods)))
    series = {}
    for group, color, offset in (("core20", PINK, -0.05), ("not_core20", BLUE, 0.05)):
        rows = [_row(core20[core20["period_end"] == p], "breakdown_value", group) for p in periods]
        ys = series[group] = [_f(r["value"]) if r is not None else None for r in rows]
        _errorbar(ax, [x + offset for x in xs], ys, [_f(r["lower_ci"]) if r is not None else None for r in rows],
                  [_f(r["upper_ci"]) if r is not None else None for r in rows], color,
                  label="Core20" if group == "core20" else "rest (not Core20)", ls="-")
        _mark_missing(ax, [x + offset for x, y in zip(xs, ys) if y is None],
                      [_missing_text(r) for r, y in zip(rows, ys) if y is None])
    both = [(x, a, b) for x, a, b in zip(xs, series["core20"], series["not_core20"]) if a is not None and b is not None]
    if both:
        bx, ba, bb = zip(*both)
        ax.fill_between(bx, ba, bb, color=GREY, alpha=0.18, lw=0, label="gap")
    for x, p in zip(xs, periods):
        s = _row(summary, "period_end", p)
        if s is not None and _f(s["absolute_gap"]) is not None:
            ax.annotate(f"gap {fmt_number(s['absolute_gap'])}", (x, 1.0), xycoords=("data", "axes fraction"),
                        ha="center", va="top", fontsize=7.5, color=DARK)
    _target_line(ax, meta)
    ax.set_ylabel(meta["unit"])
    ax.set_xticks(xs, [pd.Timestamp(p).strftime("%b %Y") for p in periods])
    ax.set_xlim(-0.5, max(len(xs) - 0.5, 0.5))
    ax.margins(y=0.15)
    _legend(ax)
    _layout(fig, bottom=0.3, top=0.35)
    return _figure("gap", chart_id, f"{meta['indicator_name']}: Core20 against the rest over time", fig,
                   f"Core20 against the rest for each 12-month period; the gap is Core20 minus the rest "
                   f"({_e(gap_unit(meta['unit']))}).")


@dataclass(frozen=True)
class SpcView:
    periods: list[pd.Timestamp]
    values: list[float | None]
    result: st.SpcResult


def spc_view(overall: pd.DataFrame, meta: pd.Series) -> SpcView:
    """The monthly overall values and their XmR summary from statistics.xmr (the project's one SPC)."""
    rows = overall.sort_values("period_end")
    values = [_f(v) for v in rows["value"]]
    result = st.xmr(values, target=_f(meta.get("target")), direction=_direction(meta), min_points=SPC_MIN_POINTS)
    return SpcView(list(rows["period_end"]), values, result)


@cached_chart
def spc_chart(chart_id: str, view: SpcView, meta: pd.Series) -> str:
    fig, (ax,) = _new_figure()
    xs = list(range(len(view.periods)))
    observed = [(x, v) for x, v in zip(xs, view.values) if v is not None]
    judged = view.result.variation != "insufficient_data"
    kinds = point_signals(view.values, _direction(meta)) if judged else ["common"] * len(observed)
    if observed:
        ax.plot(*zip(*observed), color=GREY, lw=1.2, zorder=1)
        ax.scatter(*zip(*observed), c=[MDC[k] for k in kinds], s=26, zorder=2, edgecolors="white", linewidths=0.5)
    r = view.result
    if np.isfinite(r.mean):
        ax.axhline(r.mean, color=DARK, lw=1, label=f"mean {fmt_number(r.mean)}")
        ax.axhline(r.ucl, color=GREY, lw=1, ls="--", label="process limits")
        ax.axhline(r.lcl, color=GREY, lw=1, ls="--")
    _target_line(ax, meta)
    _mark_missing(ax, [x for x, v in zip(xs, view.values) if v is None], [SUPPRESSED] * view.values.count(None))
    ax.set_xticks(xs, [pd.Timestamp(p).strftime("%b %Y") for p in view.periods])
    ax.set_xlim(-0.5, max(len(xs) - 0.5, 0.5))
    ax.set_ylabel(meta["unit"])
    _legend(ax)
    _layout(fig, bottom=0.3, top=0.35)
    trial = "" if judged else f" Trial limits: fewer than {SPC_MIN_POINTS} monthly points, so no rule is judged yet."
    caption = (f"XmR chart of the monthly overall value: mean {fmt_number(r.mean)}, process limits "
               f"{fmt_ci(r.lcl, r.ucl)} (mean ± 2.66 × mean moving range).{trial}")
    attrs = (f' data-mean="{_data(r.mean)}" data-ucl="{_data(r.ucl)}" data-lcl="{_data(r.lcl)}"'
             f' data-points="{len(observed)}"')
    return _figure("spc", chart_id, f"{meta['indicator_name']}: SPC chart", fig, caption, attrs)


@cached_chart
def breakdown_chart(chart_id: str, groups: pd.DataFrame, overall: float | None, meta: pd.Series) -> str:
    """Ethnicity and PLUS groups as a dot-and-interval plot against the site's overall value."""
    rows = [r for _, r in groups.iterrows()]
    fig, (ax,) = _new_figure(5.2, max(1.6, 0.24 * len(rows) + 0.9))
    ys = list(range(len(rows)))[::-1]
    vals = [_f(r["value"]) for r in rows]
    for y, r, v in zip(ys, rows, vals):
        if v is not None:
            color = PINK if r["breakdown"] == "plus_group" else BLUE
            ax.errorbar([v], [y], xerr=_extent(v, _f(r["lower_ci"]), _f(r["upper_ci"])), fmt="o", color=color,
                        capsize=2.5, ms=4, lw=1.1)
    _mark_missing(ax, [y for y, v in zip(ys, vals) if v is None],
                  [_missing_text(r) for r, v in zip(rows, vals) if v is None], horizontal=True)
    if overall is not None:
        ax.axvline(overall, color=DARK, lw=1, ls="--", label=f"site overall {fmt_number(overall)}")
    labels = [("PLUS: " if r["breakdown"] == "plus_group" else "") + _label(r["breakdown_value"]) for r in rows]
    ax.set_yticks(ys, labels)
    ax.set_xlabel(meta["unit"])
    _legend(ax)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    _layout(fig, left=_label_inches(labels), bottom=0.4, top=0.3)
    return _figure("breakdowns", chart_id, f"{meta['indicator_name']} by ethnicity and PLUS group", fig,
                   "Ethnicity (blue) and the site's PLUS groups (pink), with 95% CIs.")


@cached_chart
def forest_chart(chart_id: str, rows: list[dict], meta: pd.Series) -> str:
    """Every site side by side: Core20 gap (MOVER CI) and SII (Monte Carlo CI), coloured by trend."""
    fig, axes = _new_figure(7.4, max(1.8, 0.42 * len(rows) + 1.1), ncols=2, sharey=True)
    ys = list(range(len(rows)))[::-1]
    colors = {"gap narrowing": GREEN, "gap widening": MDC["concern"]}
    for ax, key, title in ((axes[0], "gap", "Core20 − rest"), (axes[1], "sii", "Slope index of inequality")):
        for y, row in zip(ys, rows):
            v, ci = row[key], row[f"{key}_ci"]
            if v is None:
                ax.annotate(row[f"{key}_missing"], (0.5, y), xycoords=("axes fraction", "data"), ha="center",
                            va="center", fontsize=7.5, color=GREY, style="italic")
                continue
            lo, hi = ci if ci else (None, None)
            ax.errorbar([v], [y], xerr=_extent(v, lo, hi), fmt="D", ms=5, capsize=3, lw=1.3,
                        color=colors.get(row["trend"], BLUE))
        ax.axvline(0, color=DARK, lw=0.8)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_title(title)
        ax.set_xlabel(gap_unit(meta["unit"]))
    axes[0].set_yticks(ys, [r["site_name"] for r in rows])
    _layout(fig, left=_label_inches(r["site_name"] for r in rows), bottom=0.45, top=0.3, wspace=0.08)
    return _figure("forest", chart_id, f"{meta['indicator_name']}: sites side by side", fig,
                   "Latest period of each site, 95% CIs. Green: gap narrowing since the site's first published "
                   "period; orange: widening; blue: no change, or not enough periods to tell.")


@cached_chart
def gap_trend_chart(chart_id: str, summary: pd.DataFrame, names: dict[str, str], meta: pd.Series) -> str:
    fig, (ax,) = _new_figure(5.2, 2.8)
    for i, (code, group) in enumerate(summary.sort_values("period_end").groupby("site_code")):
        ax.plot(group["period_end"].dt.strftime("%b %Y"), group["absolute_gap"], marker="o", ms=4,
                label=names.get(code, code), color=SITE_COLOURS[i % len(SITE_COLOURS)])
    ax.axhline(0, color=DARK, lw=0.8)
    ax.set_ylabel(f"Core20 − rest ({gap_unit(meta['unit'])})")
    _legend(ax)
    _layout(fig, bottom=0.3, top=0.35)
    return _figure("gap_trend", chart_id, f"{meta['indicator_name']}: Core20 gap over time by site", fig,
                   "The Core20 gap of each site over time: towards zero is narrowing.")


# ---------------------------------------------------------------------------------------------
# Making Data Count icons (simple inline SVG badges)
# ---------------------------------------------------------------------------------------------

VARIATION_TEXT = {
    "common_cause": "Common cause variation", "special_cause_improvement": "Special cause: improvement",
    "special_cause_concern": "Special cause: concern", "special_cause_neither": "Special cause (no better direction)",
    "insufficient_data": f"Variation not judged: fewer than {SPC_MIN_POINTS} monthly points"}
ASSURANCE_TEXT = {
    "pass": "Assurance: consistently meets the target", "fail": "Assurance: consistently misses the target",
    "inconsistent": "Assurance: sometimes meets, sometimes misses the target",
    "no_target": "No target to assure against",
    "insufficient_data": f"Assurance not judged: fewer than {SPC_MIN_POINTS} monthly points"}


def _badge(kind: str, code: str, text: str, letter: str, color: str, compact: bool) -> str:
    """A circle with a letter (dashed when not judged); `compact` (in tables) keeps the words in the tooltip."""
    dash = ' stroke-dasharray="3 2"' if code == "insufficient_data" else ""
    words = "" if compact else f'<span class="badge-text">{_e(text)}</span>'
    return (f'<span class="badge" data-{kind}="{_e(code)}"><svg class="icon" width="28" height="28" '
            f'viewBox="0 0 28 28" role="img" aria-label="{_e(text)}"><title>{_e(text)}</title>'
            f'<circle cx="14" cy="14" r="12" fill="white" stroke="{color}" stroke-width="2.5"{dash}/>'
            f'<text x="14" y="18.5" text-anchor="middle" font-size="12" font-weight="bold" fill="{color}">{letter}'
            f"</text></svg>{words}</span>")


def variation_badge(code: str, direction: str | None, compact: bool = False) -> str:
    """MDC variation icon: H/L says which way the special cause points."""
    high = {"special_cause_improvement": direction == "higher", "special_cause_concern": direction == "lower"}
    letter = {"common_cause": "~", "insufficient_data": "?", "special_cause_neither": "!"}.get(
        code, "H" if high.get(code) else "L")
    color = {"special_cause_improvement": MDC["improvement"], "special_cause_concern": MDC["concern"],
             "special_cause_neither": MDC["neither"]}.get(code, GREY)
    return _badge("variation", code, VARIATION_TEXT.get(code, code), letter, color, compact)


def assurance_badge(code: str, compact: bool = False) -> str:
    letter, color = {"pass": ("P", MDC["improvement"]), "fail": ("F", MDC["concern"]),
                     "inconsistent": ("?", GREY)}.get(code, ("–", GREY))
    return _badge("assurance", code, ASSURANCE_TEXT.get(code, code), letter, color, compact)


def target_badge(value: float | None, meta: pd.Series) -> str:
    target, direction = _f(meta.get("target")), _direction(meta)
    if target is None or direction is None:
        return '<span class="pill neutral" data-target-status="no_target">no national target</span>'
    if value is None:
        return '<span class="pill neutral" data-target-status="unknown">target not assessable</span>'
    met = value >= target if direction == "higher" else value <= target
    if met:
        status, text = "met", "meets target"
    else:
        status, text = "not_met", "below target" if direction == "higher" else "above target"
    return (f'<span class="pill {status}" data-target-status="{status}">{text} '
            f'({fmt_value(target, meta["unit"])})</span>')


# ---------------------------------------------------------------------------------------------
# HTML pages
# ---------------------------------------------------------------------------------------------

CSS = """
body{font-family:Arial,Helvetica,sans-serif;color:#212b32;margin:0;background:#f0f4f5;line-height:1.4}
header{background:#005eb8;color:#fff;padding:14px 24px}header a{color:#fff}
header h1{margin:0 0 4px;font-size:1.5em}nav a{margin-right:16px}
main{padding:16px 24px;max-width:1280px}
section.indicator,section.card{background:#fff;border:1px solid #d8dde0;border-radius:4px;padding:12px 18px;
margin:18px 0}
h2{margin:.2em 0 .3em;font-size:1.25em}h3{font-size:1.02em;margin:1em 0 .4em}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:12px}
.charts.national{grid-template-columns:minmax(0,3fr) minmax(0,2fr)}
figure.chart{margin:0;background:#fff}figure.chart svg{width:100%;height:auto;display:block}
figcaption{font-size:.85em;color:#4c6272}
table{border-collapse:collapse;font-size:.88em;margin:6px 0;background:#fff}
th,td{border:1px solid #d8dde0;padding:3px 7px;text-align:left;vertical-align:top}th{background:#e8edee}
td.num{text-align:right;white-space:nowrap}td.suppressed{color:#768692;font-style:italic}
.headline{font-size:1.1em}.headline .value{font-size:1.5em;font-weight:bold}
.pill{display:inline-block;white-space:nowrap;border-radius:10px;padding:1px 9px;font-size:.85em;margin-left:6px}
.pill.met{background:#007f3b;color:#fff}.pill.not_met{background:#da291c;color:#fff}.pill.neutral{background:#d8dde0}
.badge{display:inline-flex;align-items:center;gap:4px;margin-right:14px}.badge-text{font-size:.85em}
.banner{background:#fff9c4;border-left:6px solid #ffb81c;padding:8px 14px;margin:12px 0}
.muted{color:#4c6272;font-size:.9em}details{margin:8px 0}
"""
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"  # no fetch of any kind at view time


def page(title: str, heading: str, nav: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_e(title)}</title>'
            f"<style>{CSS}</style></head><body><header><h1>{heading}</h1><nav>{nav}</nav></header>"
            f"<main>{body}</main></body></html>")


def table(headers: list[str], rows: list[str], cls: str = "") -> str:
    head = "".join(f"<th>{h}</th>" for h in headers)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _td(text: str, cls: str = "", data: str = "") -> str:
    return f'<td class="{cls}"{data}>{text}</td>'


@dataclass
class ReportContext:
    """What every page needs: the tables, the catalogue and the publication being reported."""
    tables: WarehouseTables
    data_docs_href: str | None
    catalogue: pd.DataFrame = field(init=False)
    publication: pd.Series | None = field(init=False)
    withheld: list[dict] = field(init=False)

    def __post_init__(self) -> None:
        self.catalogue = self.tables.indicators.set_index("indicator_id", drop=False)
        pubs = self.tables.publications
        self.publication = pubs.iloc[-1] if len(pubs) else None
        self.withheld = json.loads(self.publication["sites_withheld"] or "[]") if self.publication is not None else []

    def indicator_ids(self, frame: pd.DataFrame) -> list[str]:
        ids = [i for i in frame["indicator_id"].unique() if i in self.catalogue.index]
        return sorted(ids, key=lambda i: (POPULATION_ORDER.get(self.catalogue.loc[i].get("population"), 9), i))

    def site_name(self, code: str) -> str:
        hit = self.tables.sites[self.tables.sites["site_code"] == code]
        return str(hit["site_name"].iloc[0]) if len(hit) else code


def nav(ctx: ReportContext) -> str:
    docs = (f'<a href="{_e(ctx.data_docs_href)}" data-link="data-docs">Validation results (Great Expectations Data Docs)</a>'
            if ctx.data_docs_href else '<span class="muted">Data Docs not available</span>')
    return (f'<a href="index.html">All sites</a><a href="national.html">National comparison</a>'
            f'<a href="{DATA_QUALITY_FILE}">Data-quality findings</a>{docs}')


def publication_line(ctx: ReportContext, p: pd.Series | None = None, what: str = "Publication") -> str:
    """The latest publication (or `p`): its id, time and code version."""
    p = ctx.publication if p is None else p
    if p is None:
        return "No publication yet."
    return (f'{what} <b data-publication="{int(p["publication_id"])}">{int(p["publication_id"])}</b>, '
            f'published {_e(pd.Timestamp(p["published_at"]).strftime("%Y-%m-%d %H:%M"))} UTC, code version '
            f'{_e(p["code_version"])}.')


def site_publication(ctx: ReportContext, code: str) -> pd.Series | None:
    """The publication that last changed a site's figures (a publication holds only the site-periods
    whose rows changed), so the site's page names it and stays the same until its figures change."""
    ids = [frame.loc[frame["site_code"] == code, "publication_id"].max()
           for frame in (ctx.tables.indicator_values, ctx.tables.inequality_summary)]
    ids = [int(i) for i in ids if pd.notna(i)]
    pubs = ctx.tables.publications
    hit = pubs[pubs["publication_id"] == max(ids)] if ids else pubs.iloc[0:0]
    return hit.iloc[0] if len(hit) else None


# --- the site page -----------------------------------------------------------------------------

def site_page(ctx: ReportContext, code: str) -> str:
    iv = ctx.tables.indicator_values
    mine = iv[iv["site_code"] == code]
    summary = ctx.tables.inequality_summary[ctx.tables.inequality_summary["site_code"] == code]
    name = ctx.site_name(code)
    parts = [f'<p class="muted">{_site_line(ctx, code)}</p>', _withheld_banner(ctx, code)]
    if mine.empty:
        parts.append('<section class="card"><p>Nothing has been published for this site yet.</p></section>')
    else:
        latest = mine["period_end"].max()
        ids = ctx.indicator_ids(mine)
        parts.append(_site_summary(ctx, mine, summary, latest, ids))
        parts += [_indicator_section(ctx, code, i, mine, summary, latest) for i in ids]
    parts.append(f'<p><a href="{DATA_QUALITY_FILE}#{_quality_anchor(code)}" data-link="data-quality">'
                 "This site's data-quality findings</a> (from its latest checks).</p>")
    parts.append(METHOD_NOTE)
    heading = f'{_e(name)} <span class="muted" style="color:#fff">({_e(code)})</span>'
    return page(f"{name}: Core20PLUS5 evaluation report", heading, nav(ctx), "".join(parts))


def _site_line(ctx: ReportContext, code: str) -> str:
    figures = site_publication(ctx, code)
    if figures is None:
        return publication_line(ctx)
    return publication_line(ctx, figures, "Figures from publication") + " The latest publication that changed them."


def _withheld_banner(ctx: ReportContext, code: str) -> str:
    mine = [w for w in ctx.withheld if w.get("site_code") == code]
    if not mine:
        return ""
    items = "".join(f"<li>{_e(_withheld_period(w))}: {_e(w['reason'])}</li>" for w in mine)
    latest = int(ctx.publication["publication_id"])
    return (f'<div class="banner" data-withheld="{_e(code)}"><b>Withheld from the latest publication ({latest}).</b> '
            f"The figures below are this site's last good publication.<ul>{items}</ul></div>")


def _site_summary(ctx: ReportContext, mine: pd.DataFrame, summary: pd.DataFrame, latest: object,
                  ids: list[str]) -> str:
    rows = [_summary_row(ctx.catalogue.loc[i], _overall(mine, i, latest),
                         _row(summary[summary["indicator_id"] == i], "period_end", latest),
                         _core20_suppressed(mine, i, latest)) for i in ids]
    headers = ["Indicator", "Value", "95% CI", "Target", "All sites", "Core20 gap", "SII", "SPC"]
    return (f'<section class="card" id="summary"><h2>Latest period: 12 months to {_period(latest)}</h2>'
            f"{table(headers, rows, 'summary')}<p class=\"muted\">Core20 gap (Core20 minus the rest) and SII are in "
            "percentage points for percentages, otherwise in the indicator's unit. SPC icons: variation, then "
            "assurance (hover for the words).</p></section>")


def _core20_suppressed(frame: pd.DataFrame, ind: str, period: object) -> bool:
    cells = frame[(frame["indicator_id"] == ind) & (frame["breakdown"] == "core20") & (frame["period_end"] == period)
                  & frame["breakdown_value"].isin(["core20", "not_core20"])]
    return bool(cells["suppressed"].any())


def _summary_row(meta: pd.Series, cell: pd.Series | None, s: pd.Series | None, gap_suppressed: bool) -> str:
    ind, unit = meta["indicator_id"], meta["unit"]
    gap, sii = (_f(s["absolute_gap"]), s["sii"]) if s is not None else (None, None)
    gap_cell = (_td(SUPPRESSED, "num suppressed gap", ' data-value=""') if gap is None and gap_suppressed
                else _td(fmt_number(gap), "num gap", f' data-value="{_data(gap)}"'))
    return (f'<tr data-indicator="{_e(ind)}"><td><a href="#ind-{_e(ind)}">{_e(meta["indicator_name"])}</a></td>'
            + _value_cells(cell, unit, with_counts=False)
            + _td(target_badge(_f(cell["value"]) if cell is not None else None, meta))
            + _td(fmt_value(cell["comparator_value"], unit) if cell is not None else NO_DATA, "num")
            + gap_cell + _td(fmt_number(sii), "num sii")
            + _td(_spc_badges(s, meta, compact=True)) + "</tr>")


def _overall(frame: pd.DataFrame, ind: str, period: object) -> pd.Series | None:
    hit = frame[(frame["indicator_id"] == ind) & (frame["breakdown"] == "overall") & (frame["period_end"] == period)]
    return hit.iloc[0] if len(hit) else None


def _value_cells(cell: pd.Series | None, unit: str, with_counts: bool = True) -> str:
    """Numerator, denominator, value and CI cells; a suppressed value reads 'suppressed', never 0."""
    if cell is None:
        return _td(NO_DATA) * (4 if with_counts else 2)
    suppressed = bool(cell["suppressed"])
    counts = ""
    if with_counts:
        counts = "".join(_td(SUPPRESSED, "num suppressed") if suppressed and _f(cell[c]) is None
                         else _td(fmt_count(cell[c]), "num") for c in ("numerator", "denominator"))
    if suppressed:
        return counts + _td(SUPPRESSED, "num suppressed value") + _td(SUPPRESSED, "num suppressed")
    return (counts + _td(fmt_value(cell["value"], unit), "num value", f' data-value="{_data(cell["value"])}"')
            + _td(fmt_ci(cell["lower_ci"], cell["upper_ci"]), "num"))


def _spc_badges(s: pd.Series | None, meta: pd.Series, compact: bool = False) -> str:
    if s is None:
        return NO_DATA
    return (variation_badge(str(s["spc_variation"]), _direction(meta), compact)
            + assurance_badge(str(s["spc_assurance"]), compact))


def _indicator_section(ctx: ReportContext, code: str, ind: str, mine: pd.DataFrame, summary: pd.DataFrame,
                       latest: object) -> str:
    meta = ctx.catalogue.loc[ind]
    cells = mine[mine["indicator_id"] == ind]
    now = cells[cells["period_end"] == cells["period_end"].max()]
    ind_summary = summary[summary["indicator_id"] == ind].sort_values("period_end")
    s_now = _row(ind_summary, "period_end", now["period_end"].max()) if len(now) else None
    cid = f"{code}-{ind}".lower()
    view = spc_view(cells[cells["breakdown"] == "overall"], meta)
    groups = _breakdown_rows(now)
    quintiles, core20 = now[now["breakdown"] == "imd_quintile"], now[now["breakdown"] == "core20"]
    charts = [quintile_chart(f"{cid}-q", quintiles, core20, s_now, meta),
              gap_chart(f"{cid}-g", cells[cells["breakdown"] == "core20"], ind_summary, meta),
              spc_chart(f"{cid}-s", view, meta)]
    overall = _row(now, "breakdown", "overall")
    if len(groups):
        charts.append(breakdown_chart(f"{cid}-b", groups, _f(overall["value"]) if overall is not None else None, meta))
    definition = f'{meta.get("denominator_definition", "")} {meta.get("numerator_definition", "")}'
    return (f'<section class="indicator" id="ind-{_e(ind)}" data-indicator="{_e(ind)}">'
            f'<h2>{_e(meta["indicator_name"])}</h2><p class="muted">{_e(definition)}</p>'
            f"{_headline(overall, meta, latest)}<p>{_spc_badges(s_now, meta)}</p>"
            f'<div class="charts">{"".join(charts)}</div>{_breakdown_tables(groups, meta)}</section>')


def _headline(cell: pd.Series | None, meta: pd.Series, latest: object) -> str:
    unit = meta["unit"]
    if cell is None:
        return '<p class="headline">No value published for the latest period.</p>'
    period = _period(cell["period_end"])
    stale = "" if cell["period_end"] == latest else " (the latest period with this indicator)"
    if bool(cell["suppressed"]):
        value = f'<span class="value suppressed" data-value="">{SUPPRESSED}</span>'
    else:
        value = f'<span class="value" data-value="{_data(cell["value"])}">{fmt_value(cell["value"], unit)}</span>'
    ci = "" if bool(cell["suppressed"]) else f" (95% CI {fmt_ci(cell['lower_ci'], cell['upper_ci'])})"
    return (f'<p class="headline" data-period="{period}">{value}{ci}{target_badge(_f(cell["value"]), meta)}'
            f'<br><span class="muted">12 months to {period}{stale}; numerator {_or_suppressed(cell["numerator"])}, '
            f'denominator {_or_suppressed(cell["denominator"])}; all sites {fmt_value(cell["comparator_value"], unit)}.'
            "</span></p>")


def _breakdown_rows(now: pd.DataFrame) -> pd.DataFrame:
    """Ethnicity groups in the NHS order, then the site's PLUS groups."""
    eth = now[now["breakdown"] == "ethnicity"].copy()
    eth["_order"] = eth["breakdown_value"].map({g: i for i, g in enumerate(ETHNIC_GROUPS)}).fillna(99)
    plus = now[now["breakdown"] == "plus_group"].copy()
    plus["_order"] = 100
    return pd.concat([eth, plus]).sort_values(["_order", "breakdown_value"]).drop(columns="_order")


def _breakdown_tables(groups: pd.DataFrame, meta: pd.Series) -> str:
    out = []
    for breakdown, title in (("plus_group", "PLUS groups"), ("ethnicity", "Ethnicity")):
        rows = [_group_row(r, meta["unit"]) for _, r in groups[groups["breakdown"] == breakdown].iterrows()]
        if rows:
            headers = ["Group", "Numerator", "Denominator", "Value", "95% CI", "All sites"]
            out.append(f"<h3>{title}</h3>" + table(headers, rows, f"breakdown {breakdown}"))
    return "".join(out) or '<p class="muted">No ethnicity or PLUS group breakdown for this indicator.</p>'


def _group_row(r: pd.Series, unit: str) -> str:
    return (f'<tr data-breakdown="{r["breakdown"]}" data-group="{_e(r["breakdown_value"])}" '
            f'data-suppressed="{str(bool(r["suppressed"])).lower()}"><td>{_e(_label(r["breakdown_value"]))}</td>'
            + _value_cells(r, unit) + _td(fmt_value(r["comparator_value"], unit), "num") + "</tr>")


def data_quality_page(ctx: ReportContext, codes: list[str]) -> str:
    """Every site's findings from its latest checks. A page of its own, not part of the site pages: the
    checks run every night (freshness is judged as of the run's date), the figures change less often."""
    sections = [_data_quality_section(ctx, code) for code in codes]
    body = f'<p>{publication_line(ctx)}</p>{"".join(sections)}'
    return page("Core20PLUS5 data quality", "Data-quality findings by site", nav(ctx), body)


def _quality_anchor(code: str) -> str:
    return f"dq-{code}"


def _data_quality_section(ctx: ReportContext, code: str) -> str:
    """The site's findings in its latest publication, failures first (the full record is in data_quality)."""
    dq = ctx.tables.data_quality
    mine = dq[dq["site_code"] == code]
    head = (f'<section class="card" id="{_quality_anchor(code)}" data-site="{_e(code)}"><h2>'
            f'<a href="{site_file(code)}">{_e(ctx.site_name(code))}</a>')
    if mine.empty:
        return f"{head}</h2><p>No findings recorded yet.</p></section>"
    last = mine[mine["publication_id"] == mine["publication_id"].max()]
    passed = last["passed"].fillna(False).astype(bool)
    ordered = last.assign(ok=passed).sort_values("ok", kind="stable").head(50)
    rows = [f"<tr><td>{_e(r['period_end'])}</td><td>{_e(r['stage'])}</td><td>{_e(r['check_name'])}</td>"
            f"<td>{_e(r['severity'])}</td><td>{'passed' if r['ok'] else 'failed'}</td><td>{_e(r['message'])}</td></tr>"
            for _, r in ordered.iterrows()]
    more = f'<p class="muted">First 50 of {len(last)} findings.</p>' if len(last) > 50 else ""
    headers = ["Period", "Stage", "Check", "Severity", "Result", "Message"]
    return (f'{head} (publication {int(last["publication_id"].iloc[0])})</h2><p>{int((~passed).sum())} failed finding(s), '
            f"{int(passed.sum())} passed check(s).</p>{table(headers, rows)}{more}</section>")


METHOD_NOTE = """<section class="card" id="methods"><h2>How to read this report</h2><ul>
<li>Every figure comes from the published warehouse: counts of 1 to 7 are suppressed and shown as
<i>suppressed</i> (never as zero); other counts are rounded to the nearest 5. Values and 95% confidence
intervals were computed from the unrounded counts before publication.</li>
<li>IMD quintile chart: each quintile sits at the midpoint of its cumulative population rank
(0 = most deprived). The dashed line is the slope index of inequality (SII): the population-weighted
least-squares line, which passes through the weighted mean at rank 0.5 with slope SII. It is placed
from the published (rounded) denominators: the five quintiles when all are published, otherwise
Core20 and the rest, which cover the same people.</li>
<li>SPC: NHS England's Making Data Count XmR chart of the monthly overall value; icons show variation
(common cause, special cause improvement or concern) and assurance against the target.</li>
<li>Core20: people living in the most deprived 20% of neighbourhoods in England (IMD quintile 1).</li>
</ul></section>"""


# --- the national comparison -----------------------------------------------------------------

def national_page(ctx: ReportContext) -> str:
    ineq = ctx.tables.inequality_summary
    sections = [_national_section(ctx, ind) for ind in ctx.indicator_ids(ineq)]
    intro = (f'<p class="muted">{publication_line(ctx)} Each site at its latest published period. A gap is '
             "Core20 minus the rest; the SII is the fitted difference from most to least deprived.</p>")
    return page("National comparison: Core20PLUS5 evaluation", "National comparison of sites", nav(ctx),
                intro + "".join(sections) + METHOD_NOTE)


def national_rows(ctx: ReportContext, ind: str) -> list[dict]:
    """One row per site: its latest gap (with MOVER CI), SII (with CI) and trend of the gap."""
    ineq = ctx.tables.inequality_summary
    mine = ineq[ineq["indicator_id"] == ind].sort_values("period_end")
    return [_national_row_data(ctx, ind, code, hist) for code, hist in mine.groupby("site_code", sort=True)]


def _national_row_data(ctx: ReportContext, ind: str, code: str, hist: pd.DataFrame) -> dict:
    s, iv = hist.iloc[-1], ctx.tables.indicator_values
    core = iv[(iv["site_code"] == code) & (iv["indicator_id"] == ind) & (iv["breakdown"] == "core20")
              & (iv["period_end"] == s["period_end"])]
    cells = (_row(core, "breakdown_value", "core20"), _row(core, "breakdown_value", "not_core20"))
    gap, sii, sii_lo, sii_hi = (_f(s[c]) for c in ("absolute_gap", "sii", "sii_lower_ci", "sii_upper_ci"))
    suppressed = any(c is not None and bool(c["suppressed"]) for c in cells)
    return {"site_code": code, "site_name": ctx.site_name(code), "period_end": s["period_end"], "summary": s,
            "cells": cells, "gap": gap, "gap_ci": gap_ci(*cells) if gap is not None else None,
            "gap_missing": SUPPRESSED if suppressed else "no data", "sii": sii, "sii_missing": "not available",
            "sii_ci": (sii_lo, sii_hi) if None not in (sii, sii_lo, sii_hi) else None,
            "trend": gap_trend(hist["absolute_gap"], ctx.catalogue.loc[ind]),
            "first_period": hist["period_end"].iloc[0]}


def _national_section(ctx: ReportContext, ind: str) -> str:
    meta = ctx.catalogue.loc[ind]
    rows = national_rows(ctx, ind)
    ineq = ctx.tables.inequality_summary
    names = {r["site_code"]: r["site_name"] for r in rows}
    charts = [forest_chart(f"national-{ind.lower()}-f", rows, meta),
              gap_trend_chart(f"national-{ind.lower()}-t", ineq[ineq["indicator_id"] == ind], names, meta)]
    body = [_national_row(r, ind, meta) for r in rows]
    headers = ["Site", "Period", "Core20", "Rest", "Gap (95% CI)", "Gap since first period", "SII (95% CI)",
               "RII (95% CI)", "SPC"]
    return (f'<section class="indicator" id="ind-{_e(ind)}" data-indicator="{_e(ind)}">'
            f'<h2>{_e(meta["indicator_name"])}</h2>'
            f'<p class="muted">Unit: {_e(meta["unit"])}; better: {_e(meta.get("direction", ""))}.</p>'
            f'<div class="charts national">{"".join(charts)}</div>{table(headers, body, "national")}</section>')


def _national_row(r: dict, ind: str, meta: pd.Series) -> str:
    s, unit = r["summary"], meta["unit"]
    trend = f"{r['trend']} (since {_period(r['first_period'])})" if r["trend"] else "not enough periods"
    rii = f"{fmt_number(s['rii'], 2)} ({fmt_ci(s['rii_lower_ci'], s['rii_upper_ci'])})" if _f(s["rii"]) is not None \
        else NO_DATA
    return (f'<tr data-site="{_e(r["site_code"])}" data-indicator="{_e(ind)}">'
            f'<td><a href="{site_file(r["site_code"])}#ind-{_e(ind)}">{_e(r["site_name"])}</a></td>'
            f"<td>{_period(r['period_end'])}</td>" + "".join(_cell_value(c, unit) for c in r["cells"])
            + _estimate_cell(r, "gap") + _td(_e(trend), "trend", f' data-trend="{_e(r["trend"] or "")}"')
            + _estimate_cell(r, "sii") + _td(rii, "num") + _td(_spc_badges(s, meta, compact=True)) + "</tr>")


def _estimate_cell(r: dict, key: str) -> str:
    """'estimate (lower to upper)'; a gap withheld by disclosure control reads 'suppressed'."""
    value, ci = r[key], r[f"{key}_ci"]
    if value is None and r[f"{key}_missing"] == SUPPRESSED:
        return _td(SUPPRESSED, f"num suppressed {key}", ' data-value=""')
    text = f"{fmt_number(value)} ({fmt_ci(*ci)})" if ci else fmt_number(value)
    return _td(text, f"num {key}", f' data-value="{_data(value)}"')


def _cell_value(cell: pd.Series | None, unit: str) -> str:
    if cell is not None and bool(cell["suppressed"]):
        return _td(SUPPRESSED, "num suppressed")
    return _td(fmt_value(cell["value"], unit) if cell is not None else NO_DATA, "num")


# --- the index ---------------------------------------------------------------------------------

def site_file(code: str) -> str:
    return f"site_{code}.html"


def report_sites(ctx: ReportContext) -> list[str]:
    """Every site in the registry, and any with published rows (a site dropped from the registry still
    has its history in the warehouse)."""
    return sorted(set(ctx.tables.sites["site_code"]) | set(ctx.tables.indicator_values["site_code"]))


def index_page(ctx: ReportContext, codes: list[str]) -> str:
    rows = [_index_row(ctx, code) for code in codes]
    headers = ["Site", "Code", "Programme", "Latest period", "Periods", "Indicators", "Rows", "This publication"]
    body = (f'<p>{publication_line(ctx)}</p><p><a href="national.html">National comparison of every site</a> '
            f"(Core20 gap and slope index of inequality, side by side).</p>"
            f'<section class="card"><h2>Sites</h2>{table(headers, rows, "sites")}</section>{METHOD_NOTE}')
    return page("Core20PLUS5 evaluation reports", "Core20PLUS5 evaluation reports", nav(ctx), body)


def _index_row(ctx: ReportContext, code: str) -> str:
    iv, sites = ctx.tables.indicator_values, ctx.tables.sites.set_index("site_code")
    mine = iv[iv["site_code"] == code]
    status, text = _site_status([w for w in ctx.withheld if w.get("site_code") == code], mine.empty)
    programme = sites.loc[code, "programme"].replace("_", " ") if code in sites.index else "not in the registry"
    latest = _period(mine["period_end"].max()) if len(mine) else NO_DATA
    return (f'<tr data-site="{_e(code)}" data-rows="{len(mine)}">'
            f'<td><a href="{site_file(code)}">{_e(ctx.site_name(code))}</a></td><td>{_e(code)}</td>'
            f"<td>{_e(programme)}</td><td>{latest}</td>" + _td(str(mine["period_end"].nunique()), "num")
            + _td(str(mine["indicator_id"].nunique()), "num") + _td(f"{len(mine):,}", "num")
            + f'<td data-status="{status}">{_e(text)}</td></tr>')


def _site_status(withheld: list[dict], empty: bool) -> tuple[str, str]:
    if withheld:
        return "withheld", "withheld: " + "; ".join(f"{_withheld_period(w)} ({w['reason']})" for w in withheld)
    return ("unpublished", "nothing published yet") if empty else ("published", "published")


# ---------------------------------------------------------------------------------------------
# Building the reports
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReportIndex:
    out_dir: Path
    index_path: Path
    national_path: Path
    site_paths: dict[str, Path]
    rows_per_site: dict[str, int]
    withheld: list[dict]
    publication_id: int | None
    data_docs_href: str | None
    drawn: list[str]  # the site pages drawn this time; the others were already up to date


def build_reports(warehouse_url: str, out_dir: Path, data_docs_index: Path | None = None,
                  workers: int = 1) -> ReportIndex:
    """Read the published warehouse and write index.html, national.html, data_quality.html and
    site_<code>.html."""
    return write_reports(read_warehouse(warehouse_url), Path(out_dir), data_docs_index, workers=workers)


def write_reports(tables: WarehouseTables, out_dir: Path, data_docs_index: Path | None = None,
                  reuse_charts: bool = True, workers: int = 1) -> ReportIndex:
    """The pages of `tables` in out_dir. With reuse_charts, unchanged charts come from out_dir/.charts
    and a site page whose inputs did not change (page_digest) is not drawn again."""
    out_dir.mkdir(parents=True, exist_ok=True)
    href = Path(os.path.relpath(data_docs_index, out_dir)).as_posix() if data_docs_index else None
    ctx = ReportContext(tables, href)
    codes = report_sites(ctx)
    digests = {code: page_digest(ctx, code) for code in codes}
    drawn_before = _pages_drawn(out_dir) if reuse_charts else {}
    todo = [c for c in codes if drawn_before.get(c) != digests[c] or not (out_dir / site_file(c)).exists()]
    cache, started = out_dir / CHART_FOLDER, time.time() - 1  # 1 s: coarse file-system clocks
    if reuse_charts:
        cache.mkdir(exist_ok=True)
    token = CHART_CACHE.set(cache if reuse_charts else None)
    try:
        pages = render_pages(ctx, todo, workers)
    finally:
        CHART_CACHE.reset(token)
    if reuse_charts and len(todo) == len(codes):  # pages not drawn now still use their charts
        _prune_chart_cache(cache, started)
    site_paths = {code: out_dir / site_file(code) for code in codes}
    for code in todo:
        _write(site_paths[code], pages[code])
    _write(out_dir / PAGES_DRAWN, json.dumps({c: digests[c] for c in codes}, sort_keys=True))
    national = _write(out_dir / "national.html", pages[None])
    _write(out_dir / DATA_QUALITY_FILE, data_quality_page(ctx, codes))
    for stale in set(out_dir.glob("site_*.html")) - set(site_paths.values()):
        stale.unlink()  # a site no longer reported must not keep an old page
    index = _write(out_dir / "index.html", index_page(ctx, codes))  # last: it links to the rest
    counts = tables.indicator_values.groupby("site_code").size()
    return ReportIndex(out_dir, index, national, site_paths, {c: int(counts.get(c, 0)) for c in codes}, ctx.withheld,
                       int(ctx.publication["publication_id"]) if ctx.publication is not None else None, href, todo)


def page_digest(ctx: ReportContext, code: str) -> str:
    """Everything a site page shows: its rows, the publication that last changed them, its withheld
    notices, the catalogue, its name, the Data Docs link and this code. Equal digests, equal pages."""
    h = hashlib.sha256(f"{REPORT_CODE}|{ctx.data_docs_href}|{code}|{ctx.site_name(code)}".encode())
    for frame in (ctx.tables.indicator_values, ctx.tables.inequality_summary):
        h.update(pd.util.hash_pandas_object(frame[frame["site_code"] == code], index=False).values.tobytes())
    h.update(pd.util.hash_pandas_object(ctx.catalogue, index=False).values.tobytes())
    h.update(f"{_site_line(ctx, code)}|{_withheld_banner(ctx, code)}".encode())
    return h.hexdigest()


def _pages_drawn(out_dir: Path) -> dict[str, str]:
    try:
        return json.loads((out_dir / PAGES_DRAWN).read_text())
    except (OSError, ValueError):
        return {}


def render_pages(ctx: ReportContext, codes: list[str], workers: int = 1) -> dict[str | None, str]:
    """HTML of every site page and of the national page (key None). Site pages are independent and
    nearly all drawing, so they can be drawn over `workers` processes; each page comes out the same
    wherever it is drawn. Spawned, not forked (the caller may hold threads and database connections),
    so only a caller whose main module is import-safe passes workers > 1 (the report asset does)."""
    workers = min(workers, len(codes))
    pages: dict[str | None, str] = {None: national_page(ctx)}
    if workers < 2:
        return {**pages, **{code: site_page(ctx, code) for code in codes}}
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                             initargs=(ctx, CHART_CACHE.get())) as pool:
        return {**pages, **dict(zip(codes, pool.map(_site_page_in_worker, codes)))}


_WORKER_CONTEXT: list[ReportContext] = []  # the one ReportContext of a worker process


def _start_worker(ctx: ReportContext, chart_cache: Path | None) -> None:
    _WORKER_CONTEXT.append(ctx)
    CHART_CACHE.set(chart_cache)


def _site_page_in_worker(code: str) -> str:
    return site_page(_WORKER_CONTEXT[0], code)


def _write(path: Path, text: str) -> Path:
    """Write beside, then rename: a reader never opens a half-written page."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def report_dir(settings: Settings) -> Path:
    """Beside the DuckDB warehouse, where evaluators find it; PostgreSQL has no folder, so the work dir."""
    if settings.warehouse_is_postgres:
        return settings.work_dir / "reports"
    return Path(settings.warehouse_url).parent / "reports"


def rows_markdown(index: ReportIndex) -> str:
    lines = ["| site | indicator rows | page |", "|---|---|---|"]
    lines += [f"| {code} | {n} | {index.site_paths[code].name} |" for code, n in sorted(index.rows_per_site.items())]
    return "\n".join(lines)


def withheld_markdown(withheld: list[dict]) -> str:
    return "\n".join(f"- {w['site_code']} {_withheld_period(w)}: {w['reason']}" for w in withheld) or "none"


@dg.asset(
    group_name="publish",
    deps=["warehouse_publication"],
    retry_policy=RETRY_POLICY,
    description="HTML reports of the latest publication beside the warehouse (<warehouse folder>/reports): a "
                "self-contained page per site, a national comparison of sites and an index. See docs/reports.md.",
)
def evaluation_reports(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    settings = pipeline.settings()
    if not settings.warehouse_is_postgres and not Path(settings.warehouse_url).exists():
        context.log.warning(f"no warehouse at {settings.warehouse_url} yet: nothing published, no reports written")
        return dg.MaterializeResult(metadata={"reports": "not written: no warehouse yet"})
    docs = settings.work_dir / "data_docs" / "index.html"
    out_dir, state = report_dir(settings), _rendered_state(settings.warehouse_url, docs)
    if _up_to_date(out_dir, state):
        context.log.info(f"reports of publication {state['publication_id']} in {out_dir} are up to date: "
                         "no new publication since they were written")
        return dg.MaterializeResult(metadata={"index": dg.MetadataValue.path(str(out_dir / "index.html")),
                                              "publication_id": state["publication_id"] or "none",
                                              "reports": "up to date (no new publication)"})
    index = build_reports(settings.warehouse_url, out_dir, docs if docs.exists() else None,
                          workers=os.cpu_count() or 1)
    _write(out_dir / RENDERED, json.dumps(state, sort_keys=True))  # after the pages: a crash re-renders
    context.log.info(f"reports of publication {index.publication_id} written to {index.out_dir} "
                     f"({len(index.drawn)} of {len(index.site_paths)} site pages drawn, the others unchanged); "
                     f"withheld: {withheld_markdown(index.withheld)}")
    return dg.MaterializeResult(metadata={
        "index": dg.MetadataValue.path(str(index.index_path)),
        "national": dg.MetadataValue.path(str(index.national_path)),
        "publication_id": index.publication_id if index.publication_id is not None else "none",
        "rows_per_site": dg.MetadataValue.md(rows_markdown(index)),
        "withheld": dg.MetadataValue.md(withheld_markdown(index.withheld)),
        "data_docs": index.data_docs_href or "not built",
        "reports": "written",
        "site_pages_drawn": len(index.drawn),
    })


RENDERED = ".rendered.json"  # what the pages in a report folder were rendered from
REPORT_CODE = code_token("assets/reports.py", "assets/statistics.py")


def _rendered_state(url: str, data_docs_index: Path) -> dict:
    """What the pages depend on: the latest publication (every write of the warehouse is a new one),
    this code, and whether there are Data Docs to link to."""
    frame = read_queries(url, {"latest": "select max(publication_id) as id from evaluation.publications"})["latest"]
    latest = None if frame.empty or pd.isna(frame["id"].iloc[0]) else int(frame["id"].iloc[0])
    return {"publication_id": latest, "code": REPORT_CODE,
            "data_docs": data_docs_index.exists()}


def _up_to_date(out_dir: Path, state: dict) -> bool:
    marker = out_dir / RENDERED
    if state["publication_id"] is None or not marker.exists() or not (out_dir / "index.html").exists():
        return False
    try:
        return json.loads(marker.read_text()) == state
    except ValueError:
        return False


__all__ = ["ReportIndex", "WarehouseTables", "build_reports", "evaluation_reports", "read_warehouse", "report_dir",
           "write_reports"]
