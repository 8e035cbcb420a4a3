"""Synthetic landing zone (`c20p5 generate`): deterministic by seed, real geography, planted truth.

People live in real LSOAs near their real practice; every clinical event uses a real code from
the project's codelists (dbt seeds). Known probabilities by IMD quintile are planted
(`PLANTED`), and the full person-level timeline is written beside the landing zone
(`<landing>/../generator_truth/`) so tests can compute the expected figures independently.
"""
from __future__ import annotations

import calendar
import csv
import hashlib
import json
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from orchestration.settings import DBT_PROJECT_DIR, SHIPPED_REFERENCE_DIR, Settings, Site

SPEC_VERSION = "1.0"
FILE_KINDS = ("patients", "events", "cancer_registrations", "maternity_bookings",
              "hospital_admissions", "mh_contacts")

# SPEC §5: concepts sites record for hypertension and blood pressure.
HYPERTENSION, HYPERTENSION_RESOLVED = "38341003", "162659009"
SYSTOLIC = ("271649006", "72313002")
DIASTOLIC = ("271650006", "1091811000000102")
ENCOUNTERS = ("185317003", "308335008")  # telephone encounter; patient encounter procedure

# Planted probabilities by IMD quintile (index 0 = quintile 1, most deprived).
PLANTED = {
    "hypertension": (0.24, 0.21, 0.18, 0.16, 0.14),  # adults 40+, halved under 40
    "bp_controlled": (0.50, 0.57, 0.64, 0.70, 0.76),  # each reading of a person on the register
}

ETHNIC_CODES = list("ABCDEFGHJKLMNPRS") + ["Z", "99"]
ETHNIC_WEIGHTS = [70, 1.5, 3, .5, .5, .5, .5, 3, 3, 1.5, 1, .5, 2, 1, .5, .5, 8, 2.5]


@dataclass(frozen=True)
class GenerateResult:
    landing_dir: Path
    truth_dir: Path
    periods: tuple[date, ...]
    people: dict[str, int]


def month_end(year: int, month: int) -> date:
    return date(year, month, calendar.monthrange(year, month)[1])


def period_ends(last: date, months: int) -> tuple[date, ...]:
    """`months` consecutive month ends finishing at `last`."""
    out, y, m = [], last.year, last.month
    for _ in range(months):
        out.append(month_end(y, m))
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)
    return tuple(reversed(out))


def add_months(d: date, months: int) -> date:
    y, m = divmod(d.month - 1 + months, 12)
    return month_end(d.year + y, m + 1) if d == month_end(d.year, d.month) else date(d.year + y, m + 1, d.day)


def generate_landing(settings: Settings, people_per_site: int = 5000, months: int = 3,
                     last_period: date = date(2026, 10, 31), seed: int = 42,
                     sites: tuple[Site, ...] | None = None) -> GenerateResult:
    """Write one complete monthly submission per site and period under the landing zone."""
    periods = period_ends(last_period, months)
    truth_dir = settings.landing_dir.parent / "generator_truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    with _reference_connection(settings) as con:
        for i, site in enumerate(sites or settings.sites):
            rng = np.random.default_rng([seed, i])
            persons = _persons(con, site, people_per_site, periods, rng)
            events = _events(persons, periods, rng)
            persons.write_parquet(truth_dir / f"{site.site_code}_persons.parquet")
            events.write_parquet(truth_dir / f"{site.site_code}_events.parquet")
            for p in periods:
                write_submission(settings.landing_dir, site.site_code, p, _snapshot(persons, events, p))
            counts[site.site_code] = persons.height
    return GenerateResult(settings.landing_dir, truth_dir, periods, counts)


def _reference_connection(settings: Settings) -> duckdb.DuckDBPyConnection:
    from assets.reference import load_reference
    con = duckdb.connect()
    load_reference(con, settings)
    return con


