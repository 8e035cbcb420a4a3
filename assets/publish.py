"""The publish path (SPEC §8-§10): gate, disclosure control, identifier gate, atomic swap.

The one asset that writes the shared warehouse. A site is withheld when this run quarantined its
submission for a period (that period only) or when its marts failed an error-severity Great
Expectations check (the whole site); withheld site-periods keep their last good publication.
"""

import hashlib
import json
import subprocess
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd

from assets.warehouse import Publication, publish_duckdb
from checks.disclosure import apply_disclosure_control
from orchestration.resources import PipelineResource
from orchestration.settings import PROJECT_ROOT, Settings

MARTS = ("fct_indicator_values", "fct_inequality_summary", "dim_indicators", "dim_sites")


@dg.asset(
    group_name="publish",
    deps=[dg.AssetKey(["marts", m]) for m in MARTS] + ["staged_extracts"],
    description="The gated publication: disclosure-controlled aggregates of every site-period that "
                "passed its checks, written atomically to the shared warehouse (C20P5_WAREHOUSE_URL).",
)
def warehouse_publication(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    settings = pipeline.settings()
    run_id = context.run.run_id
    with pipeline.build_db() as con:
        pub = build_publication(con, run_id)
    publication_id = write_publication(settings, pub)
    summary = _summary(pub, publication_id, settings)
    context.log.info(summary)
    return dg.MaterializeResult(metadata={
        "publication_id": publication_id if publication_id is not None else "unchanged",
        "warehouse": settings.warehouse_url,
        "site_periods_published": len(pub.published),
        "withheld": dg.MetadataValue.json(pub.withheld),
        "preview": dg.MetadataValue.md(_preview(pub)),
    })


def write_publication(settings: Settings, pub: Publication) -> int | None:
    """The one switch between warehouse targets. Both run the same gate (checks/disclosure.py) and write
    the same tables from `pub`; retention comes from C20P5_RETENTION_PUBLICATIONS (assets/warehouse.py)."""
    from assets.warehouse import publish_postgres  # local so the change stays in this function; may be hoisted
    if settings.warehouse_is_postgres:
        return publish_postgres(settings.warehouse_url, pub)
    return publish_duckdb(Path(settings.warehouse_url), pub)


def build_publication(con: duckdb.DuckDBPyConnection, run_id: str) -> Publication:
    values = con.execute("select * from marts.fct_indicator_values").df()
    summary = con.execute("select * from marts.fct_inequality_summary").df()
    withheld = _withheld(con, run_id)
    blocked_sites = {w["site_code"] for w in withheld if w["period_end"] == "*"}
    blocked = {(w["site_code"], w["period_end"]) for w in withheld}
    values = apply_disclosure_control(values.loc[_passing(values, blocked_sites, blocked)])
    summary = _control_summary(summary.loc[_passing(summary, blocked_sites, blocked)], values)
    pub = Publication(
        indicator_values=values.reset_index(drop=True),
        inequality_summary=summary.reset_index(drop=True),
        indicators=con.execute("select * from marts.dim_indicators order by indicator_id").df(),
        sites=con.execute("select * from marts.dim_sites order by site_code").df(),
        data_quality=_data_quality(con, run_id),
        published=sorted({(s, str(p)) for s, p in zip(values["site_code"], values["period_end"])}),
        withheld=withheld,
        run_id=run_id,
        code_version=code_version(),
        input_checksums=_input_checksums(con),
    )
    pub.content_hash = content_hash(pub)
    return pub


def _passing(frame: pd.DataFrame, blocked_sites: set[str], blocked: set[tuple[str, str]]) -> pd.Series:
    keep = [(s not in blocked_sites) and ((s, str(p)) not in blocked)
            for s, p in zip(frame["site_code"], frame["period_end"])]
    return pd.Series(keep, index=frame.index, dtype=bool)


def _control_summary(summary: pd.DataFrame, values: pd.DataFrame) -> pd.DataFrame:
    """Core20 values in the summary are nulled wherever their cell was suppressed, and the gaps with them."""
    cells = values[values["breakdown"] == "core20"].set_index(["site_code", "period_end", "indicator_id", "breakdown_value"])
    out = summary.copy()
    for column, cell in (("core20_value", "core20"), ("not_core20_value", "not_core20")):
        keys = list(zip(out["site_code"], out["period_end"], out["indicator_id"], [cell] * len(out)))
        suppressed = [bool(cells["suppressed"].get(k, True)) for k in keys]
        out.loc[suppressed, [column, "absolute_gap", "relative_gap"]] = None
    return out


def _withheld(con: duckdb.DuckDBPyConnection, run_id: str) -> list[dict]:
    """Site-periods quarantined by this run, and sites whose marts failed an error-severity check."""
    rows = con.execute("""select site_code, period_end, reason from audit.submissions
                          where run_id = ? and status = 'rejected' order by 1, 2""", [run_id]).fetchall()
    out = [{"site_code": s, "period_end": p, "reason": f"submission quarantined: {r}"} for s, p, r in rows]
    if _table_exists(con, "audit", "mart_checks"):
        failed = con.execute("""select site_code, string_agg(message, '; ') from audit.mart_checks
                                where run_id = ? and not passed group by 1 order by 1""", [run_id]).fetchall()
        out += [{"site_code": s, "period_end": "*", "reason": f"Great Expectations checks failed: {m}"} for s, m in failed]
    return out


def _data_quality(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    issues = con.execute("""select run_id, site_code, period_end, stage, "check" as check_name, severity,
                                   false as passed, file, "row", "column", message
                            from audit.issues where run_id = ?""", [run_id]).df()
    frames = [issues]
    if _table_exists(con, "audit", "mart_checks"):
        frames.append(con.execute("""select run_id, site_code, '*' as period_end, 'great_expectations' as stage,
                                            check_name, severity, passed, null as file, null as "row",
                                            null as "column", message
                                     from audit.mart_checks where run_id = ?""", [run_id]).df())
    frame = pd.concat([f for f in frames if not f.empty], ignore_index=True) if any(not f.empty for f in frames) else issues
    return frame.astype({"row": "Int64"}) if "row" in frame else frame


def _input_checksums(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    rows = con.execute("""select site_code || ':' || period_end, manifest_sha from audit.submissions
                          where status = 'loaded' order by 1""").fetchall()
    ref = con.execute("select max(fingerprint) from audit.reference").fetchone()[0]
    return {"reference": ref or "", **{k: v for k, v in rows}}


def _table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return con.execute("select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
                       [schema, table]).fetchone()[0] > 0


def content_hash(pub: Publication) -> str:
    """Checksum of what readers see (rows, catalogue, sites), independent of ids and times."""
    h = hashlib.sha256()
    for frame in (pub.indicator_values, pub.inequality_summary, pub.indicators, pub.sites):
        ordered = frame.sort_values(list(frame.columns)).reset_index(drop=True) if not frame.empty else frame
        h.update(ordered.to_csv(index=False, float_format="%.12g").encode())
    return h.hexdigest()


def code_version() -> str:
    try:
        return subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import version
        return version("core20plus5-pipeline")


def _summary(pub: Publication, publication_id: int | None, settings: Settings) -> str:
    head = (f"publication {publication_id}" if publication_id is not None
            else "no change since the last publication; warehouse left as it was")
    withheld = "; ".join(f"{w['site_code']} {w['period_end']}: {w['reason']}" for w in pub.withheld) or "none"
    return (f"{head} -> {settings.warehouse_url}: {len(pub.published)} site-period(s) published, "
            f"{len(pub.indicator_values)} indicator rows; withheld: {withheld}")


def _preview(pub: Publication) -> str:
    counts = pub.indicator_values.groupby("site_code").size().to_dict()
    lines = ["| site | indicator rows |", "|---|---|"] + [f"| {s} | {n} |" for s, n in sorted(counts.items())]
    if pub.withheld:
        lines += ["", "**Withheld**", ""] + [f"- {w['site_code']} {w['period_end']}: {w['reason']}" for w in pub.withheld]
    return "\n".join(lines)


__all__ = ["warehouse_publication", "build_publication", "write_publication", "content_hash"]
