"""The publish path (SPEC §8-§10): gate, disclosure control, identifier gate, atomic swap.

The one asset that writes the shared warehouse. It publishes the site-periods of the run's
partitions (a nightly run, tagged c20p5/publish=all, every site-period) that passed their checks
and whose rows readers would see change, as one publication, and only if something readers would
see changed: rows of those site-periods, the catalogue, or a site's freshness verdict. Other
site-periods keep their rows untouched. Only site-periods whose mart rows changed since they were
last published or confirmed are read and compared (assets/changes.py). A site is withheld when this
run quarantined its submission for a period (that period only) or when its marts failed an
error-severity Great Expectations check (the whole site); withheld site-periods keep their last good
publication, and a notice goes to C20P5_ALERT_WEBHOOK.
"""

import hashlib
import subprocess
from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd

from assets.changes import SitePeriod, code_token, combine, mart_digests, remember, rows_of, unseen
from assets.warehouse import (INDICATOR_VALUE_COLUMNS, INEQUALITY_COLUMNS, Publication, publish_duckdb,
                              read_queries)
from checks.disclosure import apply_disclosure_control
from orchestration.alerts import send_alert
from checks.asset_checks import freshness
from orchestration.partitions import REPORTING, SINGLE_RUN, Scope, as_of, registry_sites, scope_of_run
from orchestration.resources import PipelineResource, table_exists
from orchestration.retries import RETRY_POLICY, data_errors_fail_fast
from orchestration.settings import PROJECT_ROOT, Settings

PUBLISHED_MARTS = ("fct_indicator_values", "fct_inequality_summary", "dim_indicators", "dim_sites")
FRESHNESS_STAGE = "freshness"
PUBLISH_CONSUMER = "publish"
# The code that turns mart rows into published rows: a change to it compares every site-period again.
PUBLISH_TOKEN = code_token("assets/publish.py", "assets/warehouse.py", "checks/disclosure.py")
ROW_TABLES = {"indicator_values": [c for c in INDICATOR_VALUE_COLUMNS if c != "publication_id"],
              "inequality_summary": [c for c in INEQUALITY_COLUMNS if c != "publication_id"]}