def _practice_lsoa_pools(con: duckdb.DuckDBPyConnection, site: Site) -> pl.DataFrame:
    """Candidate home LSOAs per practice: the real 2020 registrations by LSOA where the practice is
    in that file (Pennine Lancashire), otherwise LSOAs of the practice's own sub-ICB location."""
    regs = SHIPPED_REFERENCE_DIR / "bwd_pennine_lancs_gp_reg_pat_prac_lsoa_apr2020.csv"
    return con.execute(f"""
        with sp as (select p.practice_code, p.sub_icb_code from ref.site_practices s
                    join ref.practices p using (practice_code) where s.site_code = ?),
        real_regs as (
            select r.PRACTICE_CODE as practice_code, m.lsoa21_code, sum(r."Number.of.Patients") as weight
            from read_csv('{regs}', header=true) r join ref.lsoa_to_lsoa21 m on m.lsoa_code = r.LSOA_CODE
            where r.PRACTICE_CODE in (select practice_code from sp) group by 1, 2),
        nearby as (
            select sp.practice_code, g.lsoa21_code, 1.0 as weight from sp
            join ref.lsoa21_geography g on g.sub_icb_code = sp.sub_icb_code
            where sp.practice_code not in (select practice_code from real_regs)
            qualify row_number() over (partition by sp.practice_code order by hash(sp.practice_code || g.lsoa21_code)) <= 60)
        select practice_code, lsoa21_code, weight, d.imd_quintile
        from (select * from real_regs union all select * from nearby)
        join ref.lsoa_deprivation d using (lsoa21_code)
        order by practice_code, lsoa21_code""", [site.site_code]).pl()


def _old_codes(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """LSOA 2021 -> a different 2011 code that maps back to it (to plant 2011 codes)."""
    rows = con.execute("""select m.lsoa21_code, min(m.lsoa_code) from ref.lsoa_to_lsoa21 m
        where m.lsoa_code <> m.lsoa21_code group by 1""").fetchall()
    return dict(rows)


def _persons(con: duckdb.DuckDBPyConnection, site: Site, n: int, periods: tuple[date, ...],
             rng: np.random.Generator) -> pl.DataFrame:
    pools = _practice_lsoa_pools(con, site)
    practices = pools["practice_code"].unique(maintain_order=True).to_list()
    practice = rng.choice(practices, size=n)
    lsoa, quintile = _pick_lsoas(pools, practice, rng)
    old = _old_codes(con)
    reported = np.array([old.get(l, l) if rng.random() < 0.5 else l for l in lsoa], dtype=object)
    use_old = rng.random(n) < 0.04
    lsoa_reported = np.where(use_old, reported, lsoa)
    blank = rng.random(n) < 0.02
    lsoa_reported = np.where(blank, "", lsoa_reported)
    last = periods[-1]
    age_days = _ages_in_days(n, rng)
    birth = [last - timedelta(days=int(d)) for d in age_days]
    first_window = add_months(periods[0], -24)
    # Registration starts between birth and the last period; leaving and dying happen after both.
    reg_start = [b + timedelta(days=int(rng.integers(0, max(1, (last - b).days)))) for b in birth]
    left, died = rng.random(n) < 0.03, rng.random(n) < 0.015
    reg_end = [_between(max(r, first_window), last, rng) if l else None for r, l in zip(reg_start, left)]
    death = [_between(max(b, first_window), last, rng) if d else None for b, d in zip(birth, died)]
    token = hashlib.sha256(f"{site.site_code}".encode()).hexdigest()[:6]
    return pl.DataFrame({
        "person_id": [f"P{token}{i:08d}" for i in range(n)],
        "practice_code": practice.astype(str),
        "lsoa21_code": [None if b else l for b, l in zip(blank, lsoa)],
        "lsoa_code": lsoa_reported.astype(str),
        "imd_quintile": [None if b else int(v) for b, v in zip(blank, quintile)],
        "sex": rng.choice(["M", "F", "I", "U"], size=n, p=[0.49, 0.49, 0.005, 0.015]),
        "birth_date": birth,
        "birth_month": [b.strftime("%Y-%m") for b in birth],
        "ethnic_category": rng.choice(ETHNIC_CODES, size=n, p=np.array(ETHNIC_WEIGHTS) / sum(ETHNIC_WEIGHTS)),
        "registration_start": reg_start,
        "registration_end": reg_end,
        "date_of_death": death,
    }, schema_overrides={"imd_quintile": pl.Int64, "lsoa21_code": pl.Utf8, "registration_end": pl.Date,
                         "date_of_death": pl.Date})


def _between(start: date, end: date, rng: np.random.Generator) -> date:
    """A day strictly after `start` and no later than `end`."""
    return start + timedelta(days=int(rng.integers(1, max(2, (end - start).days + 1))))


def _pick_lsoas(pools: pl.DataFrame, practice: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    lsoa = np.empty(len(practice), dtype=object)
    quintile = np.zeros(len(practice), dtype=np.int64)
    for code, group in pools.group_by("practice_code", maintain_order=True):
        idx = np.flatnonzero(practice == code[0])
        w = group["weight"].to_numpy().astype(float)
        pick = rng.choice(group.height, size=len(idx), p=w / w.sum())
        lsoa[idx] = group["lsoa21_code"].to_numpy()[pick]
        quintile[idx] = group["imd_quintile"].to_numpy()[pick]
    return lsoa, quintile


def _ages_in_days(n: int, rng: np.random.Generator) -> np.ndarray:
    """A rough English age pyramid, 0-104, with a little extra mass at the 79/80 edge."""
    years = np.concatenate([rng.integers(0, 18, n), rng.integers(18, 65, n), rng.integers(65, 105, n)])
    weights = np.concatenate([np.full(n, 0.21), np.full(n, 0.60), np.full(n, 0.19)])
    ages = rng.choice(years, size=n, p=weights / weights.sum())
    edge = rng.random(n) < 0.02
    ages = np.where(edge, rng.choice([79, 80], size=n), ages)
    return ages * 365 + rng.integers(0, 365, n)


def _events(persons: pl.DataFrame, periods: tuple[date, ...], rng: np.random.Generator) -> pl.DataFrame:
    """The full event timeline (absolute dates); each submission takes its 24-month window."""
    start, end = add_months(periods[0], -24), periods[-1]
    span = (end - start).days
    frames = [_hypertension_events(persons, start, span, rng), _encounters(persons, start, span, rng)]
    return pl.concat(frames).sort(["person_id", "event_date", "code"])


def _age_years(birth: list[date], at: date) -> np.ndarray:
    return np.array([(at.year - b.year) - ((at.month, at.day) < (b.month, b.day)) for b in birth])


def _hypertension_events(persons: pl.DataFrame, start: date, span: int, rng: np.random.Generator) -> pl.DataFrame:
    n = persons.height
    age = _age_years(persons["birth_date"].to_list(), start + timedelta(days=span))
    q = persons["imd_quintile"].fill_null(3).to_numpy() - 1
    p_hyp = np.array(PLANTED["hypertension"])[q] * np.where(age >= 40, 1.0, 0.5)
    on = (age >= 18) & (rng.random(n) < p_hyp)
    ids = persons["person_id"].to_numpy()
    rows: list[tuple[str, date, str, float | None]] = []
    for i in np.flatnonzero(on):
        diag = start + timedelta(days=int(rng.integers(0, span)))
        rows.append((ids[i], diag, HYPERTENSION, None))
        if rng.random() < 0.10:  # resolved later; a few are re-diagnosed after that
            resolved = diag + timedelta(days=int(rng.integers(20, 400)))
            rows.append((ids[i], resolved, HYPERTENSION_RESOLVED, None))
            if rng.random() < 0.3:
                rows.append((ids[i], resolved + timedelta(days=int(rng.integers(10, 200))), HYPERTENSION, None))
        rows.extend(_bp_readings(ids[i], age[i], q[i], diag, start, span, rng))
    for i in np.flatnonzero(~on & (age >= 18) & (rng.random(n) < 0.15)):  # BP checks of people without hypertension
        rows.extend(_bp_readings(ids[i], age[i], q[i], start, start, span, rng))
    return _event_frame(rows)


def _bp_readings(pid: str, age: int, q: int, first: date, start: date, span: int,
                 rng: np.random.Generator) -> list[tuple[str, date, str, float | None]]:
    out = []
    limit_sys = 150 if age >= 80 else 140
    for _ in range(int(rng.integers(1, 5))):
        d = start + timedelta(days=int(rng.integers(0, span)))
        controlled = rng.random() < PLANTED["bp_controlled"][q]
        if controlled:
            sys_v, dia_v = rng.integers(100, limit_sys + 1), rng.integers(55, 91)
        elif rng.random() < 0.7:
            sys_v, dia_v = rng.integers(limit_sys + 1, 190), rng.integers(60, 100)
        else:
            sys_v, dia_v = rng.integers(100, limit_sys + 1), rng.integers(91, 110)
        pair = int(rng.integers(0, 2))
        # Systolic and diastolic are sometimes recorded on different days: each is taken as its latest.
        d2 = d + timedelta(days=int(rng.integers(0, 3)) if rng.random() < 0.1 else 0)
        out += [(pid, d, SYSTOLIC[pair], float(sys_v)), (pid, d2, DIASTOLIC[pair], float(dia_v))]
    return out


def _encounters(persons: pl.DataFrame, start: date, span: int, rng: np.random.Generator) -> pl.DataFrame:
    """Background GP activity (about 6 entries a person a year) so the events file has a realistic mix."""
    n = persons.height
    k = rng.poisson(6 * span / 365, n)
    idx = np.repeat(np.arange(n), k)
    days = rng.integers(0, span, idx.size)
    return pl.DataFrame({
        "person_id": persons["person_id"].to_numpy()[idx],
        "event_date": np.datetime64(start, "D") + days.astype("timedelta64[D]"),
        "code": np.array(ENCOUNTERS)[rng.integers(0, 2, idx.size)],
        "value": pl.Series([None] * idx.size, dtype=pl.Float64),
    })


def _event_frame(rows: list[tuple[str, date, str, float | None]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"person_id": pl.Utf8, "event_date": pl.Date, "code": pl.Utf8,
                                      "value": pl.Float64}, orient="row")


def _snapshot(persons: pl.DataFrame, events: pl.DataFrame, period_end: date) -> dict[str, pl.DataFrame]:
    """One period's submission: people registered by period_end (plus those who left or died in the
    24-month window, which the pipeline must exclude) and their records in the window."""
    window_start = add_months(period_end, -24)
    in_scope = persons.filter(
        (pl.col("birth_date") <= period_end) & (pl.col("registration_start") <= period_end)
        & (pl.col("registration_end").is_null() | (pl.col("registration_end") > window_start))
        & (pl.col("date_of_death").is_null() | (pl.col("date_of_death") > window_start))
    )
    # Someone who leaves or dies after period_end was still registered and alive on period_end.
    in_scope = in_scope.with_columns(
        pl.when(pl.col("registration_end") > period_end).then(None).otherwise(pl.col("registration_end")).alias("registration_end"),
        pl.when(pl.col("date_of_death") > period_end).then(None).otherwise(pl.col("date_of_death")).alias("date_of_death"),
    )
    ev = events.filter((pl.col("event_date") > window_start) & (pl.col("event_date") <= period_end)
                       & pl.col("person_id").is_in(in_scope["person_id"].implode()))
    patients = in_scope.select("person_id", "practice_code", "lsoa_code", "sex", "birth_month", "ethnic_category",
                               "registration_start", "registration_end", "date_of_death")
    empty = {k: pl.DataFrame(schema={c: pl.Utf8 for c in cols}) for k, cols in OTHER_FILE_COLUMNS.items()}
    return {"patients": patients, "events": ev, **empty}


OTHER_FILE_COLUMNS = {
    "cancer_registrations": ["person_id", "diagnosis_date", "icd10", "stage"],
    "maternity_bookings": ["person_id", "booking_date", "continuity_of_carer"],
    "hospital_admissions": ["person_id", "admission_date", "primary_diagnosis", "external_cause", "main_procedure"],
    "mh_contacts": ["person_id", "contact_date", "service"],
}


def write_submission(landing_dir: Path, site_code: str, period_end: date,
                     frames: dict[str, pl.DataFrame], created_at: str | None = None) -> Path:
    """Write the CSVs, then the manifest last: a submission is complete once the manifest exists."""
    folder = landing_dir / "sites" / site_code / period_end.strftime("%Y-%m")
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for kind in FILE_KINDS:
        path = folder / f"{kind}.csv"
        frames[kind].write_csv(path, date_format="%Y-%m-%d", quote_style="necessary")
        files[path.name] = {"rows": frames[kind].height, "sha256": sha256_file(path)}
    manifest = {"site_code": site_code, "period_end": period_end.isoformat(), "spec_version": SPEC_VERSION,
                "created_at": created_at or f"{add_months(period_end, 1).isoformat()[:8]}05T09:00:00Z",
                "files": files}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return folder


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def codelist_codes(codelist_id: str) -> list[str]:
    """Codes of one codelist seed, in file order."""
    path = DBT_PROJECT_DIR / "seeds" / "codelists" / f"cl_{codelist_id}.csv"
    with path.open(newline="") as f:
        return [row["code"] for row in csv.DictReader(f)]