@dg.asset(
    group_name="publish",
    deps=[dg.AssetKey(["marts", m]) for m in PUBLISHED_MARTS] + ["staged_extracts"],
    partitions_def=REPORTING, backfill_policy=SINGLE_RUN, retry_policy=RETRY_POLICY,
    description="The gated publication of this run's site-periods: disclosure-controlled aggregates of every "
                "site-period that passed its checks, written atomically to the shared warehouse "
                "(C20P5_WAREHOUSE_URL) when they differ from what readers see; other site-periods are untouched.",
)
def warehouse_publication(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    with data_errors_fail_fast("the publication"):
        return _publish(context, pipeline)


def _publish(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    settings = pipeline.settings()
    run_id = context.run.run_id
    scope = scope_of_run(context.run, context.instance)
    latest = latest_publications(settings, scope.published_sites)
    with pipeline.build_db() as con:
        digests = {k: d for k, d in mart_digests(con, scope.published_sites).items() if scope.publishes(*k)}
        seen = {k: _seen(settings, d, latest.get(k)) for k, d in digests.items()}
        candidates = unseen(con, PUBLISH_CONSUMER, seen)
        pub = build_publication(con, run_id, scope, as_of(context.run), only=candidates)
        outside = _loaded_outside(con, scope)
    current = published_state(settings, scope, candidates)
    changed = [k for k, digest in sorted(_publication_state(pub).items()) if current.get(k) != digest]
    changed_rows = {(s, p) for t, s, p in changed if t in ROW_TABLES}
    confirmed = set(pub.published) - changed_rows  # looked at again: readers already see these rows
    unchanged = sorted((set(digests) - candidates) | confirmed)
    pub = restricted(pub, changed_rows)
    publication_id = write_publication(settings, pub) if changed or pub.withheld else None
    now_seen = {k: seen[k] for k in confirmed}
    if publication_id is not None:
        now_seen |= {k: _seen(settings, digests[k], publication_id) for k in changed_rows}
    with pipeline.build_db() as con:  # the next run need not look at these again
        remember(con, PUBLISH_CONSUMER, now_seen)
    alert = _withheld_notice(settings, pub, publication_id, context) if pub.withheld else "nothing withheld"
    context.log.info(_summary(pub, publication_id, settings, scope, unchanged, outside, changed))
    return dg.MaterializeResult(metadata={
        "publication_id": publication_id if publication_id is not None else "unchanged",
        "warehouse": settings.warehouse_label,
        "partitions": scope.describe(),
        "site_periods_published": len(pub.published) if publication_id is not None else 0,
        "site_periods_compared": len(candidates),
        "changed": dg.MetadataValue.json([" ".join(k).replace(" * *", "") for k in changed]),
        "unchanged_site_periods": dg.MetadataValue.json([f"{s} {p}" for s, p in unchanged]),
        "outside_partitions_untouched": dg.MetadataValue.json([f"{s} {p}" for s, p in outside]),
        "withheld": dg.MetadataValue.json(pub.withheld),
        "withheld_notice": alert,
        "preview": dg.MetadataValue.md(_preview(pub)),
    })


def _seen(settings: Settings, digest: str, publication_id: int | None) -> str:
    """What the publish records of a site-period: its marts' rows, this code, the warehouse, and the
    publication whose rows readers see there (a warehouse changed by anyone else reads as unseen)."""
    return combine(digest, f"{PUBLISH_TOKEN}|{settings.warehouse_label}|{publication_id}")


def restricted(pub: Publication, keep: set[SitePeriod]) -> Publication:
    """`pub` with only the rows of the site-periods in `keep` (those whose rows readers would see change)."""
    def kept(frame: pd.DataFrame) -> pd.Series:
        return pd.Series([(s, str(p)[:10]) in keep for s, p in zip(frame["site_code"], frame["period_end"])],
                         index=frame.index, dtype=bool)
    values, summary = kept(pub.indicator_values), kept(pub.inequality_summary)
    if values.all() and summary.all() and set(pub.published) <= keep:
        return pub  # nothing dropped (a full refresh): its content hash stands
    out = replace(pub, indicator_values=pub.indicator_values.loc[values].reset_index(drop=True),
                  inequality_summary=pub.inequality_summary.loc[summary].reset_index(drop=True),
                  published=sorted(set(pub.published) & keep))
    out.content_hash = content_hash(out)
    return out


def write_publication(settings: Settings, pub: Publication) -> int | None:
    """The one switch between warehouse targets. Both run the same gate (checks/disclosure.py) and write
    the same tables from `pub`; retention comes from C20P5_RETENTION_PUBLICATIONS (assets/warehouse.py)."""
    from assets.warehouse import publish_postgres  # local so the change stays in this function; may be hoisted
    if settings.warehouse_is_postgres:
        return publish_postgres(settings.warehouse_url, pub)
    return publish_duckdb(Path(settings.warehouse_url), pub)


def build_publication(con: duckdb.DuckDBPyConnection, run_id: str, scope: Scope | None = None,
                      on: date | None = None, only: set[SitePeriod] | None = None) -> Publication:
    """The run's publication: its partitions' site-periods that passed (every site-period if scope is None;
    only those of `only` if given), with the freshness of its sites as of `on` (today if None)."""
    if only is None:
        values = _in_scope(con.execute("select * from marts.fct_indicator_values").df(), scope)
        summary = _in_scope(con.execute("select * from marts.fct_inequality_summary").df(), scope)
    else:
        values, summary = (rows_of(con, m, only) for m in ("fct_indicator_values", "fct_inequality_summary"))
    withheld = _withheld(con, run_id, scope)
    blocked_sites = {w["site_code"] for w in withheld if w["period_end"] == "*"}
    blocked = {(w["site_code"], w["period_end"]) for w in withheld}
    values = apply_disclosure_control(values.loc[_passing(values, blocked_sites, blocked)])
    summary = _control_summary(summary.loc[_passing(summary, blocked_sites, blocked)], values)
    pub = Publication(
        indicator_values=values.reset_index(drop=True),
        inequality_summary=summary.reset_index(drop=True),
        indicators=con.execute("select * from marts.dim_indicators order by indicator_id").df(),
        sites=con.execute("select * from marts.dim_sites order by site_code").df(),
        data_quality=_data_quality(con, run_id, scope, on or date.today()),
        published=sorted({(s, str(p)[:10]) for s, p in zip(values["site_code"], values["period_end"])}),
        withheld=withheld,
        run_id=run_id,
        code_version=code_version(),
        input_checksums=_input_checksums(con, scope),
    )
    pub.content_hash = content_hash(pub)
    return pub


def _in_scope(frame: pd.DataFrame, scope: Scope | None) -> pd.DataFrame:
    if scope is None or scope.everything:
        return frame
    keep = [scope.publishes(s, str(p)[:10]) for s, p in zip(frame["site_code"], frame["period_end"])]
    return frame.loc[pd.Series(keep, index=frame.index, dtype=bool)]


def _passing(frame: pd.DataFrame, blocked_sites: set[str], blocked: set[tuple[str, str]]) -> pd.Series:
    keep = [(s not in blocked_sites) and ((s, str(p)[:10]) not in blocked)
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


def _withheld(con: duckdb.DuckDBPyConnection, run_id: str, scope: Scope | None = None) -> list[dict]:
    """Site-periods quarantined by this run, and sites of the run whose marts failed an error-severity check."""
    rows = con.execute("""select site_code, period_end, reason from audit.submissions
                          where run_id = ? and status = 'rejected' order by 1, 2""", [run_id]).fetchall()
    out = [{"site_code": s, "period_end": p, "reason": f"submission quarantined: {r}"} for s, p, r in rows]
    if table_exists(con, "audit", "mart_checks"):
        failed = con.execute("""select site_code, string_agg(message, '; ') from audit.mart_checks
                                where run_id = ? and not passed group by 1 order by 1""", [run_id]).fetchall()
        out += [{"site_code": s, "period_end": "*", "reason": f"Great Expectations checks failed: {m}"}
                for s, m in failed if scope is None or s in scope.published_sites]
    return out


def _data_quality(con: duckdb.DuckDBPyConnection, run_id: str, scope: Scope | None, on: date) -> pd.DataFrame:
    issues = con.execute("""select run_id, site_code, period_end, stage, "check" as check_name, severity,
                                   false as passed, file, "row", "column", message
                            from audit.issues where run_id = ?""", [run_id]).df()
    frames = [issues]
    if table_exists(con, "audit", "mart_checks"):
        frames.append(con.execute("""select run_id, site_code, '*' as period_end, 'great_expectations' as stage,
                                            check_name, severity, passed, null as file, null as "row",
                                            null as "column", message
                                     from audit.mart_checks where run_id = ?""", [run_id]).df())
    frames.append(_freshness_rows(con, run_id, scope.published_sites if scope else registry_sites(), on))
    frames = [f for f in frames if not f.empty]
    frame = pd.concat(frames, ignore_index=True) if frames else issues
    if scope is not None and not frame.empty:  # a partial publication records its sites' findings (and orphans')
        frame = frame[frame["site_code"].isin(scope.published_sites) | ~frame["site_code"].isin(registry_sites())]
    return frame.reset_index(drop=True).astype({"row": "Int64"}) if "row" in frame else frame


def _freshness_rows(con: duckdb.DuckDBPyConnection, run_id: str, sites: list[str], on: date) -> pd.DataFrame:
    """Each published site's freshness verdict (the rule of the freshness_<site> checks), as data quality."""
    verdicts = [freshness(con, site, on) for site in sites]
    return pd.DataFrame([{"run_id": run_id, "site_code": v.site_code, "period_end": v.last_period_end or "*",
                          "stage": FRESHNESS_STAGE, "check_name": "submission_freshness", "severity": "warning",
                          "passed": not v.overdue, "file": None, "row": None, "column": None, "message": v.message}
                         for v in verdicts])


def _input_checksums(con: duckdb.DuckDBPyConnection, scope: Scope | None = None) -> dict[str, str]:
    rows = con.execute("""select site_code, period_end, manifest_sha from audit.submissions
                          where status = 'loaded' order by 1, 2""").fetchall()
    ref = con.execute("select max(fingerprint) from audit.reference").fetchone()[0]
    return {"reference": ref or "", **{f"{s}:{p}": sha for s, p, sha in rows
                                       if scope is None or scope.publishes(s, p)}}


def _loaded_outside(con: duckdb.DuckDBPyConnection, scope: Scope) -> list[tuple[str, str]]:
    """Loaded site-periods this run does not publish: their published rows stay as they are."""
    rows = con.execute("select site_code, period_end from audit.submissions where status = 'loaded' order by 1, 2")
    return [(s, p) for s, p in rows.fetchall() if not scope.publishes(s, p)]


# ---------------------------------------------------------------------------------------------
# What readers see now, to publish only a change
# ---------------------------------------------------------------------------------------------

Key = tuple[str, str, str]  # (table, site_code, period_end); ("indicators", "*", "*") for whole tables


def published_state(settings: Settings, scope: Scope, keys: set[SitePeriod] | None = None) -> dict[Key, str]:
    """Digests of the latest published rows of the run's sites (only of `keys` if given), the catalogue
    and the freshness verdicts."""
    codes = _codes(scope.published_sites)
    queries = {t: _latest_sql(t, cols, codes, keys) for t, cols in ROW_TABLES.items()}
    queries |= {"indicators": "select * from evaluation.indicators", "sites": "select * from evaluation.sites",
                FRESHNESS_STAGE: f"""select d.site_code, d.period_end, d.passed from evaluation.data_quality d
                    join (select site_code, max(publication_id) as publication_id from evaluation.data_quality
                          where stage = '{FRESHNESS_STAGE}' and site_code in ({codes}) group by site_code) latest
                      on d.site_code = latest.site_code and d.publication_id = latest.publication_id
                    where d.stage = '{FRESHNESS_STAGE}'"""}
    out: dict[Key, str] = {}
    for table, frame in read_queries(settings.warehouse_url, queries).items():
        out |= _digests(table, frame)
    return out


def latest_publications(settings: Settings, sites: list[str]) -> dict[SitePeriod, int]:
    """The publication whose rows readers see, per published site-period of `sites`."""
    sql = f"""select site_code, cast(period_end as varchar) as period_end, max(publication_id) as publication_id
              from evaluation.indicator_values_history where site_code in ({_codes(sites)}) group by 1, 2"""
    frame = read_queries(settings.warehouse_url, {"latest": sql})["latest"]
    if frame.empty:
        return {}
    return {(s, str(p)[:10]): int(i) for s, p, i in zip(frame["site_code"], frame["period_end"], frame["publication_id"])}


def _codes(sites: list[str]) -> str:
    return ", ".join(f"'{s}'" for s in sites if s.replace("_", "").isalnum()) or "''"


def _latest_sql(table: str, columns: list[str], codes: str, keys: set[SitePeriod] | None) -> str:
    cols = ", ".join(f'h."{c}"' for c in columns)
    only = ""
    if keys is not None:  # site codes are checked above; periods are dates from the build database
        wanted = ", ".join(f"'{s}|{p}'" for s, p in sorted(keys) if s.replace("_", "").isalnum()) or "''"
        only = f" and site_code || '|' || cast(period_end as varchar) in ({wanted})"
    return f"""select {cols} from evaluation.{table}_history h
        join (select site_code, period_end, max(publication_id) as publication_id
              from evaluation.{table}_history where site_code in ({codes}){only}
              group by site_code, period_end) latest
          on h.site_code = latest.site_code and h.period_end = latest.period_end
         and h.publication_id = latest.publication_id"""


def _publication_state(pub: Publication) -> dict[Key, str]:
    dq = pub.data_quality
    fresh = dq[dq["stage"] == FRESHNESS_STAGE] if "stage" in dq else dq.iloc[0:0]
    frames = {"indicator_values": pub.indicator_values, "inequality_summary": pub.inequality_summary,
              "indicators": pub.indicators, "sites": pub.sites,
              FRESHNESS_STAGE: fresh[["site_code", "period_end", "passed"]] if not fresh.empty else fresh}
    out: dict[Key, str] = {}
    for table, frame in frames.items():
        out |= _digests(table, frame)
    return out


def _digests(table: str, frame: pd.DataFrame) -> dict[Key, str]:
    """Order- and type-independent digests: the same rows read back from either warehouse match."""
    if frame is None or frame.empty:
        return {}
    if table not in ROW_TABLES and table != FRESHNESS_STAGE:
        return {(table, "*", "*"): _digest(frame)}
    sites = frame["site_code"].astype(str)
    periods = [_canon(p)[:10] if table in ROW_TABLES else "*" for p in frame["period_end"]]
    keys = pd.Series([f"{s}\x1f{p}" for s, p in zip(sites, periods)], index=frame.index)
    out = {}
    for key, group in frame.groupby(keys, sort=True):
        site, period = key.split("\x1f")
        out[(table, site, period)] = _digest(group)
    return out


def _digest(frame: pd.DataFrame) -> str:
    columns = sorted(frame.columns)
    lines = sorted("\x1f".join(_canon(v) for v in row) for row in frame[columns].itertuples(index=False))
    return hashlib.sha256(("\x1e".join(columns) + "\n" + "\n".join(lines)).encode()).hexdigest()


def _canon(value: object) -> str:
    if value is None or value is pd.NaT or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, (int, float, np.integer, np.floating, Decimal)):
        return f"{float(value):.12g}"
    if isinstance(value, datetime):  # pd.Timestamp too; a date read back as midnight is that date
        midnight = (value.hour, value.minute, value.second, value.microsecond) == (0, 0, 0, 0)
        return value.date().isoformat() if midnight else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def content_hash(pub: Publication) -> str:
    """Checksum of what readers see (rows, catalogue, sites, freshness verdicts), independent of ids and times."""
    h = hashlib.sha256()
    for frame in (pub.indicator_values, pub.inequality_summary, pub.indicators, pub.sites):
        ordered = frame.sort_values(list(frame.columns)).reset_index(drop=True) if not frame.empty else frame
        h.update(ordered.to_csv(index=False, float_format="%.12g").encode())
    dq = pub.data_quality
    if "stage" in dq and (dq["stage"] == FRESHNESS_STAGE).any():
        fresh = dq.loc[dq["stage"] == FRESHNESS_STAGE, ["site_code", "period_end", "passed"]]
        h.update(fresh.sort_values(["site_code"]).to_csv(index=False).encode())
    return h.hexdigest()


def code_version() -> str:
    try:
        return subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import version
        return version("core20plus5-pipeline")


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------

def _withheld_notice(settings: Settings, pub: Publication, publication_id: int | None,
                     context: dg.AssetExecutionContext) -> str:
    lines = [f"{w['site_code']} {w['period_end']}: {w['reason']}" for w in pub.withheld]
    return send_alert(settings, "sites_withheld", f"{len(lines)} site-period(s) withheld from publication: "
                      + "; ".join(lines), {"run_id": pub.run_id, "publication_id": publication_id,
                                           "warehouse": settings.warehouse_label, "withheld": pub.withheld},
                      log=context.log)


def _summary(pub: Publication, publication_id: int | None, settings: Settings, scope: Scope,
             unchanged: list[tuple[str, str]], outside: list[tuple[str, str]], changed: list[Key]) -> str:
    head = (f"publication {publication_id}" if publication_id is not None
            else "nothing readers see has changed; warehouse left as it was")
    withheld = "; ".join(f"{w['site_code']} {w['period_end']}: {w['reason']}" for w in pub.withheld) or "none"
    return (f"partitions {scope.describe()}: {head} -> {settings.warehouse_label}: "
            f"{len(pub.published) if publication_id is not None else 0} site-period(s) published "
            f"({len(changed)} change(s)), {len(pub.indicator_values)} indicator rows; withheld: {withheld}; "
            f"skipped: {len(unchanged)} unchanged site-period(s) of this run, {len(outside)} loaded site-period(s) "
            f"outside its partitions left untouched")


def _preview(pub: Publication) -> str:
    counts = pub.indicator_values.groupby("site_code").size().to_dict()
    lines = ["| site | indicator rows |", "|---|---|"] + [f"| {s} | {n} |" for s, n in sorted(counts.items())]
    if pub.withheld:
        lines += ["", "**Withheld**", ""] + [f"- {w['site_code']} {w['period_end']}: {w['reason']}" for w in pub.withheld]
    return "\n".join(lines)


__all__ = ["warehouse_publication", "build_publication", "write_publication", "content_hash", "published_state"]
