"""Synthetic landing zone (`c20p5 generate`): deterministic by seed, real geography, planted truth.

People live in real LSOAs near their real practice; every clinical event uses a real code from the
project's codelists (dbt seeds, the first code of each list). For every indicator of SPEC §5 and
every codelist-based PLUS group a known value by IMD quintile is planted (`PLANTED`,
`PLANTED_PLUS`, `PLANTED_PREVALENCE`), written from the SPEC alone, independently of the
pipeline's SQL. The full person-level truth (planted flags, every event, registration, booking,
admission and contact, and the synthetic police.uk crimes) is written beside the landing zone
(`<landing>/../generator_truth/`) so tests can compute the expected figures independently.

How the planted states survive every period (the design rule of this module)
---------------------------------------------------------------------------
A person's planted state (on a register, vaccinated, checked ...) is the same in every period
generated, so a published % per IMD quintile estimates the planted probability in every period:

* Diagnoses, resolutions, PLUS-group codes and "ever" events are dated inside
  `(last_period - 24 months, first_period]` (and after birth): inside every period's extract.
* Recurring numerator events recur every 45-100 days (SABA: monthly) over the whole timeline
  `(first_period - 24 months, last_period]`, or yearly on a fixed day 2-27 of a fixed month
  (vaccinations, SMI health checks), so every 12-month window `(period_end - 12 months,
  period_end]` holds them for a "yes" person; a "no" person never has them.
* Nobody is born after `first_period - 12 months`, so every 12-month window of every period lies
  wholly inside everyone's life (no partial exposure for infants in the rate indicators).
* Events after a person leaves their practice or dies are not recorded.
* People whose LSOA is blank (IMD quintile unknown) are planted with quintile 3's values.
* Eligibility for planting uses age at the first and last period with a year's margin either side
  of each indicator's age band, so anybody in a denominator in any period was planted.

Prevalences, incidences and rates are set far above real-world levels so the gradients can be
measured at a few thousand people per site: this is synthetic data, not an epidemiological model.

Truth files (`<landing>/../generator_truth/`): `<site>_persons.parquet` (person_id, practice_code,
lsoa21_code, lsoa_code as sent, imd_quintile, sex, birth_date, birth_month, ethnic_category,
registration_start/_end, date_of_death, then one column per planted state, null where the person
was not planted for it: hypertension_register, bp_controlled, smi_register, smi_health_check,
copd_register, copd_{flu,pneumo,covid}_vaccination, smoking_status (never/ex/current),
smoking_cessation_support, asthma_register, asthma_medicated, asthma_reliever_overuse,
type1_diabetes_register, diabetes_tech, epilepsy_register, epilepsy_nurse, cyp_mh_access,
tooth_extraction_rate, sharp_object_assault_rate, plus_<group>); `<site>_<kind>.parquet` for
events, cancer_registrations, maternity_bookings, hospital_admissions and mh_contacts (the whole
timeline: each submission is its 24-month slice); `police_crimes.parquet` (every synthetic crime
row) and `police_lsoas.parquet` (lsoa21_code, imd_quintile, residents, planted_rate).
"""
from __future__ import annotations

import calendar
import csv
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from checks.schemas import FILE_COLUMNS
from orchestration.settings import DBT_PROJECT_DIR, SHIPPED_REFERENCE_DIR, Settings, Site

SPEC_VERSION = "1.0"
FILE_KINDS = tuple(FILE_COLUMNS)

# SPEC §5: concepts sites record for hypertension and blood pressure.
HYPERTENSION, HYPERTENSION_RESOLVED = "38341003", "162659009"
SYSTOLIC = ("271649006", "72313002")
DIASTOLIC = ("271650006", "1091811000000102")
ENCOUNTERS = ("185317003", "308335008")  # telephone encounter; patient encounter procedure

Quintiles = tuple[float, float, float, float, float]

# Planted truth by IMD quintile (index 0 = quintile 1, most deprived). Synthetic levels, chosen to
# be measurable at ~1,500 people per site, not realistic.
#
# % indicators: the probability that a member of the indicator's denominator meets its numerator,
# in every period generated. Rate indicators (CYP_TOOTH_EXTRACTIONS, SHARP_OBJECT_ASSAULT_ADMISSIONS):
# expected qualifying admissions per person per year in the denominator (published per 100,000 ≈
# value x 100,000). KNIFE_CRIME_RATE: expected "Possession of weapons" crimes per Census 2021
# resident per year in LSOAs of that quintile (published per 1,000 ≈ value x 1,000).
PLANTED: dict[str, Quintiles] = {
    "HYP_TREATED_TO_TARGET": (0.50, 0.57, 0.64, 0.70, 0.76),
    "HYP_PREVALENCE": (0.30, 0.27, 0.24, 0.21, 0.18),
    "SMI_HEALTH_CHECK": (0.40, 0.46, 0.52, 0.58, 0.64),
    "COPD_FLU_VACCINATION": (0.62, 0.67, 0.72, 0.77, 0.82),
    "COPD_PNEUMO_VACCINATION": (0.55, 0.61, 0.67, 0.72, 0.78),
    "COPD_COVID_VACCINATION": (0.45, 0.52, 0.59, 0.65, 0.72),
    "CANCER_EARLY_STAGE": (0.45, 0.50, 0.55, 0.60, 0.66),
    "MATERNITY_CONTINUITY": (0.30, 0.36, 0.42, 0.48, 0.55),
    "SMOKING_CESSATION_SUPPORT": (0.50, 0.56, 0.62, 0.68, 0.74),
    "CYP_ASTHMA_RELIEVER_OVERUSE": (0.32, 0.27, 0.22, 0.18, 0.14),
    "CYP_DIABETES_TECH": (0.40, 0.48, 0.56, 0.63, 0.70),
    "CYP_EPILEPSY_NURSE": (0.50, 0.56, 0.62, 0.68, 0.75),
    "CYP_TOOTH_EXTRACTIONS": (0.40, 0.30, 0.22, 0.16, 0.12),
    "CYP_MH_ACCESS": (0.20, 0.24, 0.28, 0.32, 0.36),
    "KNIFE_CRIME_RATE": (0.0060, 0.0045, 0.0034, 0.0026, 0.0020),
    "SHARP_OBJECT_ASSAULT_ADMISSIONS": (0.20, 0.15, 0.11, 0.08, 0.06),
}

# Denominator prevalences: probability of being on each register / in each state among the people
# planted for it (hypertension and SMI: adults; COPD: 35+; asthma, type 1 diabetes, epilepsy:
# children and young people; current_smoker: 15+).
PLANTED_PREVALENCE: dict[str, Quintiles] = {
    "hypertension": PLANTED["HYP_PREVALENCE"],
    "smi": (0.10, 0.085, 0.075, 0.065, 0.055),
    "copd": (0.16, 0.13, 0.11, 0.09, 0.075),
    "asthma": (0.30, 0.27, 0.24, 0.21, 0.18),
    "type1_diabetes": (0.14, 0.13, 0.12, 0.11, 0.10),
    "epilepsy": (0.14, 0.13, 0.12, 0.11, 0.10),
    "current_smoker": (0.32, 0.27, 0.22, 0.17, 0.13),
}

# PLUS groups (SPEC §6.3) defined by a codelist: probability of membership (the group's first code
# recorded inside every period's extract) by quintile; looked_after_child among under-18s only.
PLANTED_PLUS: dict[str, Quintiles] = {
    "homeless": (0.050, 0.035, 0.025, 0.018, 0.012),
    "learning_disability": (0.045, 0.040, 0.035, 0.030, 0.025),
    "autism": (0.040, 0.037, 0.034, 0.031, 0.028),
    "gypsy_roma_traveller": (0.040, 0.028, 0.020, 0.014, 0.010),
    "justice_contact": (0.060, 0.042, 0.030, 0.020, 0.014),
    "carer": (0.110, 0.100, 0.090, 0.080, 0.070),
    "asylum_refugee": (0.045, 0.030, 0.020, 0.014, 0.010),
    "looked_after_child": (0.060, 0.042, 0.030, 0.020, 0.014),
}

# Background levels (not indicators).
CANCER_INCIDENCE = 0.08       # registrations per adult per year (synthetic, very high)
CANCER_STAGE_UNKNOWN = 0.10   # share of registrations with stage 'X'
BOOKING_RATE = 0.30           # maternity bookings per woman 15-49 per year (synthetic)
NOISE_ADMISSION_RATE = 0.10   # other hospital admissions per person per year
ASTHMA_MEDICATED = 0.85       # share of the CYP asthma register with asthma medication (in the denominator)

ETHNIC_CODES = list("ABCDEFGHJKLMNPRS") + ["Z", "99"]
ETHNIC_WEIGHTS = [70, 1.5, 3, .5, .5, .5, .5, 3, 3, 1.5, 1, .5, 2, 1, .5, .5, 8, 2.5]
POLICE_HEADER = ("Crime ID", "Month", "Reported by", "Falls within", "Longitude", "Latitude", "Location",
                 "LSOA code", "LSOA name", "Crime type", "Last outcome category", "Context")
WEAPONS = "Possession of weapons"
OTHER_CRIMES = ("Violence and sexual offences", "Criminal damage and arson", "Other theft", "Public order",
                "Vehicle crime", "Burglary", "Shoplifting", "Drugs", "Robbery")
OUTCOMES = ("Investigation complete; no suspect identified", "Unable to prosecute suspect", "Under investigation",
            "Awaiting court outcome", "Local resolution", "Offender given a caution")
STREETS = ("High Street", "Church Street", "Station Road", "Park Road", "Victoria Street", "Queen Street",
           "Market Street", "Manchester Road", "Preston New Road", "Talbot Road", "Albert Road", "Mill Lane")
_EPOCH = date(1970, 1, 1)


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
                     sites: tuple[Site, ...] | None = None,
                     progress: Callable[[str], None] | None = None) -> GenerateResult:
    """Write one complete monthly submission per site and period under the landing zone, the
    synthetic police.uk files under `<landing>/reference/police/`, and the truth beside it
    (telling `progress` as each site is written)."""
    if not 1 <= months <= 24:
        raise ValueError("months must be 1-24: diagnoses must fall inside every period's 24-month extract")
    if last_period != month_end(last_period.year, last_period.month):
        raise ValueError(f"last_period {last_period} is not a month end")
    periods = period_ends(last_period, months)
    truth_dir = settings.landing_dir.parent / "generator_truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    counts, lsoas = {}, set()
    with _reference_connection(settings) as con:
        todo = sites or settings.sites
        for i, site in enumerate(todo):
            started = time.monotonic()
            persons = _persons(con, site, people_per_site, periods, np.random.default_rng([seed, i]))
            persons, tables = _clinical(persons, periods, seed, i)
            _write_truth(truth_dir, site.site_code, persons, tables)
            for p in periods:
                write_submission(settings.landing_dir, site.site_code, p, _snapshot(persons, tables, p))
            counts[site.site_code] = persons.height
            lsoas.update(persons["lsoa21_code"].drop_nulls().unique().to_list())
            if progress:
                progress(f"site {i + 1}/{len(todo)} {site.site_code}: {persons.height:,} people, "
                         f"{len(periods)} submissions ({time.monotonic() - started:.1f} s)")
        _police(con, settings.landing_dir, truth_dir, sorted(lsoas), periods, seed)
    return GenerateResult(settings.landing_dir, truth_dir, periods, counts)


def _reference_connection(settings: Settings) -> duckdb.DuckDBPyConnection:
    from assets.reference import load_reference
    con = duckdb.connect()
    load_reference(con, settings)
    return con


# ---------------------------------------------------------------------------------------------
# People
# ---------------------------------------------------------------------------------------------

def _practice_lsoa_pools(con: duckdb.DuckDBPyConnection, site: Site) -> pl.DataFrame:
    """Candidate home LSOAs per practice: the real 2020 registrations by LSOA where the practice is
    substantially in that file (Pennine Lancashire), otherwise LSOAs of the practice's own sub-ICB
    location. (A practice elsewhere with a handful of patients in the Pennine file would otherwise
    get only those one or two LSOAs.)"""
    regs = SHIPPED_REFERENCE_DIR / "bwd_pennine_lancs_gp_reg_pat_prac_lsoa_apr2020.csv"
    return con.execute(f"""
        with sp as (select p.practice_code, p.sub_icb_code from ref.site_practices s
                    join ref.practices p using (practice_code) where s.site_code = ?),
        real_regs as (
            select r.PRACTICE_CODE as practice_code, m.lsoa21_code, sum(r."Number.of.Patients") as weight
            from read_csv('{regs}', header=true) r join ref.lsoa_to_lsoa21 m on m.lsoa_code = r.LSOA_CODE
            where r.PRACTICE_CODE in (select practice_code from sp) group by 1, 2
            qualify sum(sum(r."Number.of.Patients")) over (partition by r.PRACTICE_CODE) >= 500),
        nearby as (
            select sp.practice_code, g.lsoa21_code, 1.0 as weight from sp
            join ref.lsoa21_geography g on g.sub_icb_code = sp.sub_icb_code
            where sp.practice_code not in (select practice_code from real_regs)
            qualify row_number() over (partition by sp.practice_code order by hash(sp.practice_code || g.lsoa21_code)) <= 60)
        select practice_code, lsoa21_code, cast(weight as double) as weight, d.imd_quintile
        from (select * from real_regs union all select * from nearby)
        join ref.lsoa_deprivation d using (lsoa21_code)
        order by practice_code, lsoa21_code""", [site.site_code]).pl()


def _old_codes(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """LSOA 2021 -> a different 2011 code that maps back to it (to plant 2011 codes)."""
    rows = con.execute("""select m.lsoa21_code, min(m.lsoa_code) from ref.lsoa_to_lsoa21 m
        where m.lsoa_code <> m.lsoa21_code group by 1""").fetchall()
    return dict(rows)


def _day(d: date) -> int:
    return (d - _EPOCH).days


def _dates(days: np.ndarray) -> pl.Series:
    return pl.Series(np.asarray(days, dtype=np.int32)).cast(pl.Date)


def _persons(con: duckdb.DuckDBPyConnection, site: Site, n: int, periods: tuple[date, ...],
             rng: np.random.Generator) -> pl.DataFrame:
    pools = _practice_lsoa_pools(con, site)
    practices = pools["practice_code"].unique(maintain_order=True).to_list()
    practice_i = rng.integers(0, len(practices), n)
    practice = np.array(practices)[practice_i]
    lsoa, quintile = _pick_lsoas(pools, practice_i, rng)
    old = _old_codes(con)
    reported = pl.Series(lsoa, dtype=pl.Utf8)
    reported = pl.Series(np.where(rng.random(n) < 0.03, reported.replace(old).to_numpy(), lsoa))
    blank = rng.random(n) < 0.02
    last = _day(periods[-1])
    first_window = _day(add_months(periods[0], -24))
    # Nobody is born after first_period - 12 months (see the module docstring); 2% sit at the 79/80 edge.
    birth = _day(add_months(periods[0], -12)) - _ages_in_days(n, rng)
    edge = rng.random(n) < 0.02
    birth = np.where(edge, last - (rng.choice([79, 80], size=n) * 365 + rng.integers(0, 365, n)), birth)
    # Registration starts between birth and the last period; leaving and dying happen after both.
    reg_start = birth + np.floor(rng.random(n) * (last - birth + 1)).astype(np.int64)
    left, died = rng.random(n) < 0.03, rng.random(n) < 0.015
    reg_end = _after(np.maximum(reg_start, first_window), last, rng)
    death = _after(np.maximum(birth, first_window), last, rng)
    token = hashlib.sha256(f"{site.site_code}".encode()).hexdigest()[:6]
    ids = pl.int_range(0, n, eager=True).cast(pl.Utf8).str.zfill(8)
    birth_dates = _dates(birth)
    return pl.DataFrame({
        "person_id": f"P{token}" + ids,
        "practice_code": practice.astype(str),
        "lsoa21_code": _keep(pl.Series(lsoa, dtype=pl.Utf8), ~blank),
        "lsoa_code": _keep(reported, ~blank),
        "imd_quintile": _keep(pl.Series(quintile, dtype=pl.Int64), ~blank),
        "sex": rng.choice(["M", "F", "I", "U"], size=n, p=[0.49, 0.49, 0.005, 0.015]),
        "birth_date": birth_dates,
        "birth_month": birth_dates.dt.strftime("%Y-%m"),
        "ethnic_category": rng.choice(ETHNIC_CODES, size=n, p=np.array(ETHNIC_WEIGHTS) / sum(ETHNIC_WEIGHTS)),
        "registration_start": _dates(reg_start),
        "registration_end": _keep(_dates(reg_end), left),
        "date_of_death": _keep(_dates(death), died),
    })


def _keep(values: pl.Series, keep: np.ndarray) -> pl.Series:
    """`values` where `keep`, else null."""
    return pl.DataFrame({"v": values, "k": keep}).select(pl.when(pl.col("k")).then(pl.col("v")).alias(values.name))[values.name]


def _after(start: np.ndarray, end: int, rng: np.random.Generator) -> np.ndarray:
    """A day strictly after `start` and (unless start is end) no later than `end`."""
    span = np.maximum(1, end - start)
    return start + 1 + np.floor(rng.random(start.size) * span).astype(np.int64)


def _pick_lsoas(pools: pl.DataFrame, practice: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A home LSOA per person, weighted within their practice's pool (`practice` = index of the
    practice in the pools' order)."""
    lsoa = np.empty(len(practice), dtype=object)
    quintile = np.zeros(len(practice), dtype=np.int64)
    order = np.argsort(practice, kind="stable")
    bounds = np.searchsorted(practice[order], np.arange(practice.max(initial=0) + 2))
    for i, (_, group) in enumerate(pools.group_by("practice_code", maintain_order=True)):
        idx = order[bounds[i]:bounds[i + 1]]
        w = group["weight"].to_numpy().astype(float)
        pick = rng.choice(group.height, size=len(idx), p=w / w.sum())
        lsoa[idx] = group["lsoa21_code"].to_numpy()[pick]
        quintile[idx] = group["imd_quintile"].to_numpy()[pick]
    return lsoa, quintile


def _ages_in_days(n: int, rng: np.random.Generator) -> np.ndarray:
    """A rough English age pyramid, 0-104 years."""
    band = rng.choice(3, size=n, p=np.array([0.21, 0.60, 0.19]))
    years = np.choose(band, [rng.integers(0, 18, n), rng.integers(18, 65, n), rng.integers(65, 105, n)])
    return years * 365 + rng.integers(0, 365, n)


# ---------------------------------------------------------------------------------------------
# Clinical records
# ---------------------------------------------------------------------------------------------

@dataclass
class _Ctx:
    """Per-site working state: person arrays (index = position in `persons`) and accumulators."""
    n: int
    q: np.ndarray            # planting quintile index 0-4 (unknown -> quintile 3)
    birth: np.ndarray        # day numbers
    age_first: np.ndarray    # whole years at the first / last period end, from the birth month
    age_last: np.ndarray
    female: np.ndarray
    t0: int                  # timeline (first_period - 24 months, last_period]
    t1: int
    first: int
    ever_lo: np.ndarray      # first allowed day of "ever" events: max(last - 24 months + 1 day, birth)
    seed: int
    site_index: int
    events: list[pl.DataFrame] = field(default_factory=list)
    codes: dict[str, int] = field(default_factory=dict)  # event codes, kept as small integers until the end
    flags: dict[str, pl.Series] = field(default_factory=dict)
    tables: dict[str, list[pl.DataFrame]] = field(default_factory=dict)

    def rng(self, module: int) -> np.random.Generator:
        """An independent stream per module, so changing one module never shifts another."""
        return np.random.default_rng([self.seed, self.site_index, module])

    def p(self, values: Quintiles, idx: np.ndarray | None = None) -> np.ndarray:
        return np.asarray(values)[self.q if idx is None else self.q[idx]]

    def add(self, pidx: np.ndarray, days: np.ndarray, code: str | tuple[str, ...] | np.ndarray,
            value: np.ndarray | None = None, which: np.ndarray | None = None) -> None:
        """Events of one code, or of `code[which]` for a tuple of codes and an index per event."""
        k = len(pidx)
        if k == 0:
            return
        if isinstance(code, str):
            code_idx = np.full(k, self.codes.setdefault(code, len(self.codes)), dtype=np.uint16)
        else:
            if which is None:
                code, which = np.unique(np.asarray(code, dtype=str), return_inverse=True)
            code_idx = np.array([self.codes.setdefault(c, len(self.codes)) for c in list(code)],
                                dtype=np.uint16)[which]
        self.events.append((np.asarray(pidx, dtype=np.int32), np.asarray(days, dtype=np.int32), code_idx,
                            np.full(k, np.nan) if value is None else np.asarray(value, dtype=np.float64)))

    def event_frame(self, lo: np.ndarray, hi: np.ndarray) -> pl.DataFrame:
        """All events with lo[person] <= day <= hi[person], sorted by person, date and code (a stable
        sort, so equal keys keep their deterministic order of generation); `code` is an Enum whose
        categories are in text order. Done in numpy to keep memory near the size of the data."""
        cols = [np.concatenate([part[j] for part in self.events]) if self.events else np.array([], dtype=t)
                for j, t in enumerate((np.int32, np.int32, np.uint16, np.float64))]
        self.events.clear()
        pidx, day = cols[0], cols[1]
        keep = (day >= lo[pidx]) & (day <= hi[pidx])
        cols = [c[keep] for c in cols]
        cats = sorted(self.codes)
        rank = np.zeros(max(1, len(cats)), dtype=np.uint64)
        for code, i in self.codes.items():
            rank[i] = cats.index(code)
        key = ((cols[0].astype(np.uint64) << np.uint64(32)) | ((cols[1] - self.t0).astype(np.uint64) << np.uint64(12))
               | rank[cols[2]])
        order = np.argsort(key, kind="stable")
        del key
        enum = pl.Series(cats, dtype=pl.Utf8).cast(pl.Enum(cats))
        value = cols[3][order]
        return pl.DataFrame({
            "pidx": cols[0][order],
            "event_date": pl.Series(cols[1][order]).cast(pl.Date),
            "code": enum.gather(pl.Series(rank[cols[2][order]].astype(np.uint32))),
            "value": pl.Series(value).fill_nan(None),
        })

    def row(self, kind: str, frame: pl.DataFrame) -> None:
        if frame.height:
            self.tables.setdefault(kind, []).append(frame)

    def flag(self, name: str, values: np.ndarray, eligible: np.ndarray) -> None:
        """A planted per-person state; null where the person was not planted for it."""
        self.flags[name] = _keep(pl.Series(name, values), eligible).alias(name)


def _ages_at(birth: np.ndarray, pe: date) -> np.ndarray:
    months = birth.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
    return pe.year - (months // 12 + 1970) - (pe.month < months % 12 + 1)


def _clinical(persons: pl.DataFrame, periods: tuple[date, ...], seed: int, site_index: int
              ) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    """Plant every indicator's state and write its records; returns the persons with their planted
    flags and the five record tables (`pidx` = person row, dates as polars dates)."""
    birth = persons["birth_date"].cast(pl.Int32).to_numpy().astype(np.int64)
    ctx = _Ctx(
        n=persons.height, q=persons["imd_quintile"].fill_null(3).to_numpy() - 1, birth=birth,
        age_first=_ages_at(birth, periods[0]), age_last=_ages_at(birth, periods[-1]),
        female=(persons["sex"] == "F").to_numpy(), t0=_day(add_months(periods[0], -24)), t1=_day(periods[-1]),
        first=_day(periods[0]), ever_lo=np.maximum(_day(add_months(periods[-1], -24)) + 1, birth),
        seed=seed, site_index=site_index)
    smoking = _smoking(ctx)
    _hypertension(ctx)
    _smi(ctx, smoking)
    _copd(ctx)
    _asthma(ctx)
    _diabetes(ctx)
    _epilepsy(ctx)
    _plus_groups(ctx)
    _encounters(ctx)
    _cancer(ctx)
    _maternity(ctx)
    _admissions(ctx)
    _mh_contacts(ctx)

    # Nothing is recorded before birth, after leaving the practice or after death, or outside the timeline.
    end = np.minimum(persons["registration_end"].cast(pl.Int32).fill_null(ctx.t1).to_numpy(),
                     persons["date_of_death"].cast(pl.Int32).fill_null(ctx.t1).to_numpy())
    lo, hi = np.maximum(birth, ctx.t0 + 1).astype(np.int32), np.minimum(end, ctx.t1).astype(np.int32)
    tables = {"events": ctx.event_frame(lo, hi)}
    lo, hi = pl.Series(lo), pl.Series(hi)
    parts = ctx.tables
    for kind, col in (("cancer_registrations", "diagnosis_date"), ("maternity_bookings", "booking_date"),
                      ("hospital_admissions", "admission_date"), ("mh_contacts", "contact_date")):
        cols = [c for c in FILE_COLUMNS[kind] if c != "person_id"]
        frame = pl.concat(parts[kind]) if parts.get(kind) else pl.DataFrame(
            {"pidx": [], "day": []}, schema={"pidx": pl.Int32, "day": pl.Int32})
        parts[kind] = []
        frame = frame.filter((pl.col("day") >= pl.lit(lo).gather(pl.col("pidx")))
                             & (pl.col("day") <= pl.lit(hi).gather(pl.col("pidx"))))
        frame = frame.with_columns([pl.col(c).cast(pl.Utf8) for c in cols if c != col and c in frame.columns])
        frame = frame.with_columns(pl.col("day").cast(pl.Date).alias(col))
        frame = frame.select("pidx", *[pl.col(c) if c in frame.columns else pl.lit(None, pl.Utf8).alias(c) for c in cols])
        tables[kind] = frame.sort(["pidx", *cols], nulls_last=True)
    persons = persons.with_columns(list(ctx.flags.values()))
    return persons, tables


# Module numbers for `_Ctx.rng` (never reuse one).
_SMOKING, _HYP, _SMI, _COPD, _ASTHMA, _DIABETES, _EPILEPSY, _PLUS, _ENCOUNTERS, _CANCER, _MATERNITY, \
    _ADMISSIONS, _MH = range(1, 14)


def _recurring(rng: np.random.Generator, idx: np.ndarray, start: np.ndarray | int, end: int,
               gap_lo: int, gap_hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Days for each person in `idx`: the first within `gap_hi` days after `start`, then every
    `gap_lo`-`gap_hi` days up to `end`. With gap_hi < 365 every 12-month window after `start`
    holds at least one (at most 365 / gap_lo + 1)."""
    idx = np.asarray(idx)
    if idx.size == 0:
        return idx, idx
    start = np.broadcast_to(np.asarray(start, dtype=np.int64), idx.shape)
    steps = max(1, int(np.ceil((end - start.min()) / gap_lo)) + 2)
    gaps = rng.integers(gap_lo, gap_hi + 1, size=(idx.size, steps))
    gaps[:, 0] = rng.integers(1, gap_hi + 1, size=idx.size)
    days = start[:, None] + np.cumsum(gaps, axis=1)
    keep = days <= end
    return np.repeat(idx, keep.sum(axis=1)), days[keep]


def _annual(rng: np.random.Generator, idx: np.ndarray, t0: int, t1: int,
            months: tuple[int, ...] = tuple(range(1, 13))) -> tuple[np.ndarray, np.ndarray]:
    """Once a year on a fixed day (2-27) of a fixed month per person, over (t0, t1]: every 12-month
    window ending on a month end holds exactly one, well clear of the window's edges."""
    idx = np.asarray(idx)
    if idx.size == 0:
        return idx, idx
    month = np.asarray(months)[rng.integers(0, len(months), idx.size)]
    day = rng.integers(2, 28, idx.size)
    y0 = (_EPOCH + timedelta(days=t0)).year
    y1 = (_EPOCH + timedelta(days=t1)).year
    years = np.arange(y0, y1 + 1)
    m = (years[None, :] - 1970) * 12 + (month[:, None] - 1)
    days = m.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64) + day[:, None] - 1
    keep = (days > t0) & (days <= t1)
    return np.repeat(idx, keep.sum(axis=1)), days[keep]


def _poisson_days(rng: np.random.Generator, idx: np.ndarray, rate: np.ndarray | float, start: np.ndarray | int,
                  end: int) -> tuple[np.ndarray, np.ndarray]:
    """A Poisson process of `rate` per year per person over [start, end], dates uniform."""
    idx = np.asarray(idx)
    start = np.broadcast_to(np.asarray(start, dtype=np.int64), idx.shape)
    length = np.maximum(0, end - start + 1)
    k = rng.poisson(np.broadcast_to(rate, idx.shape) * length / 365.25)
    who = np.repeat(np.arange(idx.size), k)
    days = start[who] + np.floor(rng.random(who.size) * length[who]).astype(np.int64)
    return idx[who], days


def _ever(ctx: _Ctx, rng: np.random.Generator, idx: np.ndarray, k: int = 1) -> np.ndarray:
    """`k` strictly increasing days per person inside (last - 24 months, first_period], after birth:
    visible in every period's extract. Shape (len(idx), k)."""
    lo = ctx.ever_lo[idx]
    span = ctx.first - lo - (k - 1)
    u = np.sort(np.floor(rng.random((idx.size, k)) * (span + 1)[:, None]).astype(np.int64), axis=1)
    return lo[:, None] + u + np.arange(k)


def _register(ctx: _Ctx, rng: np.random.Generator, eligible: np.ndarray, prevalence: Quintiles, code: str,
              resolved: str, relapse: float = 0.08, same_day: float = 0.0, off_resolved: float = 0.03) -> np.ndarray:
    """Plant a register: on = latest `code` not followed by a later `resolved`. Edge cases that keep
    the state: some on-register people were diagnosed, resolved and re-diagnosed; some have a
    resolved code on the day of their diagnosis (same day does not remove); some off-register
    people were diagnosed and later resolved. Returns the on-register mask."""
    on = eligible & (rng.random(ctx.n) < ctx.p(prevalence))
    idx = np.flatnonzero(on)
    kind = rng.random(idx.size)
    relapsed, same = kind < relapse, (kind >= relapse) & (kind < relapse + same_day)
    simple = np.flatnonzero(~relapsed)
    d = _ever(ctx, rng, idx[simple])[:, 0]
    ctx.add(idx[simple], d, code)
    same_idx = np.flatnonzero(same[simple])
    ctx.add(idx[simple][same_idx], d[same_idx], resolved)
    r = idx[relapsed]
    d3 = _ever(ctx, rng, r, 3)
    ctx.add(r, d3[:, 0], code), ctx.add(r, d3[:, 1], resolved), ctx.add(r, d3[:, 2], code)
    off = np.flatnonzero(eligible & ~on & (rng.random(ctx.n) < off_resolved))
    d2 = _ever(ctx, rng, off, 2)
    ctx.add(off, d2[:, 0], code), ctx.add(off, d2[:, 1], resolved)
    return on


def _yes(ctx: _Ctx, rng: np.random.Generator, idx: np.ndarray, planted: Quintiles) -> np.ndarray:
    return rng.random(idx.size) < ctx.p(planted, idx)


def _smoking(ctx: _Ctx) -> np.ndarray:
    """Smoking status for everyone 14+ at the last period: 0 never, 1 ex, 2 current, -1 not planted.
    Current smokers have a current-smoker code every 45-100 days and never a non-smoker code; ex-smokers
    have one older current-smoker code, then non-smoker codes every 45-100 days (excluded from the
    denominator in every period); never-smokers have a few never-smoked codes."""
    rng = ctx.rng(_SMOKING)
    eligible = ctx.age_last >= 14
    u = rng.random(ctx.n)
    current = u < ctx.p(PLANTED_PREVALENCE["current_smoker"])
    ex = ~current & (u < ctx.p(PLANTED_PREVALENCE["current_smoker"]) + 0.20)
    state = np.where(~eligible, -1, np.where(current, 2, np.where(ex, 1, 0)))
    cur_code, never_code = codelist_codes("current_smoker")[0], codelist_codes("non_smoker_status")[0]
    ex_code = _ex_smoker_code()
    idx = np.flatnonzero(state == 2)
    ctx.add(*_recurring(rng, idx, ctx.t0, ctx.t1, 45, 100), cur_code)
    support = _yes(ctx, rng, idx, PLANTED["SMOKING_CESSATION_SUPPORT"])
    ctx.add(*_recurring(rng, idx[support], ctx.t0, ctx.t1, 45, 100), codelist_codes("smoking_cessation_support")[0])
    ctx.flag("smoking_status", np.array(["never", "ex", "current", ""])[state], eligible)
    ctx.flag("smoking_cessation_support", np.isin(np.arange(ctx.n), idx[support]), state == 2)
    # Ex-smokers: quit before the first period's 12-month window; half had support back then.
    idx = np.flatnonzero(state == 1)
    quit_day = ctx.t0 + 1 + rng.integers(0, 300, idx.size)
    ctx.add(idx, quit_day, cur_code)
    helped = rng.random(idx.size) < 0.5
    ctx.add(idx[helped], quit_day[helped] + rng.integers(0, 20, helped.sum()), codelist_codes("smoking_cessation_support")[0])
    ctx.add(*_recurring(rng, idx, quit_day, ctx.t1, 45, 100), ex_code)
    idx = np.flatnonzero(state == 0)
    ctx.add(*_poisson_days(rng, idx, 0.4, ctx.t0 + 1, ctx.t1), never_code)
    return state


@lru_cache(maxsize=1)
def _ex_smoker_code() -> str:
    """The ex-smoker concept of the non-smoker list (8517006 |Ex-smoker|), else its first code."""
    codes = codelist_codes("non_smoker_status")
    return "8517006" if "8517006" in codes else codes[0]


def _hypertension(ctx: _Ctx) -> None:
    """Register with a planted per-person control state. Controlled people: every reading (and every
    same-day reading) <=140/90, or <=150/90 when 81+ at the first period (so 80+ in every period).
    Uncontrolled people fail the same component on every reading: systolic >150, or diastolic >90.
    Readings every 45-75 days, so the latest in any 12 months is one of the person's own kind."""
    rng = ctx.rng(_HYP)
    eligible = ctx.age_last >= 17
    on = _register(ctx, rng, eligible, PLANTED_PREVALENCE["hypertension"], HYPERTENSION, HYPERTENSION_RESOLVED,
                   relapse=0.08, same_day=0.04, off_resolved=0.05)
    idx = np.flatnonzero(on)
    controlled = _yes(ctx, rng, idx, PLANTED["HYP_TREATED_TO_TARGET"])
    ctx.flag("hypertension_register", on, eligible)
    ctx.flag("bp_controlled", np.isin(np.arange(ctx.n), idx[controlled]), on)
    who, days = _recurring(rng, idx, ctx.t0, ctx.t1, 45, 75)
    # about one reading day in ten has a second reading (the lowest counts: both are of the person's kind)
    again = rng.random(who.size) < 0.10
    who, days = np.concatenate([who, who[again]]), np.concatenate([days, days[again]])
    ctrl = np.zeros(ctx.n, dtype=bool)
    ctrl[idx[controlled]] = True
    fail_sys = rng.random(ctx.n) < 0.7
    limit = np.where(ctx.age_first >= 81, 150, 140)[who]
    k = who.size
    c, fs = ctrl[who], fail_sys[who]
    sys_v = np.where(c, rng.integers(100, limit + 1),
                     np.where(fs, rng.integers(151, 191, k), rng.integers(100, 151, k)))
    dia_v = np.where(c, rng.integers(55, 91, k), np.where(fs, rng.integers(60, 101, k), rng.integers(91, 111, k)))
    _bp_pairs(ctx, rng, who, days, sys_v, dia_v)
    # BP checks of some adults not on the register (any values: they are in no BP denominator)
    others = np.flatnonzero(eligible & ~on & (rng.random(ctx.n) < 0.15))
    who, days = _poisson_days(rng, others, 2.0, ctx.t0 + 1, ctx.t1)
    _bp_pairs(ctx, rng, who, days, rng.integers(100, 180, who.size), rng.integers(55, 105, who.size))


def _bp_pairs(ctx: _Ctx, rng: np.random.Generator, who: np.ndarray, days: np.ndarray, sys_v: np.ndarray,
              dia_v: np.ndarray) -> None:
    k = who.size
    pair = rng.integers(0, 2, k)
    # Systolic and diastolic are sometimes recorded on different days: each is taken as its latest.
    d2 = days + np.where(rng.random(k) < 0.1, rng.integers(1, 3, k), 0)
    ctx.add(who, days, SYSTOLIC, sys_v.astype(float), which=pair)
    ctx.add(who, d2, DIASTOLIC, dia_v.astype(float), which=pair)


def _smi(ctx: _Ctx, smoking: np.ndarray) -> None:
    """SMI register; yes = all six checks once a year on fixed days. A "no" person's checks are a
    fixed proper subset that always misses at least one of BMI, cholesterol, glucose/HbA1c and alcohol
    (blood pressure and smoking status may also come from the hypertension and smoking records)."""
    rng = ctx.rng(_SMI)
    eligible = ctx.age_last >= 17
    on = _register(ctx, rng, eligible, PLANTED_PREVALENCE["smi"], codelist_codes("smi")[0],
                   codelist_codes("smi_remission")[0], relapse=0.10, off_resolved=0.03)
    idx = np.flatnonzero(on)
    yes = _yes(ctx, rng, idx, PLANTED["SMI_HEALTH_CHECK"])
    ctx.flag("smi_register", on, eligible)
    ctx.flag("smi_health_check", np.isin(np.arange(ctx.n), idx[yes]), on)
    # present[i, j]: person idx[i] has check j (bmi, cholesterol, glucose, alcohol, bp, smoking)
    present = np.ones((idx.size, 6), dtype=bool)
    no = np.flatnonzero(~yes)
    present[no] = rng.random((no.size, 6)) < np.array([0.6, 0.6, 0.6, 0.6, 0.7, 0.7])
    full = no[present[no, :4].all(axis=1)]
    present[full, rng.integers(0, 4, full.size)] = False
    status_code = np.array([codelist_codes("non_smoker_status")[0], _ex_smoker_code(),
                            codelist_codes("current_smoker")[0]])
    checks = [("bmi", lambda k: np.round(rng.uniform(18, 40, k), 1)),
              ("cholesterol", lambda k: np.round(rng.uniform(3, 7.5, k), 1)),
              ("glucose_hba1c", lambda k: rng.integers(30, 80, k).astype(float)),
              ("alcohol", lambda k: rng.integers(0, 40, k).astype(float)),
              ("blood_pressure_check", None), ("smoking_status", None)]
    for j, (name, value) in enumerate(checks):
        who, days = _annual(rng, idx[present[:, j]], ctx.t0, ctx.t1)
        if name == "smoking_status":  # the code matches the person's smoking status
            ctx.add(who, days, tuple(status_code), which=np.maximum(smoking[who], 0))
        else:
            ctx.add(who, days, codelist_codes(name)[0], None if value is None else value(who.size))


def _copd(ctx: _Ctx) -> None:
    """COPD register among 35+; flu and COVID-19 vaccines yearly (autumn), pneumococcal once."""
    rng = ctx.rng(_COPD)
    eligible = ctx.age_last >= 35
    on = _register(ctx, rng, eligible, PLANTED_PREVALENCE["copd"], codelist_codes("copd")[0],
                   codelist_codes("copd_resolved")[0], relapse=0.06, off_resolved=0.02)
    idx = np.flatnonzero(on)
    ctx.flag("copd_register", on, eligible)
    flu = _yes(ctx, rng, idx, PLANTED["COPD_FLU_VACCINATION"])
    pneumo = _yes(ctx, rng, idx, PLANTED["COPD_PNEUMO_VACCINATION"])
    covid = _yes(ctx, rng, idx, PLANTED["COPD_COVID_VACCINATION"])
    for name, yes in (("copd_flu_vaccination", flu), ("copd_pneumo_vaccination", pneumo),
                      ("copd_covid_vaccination", covid)):
        ctx.flag(name, np.isin(np.arange(ctx.n), idx[yes]), on)
    ctx.add(*_annual(rng, idx[flu], ctx.t0, ctx.t1, (9, 10, 11, 12)), codelist_codes("flu_vaccination")[0])
    ctx.add(*_annual(rng, idx[covid], ctx.t0, ctx.t1, (4, 9, 10, 11)), codelist_codes("covid_vaccination")[0])
    p = idx[pneumo]
    ctx.add(p, _ever(ctx, rng, p)[:, 0], codelist_codes("pneumococcal_vaccination")[0])
    # Flu vaccines of other people 65+ (in no COPD denominator).
    older = np.flatnonzero((ctx.age_last >= 65) & ~on & (rng.random(ctx.n) < 0.6))
    ctx.add(*_annual(rng, older, ctx.t0, ctx.t1, (9, 10, 11, 12)), codelist_codes("flu_vaccination")[0])


def _cyp(ctx: _Ctx, low: int = 0) -> np.ndarray:
    """Planted for a CYP indicator aged `low`-17: in the band (with a year's margin) in some period."""
    return (ctx.age_first <= 18) & (ctx.age_last >= max(0, low - 1))


def _asthma(ctx: _Ctx) -> None:
    """Asthma register (5-17); 85% medicated. Overuse: SABA monthly; otherwise SABA every ~4 months
    plus a preventer. Some resolved (off-register) children still get monthly SABA."""
    rng = ctx.rng(_ASTHMA)
    eligible = _cyp(ctx, 5)
    on = _register(ctx, rng, eligible, PLANTED_PREVALENCE["asthma"], codelist_codes("asthma")[0],
                   codelist_codes("asthma_resolved")[0], relapse=0.06, off_resolved=0.03)
    saba, preventer = codelist_codes("saba")[0], codelist_codes("asthma_preventer")[0]
    idx = np.flatnonzero(on)
    medicated = rng.random(idx.size) < ASTHMA_MEDICATED
    overuse = np.zeros(idx.size, dtype=bool)
    overuse[medicated] = _yes(ctx, rng, idx[medicated], PLANTED["CYP_ASTHMA_RELIEVER_OVERUSE"])
    mask = np.zeros(ctx.n, dtype=bool)
    ctx.flag("asthma_register", on, eligible)
    med = mask.copy()
    med[idx[medicated]] = True
    ctx.flag("asthma_medicated", med, on)
    over = mask.copy()
    over[idx[overuse]] = True
    ctx.flag("asthma_reliever_overuse", over, med)
    ctx.add(*_recurring(rng, idx[overuse], ctx.t0, ctx.t1, 25, 35), saba)
    some = idx[overuse & (rng.random(idx.size) < 0.5)]
    ctx.add(*_recurring(rng, some, ctx.t0, ctx.t1, 45, 100), preventer)
    calm = idx[medicated & ~overuse]
    ctx.add(*_recurring(rng, calm, ctx.t0, ctx.t1, 110, 130), saba)
    ctx.add(*_recurring(rng, calm, ctx.t0, ctx.t1, 45, 100), preventer)
    resolved = np.flatnonzero(eligible & ~on & (rng.random(ctx.n) < 0.02))
    ctx.add(*_recurring(rng, resolved, ctx.t0, ctx.t1, 25, 35), saba)
    d2 = _ever(ctx, rng, resolved, 2)
    ctx.add(resolved, d2[:, 0], codelist_codes("asthma")[0]), ctx.add(resolved, d2[:, 1], codelist_codes("asthma_resolved")[0])


def _diabetes(ctx: _Ctx) -> None:
    """Type 1 diabetes register (0-17); tech = real-time CGM prescribed every 45-100 days, or an
    insulin pump recorded once inside every extract (a few have both)."""
    rng = ctx.rng(_DIABETES)
    eligible = _cyp(ctx)
    on = _register(ctx, rng, eligible, PLANTED_PREVALENCE["type1_diabetes"], codelist_codes("type1_diabetes")[0],
                   codelist_codes("diabetes_resolved")[0], relapse=0.05, off_resolved=0.02)
    idx = np.flatnonzero(on)
    tech = _yes(ctx, rng, idx, PLANTED["CYP_DIABETES_TECH"])
    ctx.flag("type1_diabetes_register", on, eligible)
    ctx.flag("diabetes_tech", np.isin(np.arange(ctx.n), idx[tech]), on)
    u = rng.random(idx.size)
    cgm, pump = idx[tech & (u < 0.7)], idx[tech & (u >= 0.6)]
    ctx.add(*_recurring(rng, cgm, ctx.t0, ctx.t1, 45, 100), codelist_codes("cgm")[0])
    ctx.add(pump, _ever(ctx, rng, pump)[:, 0], codelist_codes("insulin_pump")[0])


def _epilepsy(ctx: _Ctx) -> None:
    """Epilepsy register (0-17); nurse contact every 45-100 days for "yes" people."""
    rng = ctx.rng(_EPILEPSY)
    eligible = _cyp(ctx)
    on = _register(ctx, rng, eligible, PLANTED_PREVALENCE["epilepsy"], codelist_codes("epilepsy")[0],
                   codelist_codes("epilepsy_resolved")[0], relapse=0.05, off_resolved=0.02)
    idx = np.flatnonzero(on)
    nurse = _yes(ctx, rng, idx, PLANTED["CYP_EPILEPSY_NURSE"])
    ctx.flag("epilepsy_register", on, eligible)
    ctx.flag("epilepsy_nurse", np.isin(np.arange(ctx.n), idx[nurse]), on)
    ctx.add(*_recurring(rng, idx[nurse], ctx.t0, ctx.t1, 45, 100), codelist_codes("epilepsy_specialist_nurse")[0])


def _plus_groups(ctx: _Ctx) -> None:
    """Membership = the group's first code once inside every extract (looked_after_child: under-18s)."""
    rng = ctx.rng(_PLUS)
    for group, planted in PLANTED_PLUS.items():
        eligible = ctx.age_first <= 17 if group == "looked_after_child" else np.ones(ctx.n, dtype=bool)
        member = eligible & (rng.random(ctx.n) < ctx.p(planted))
        idx = np.flatnonzero(member)
        ctx.add(idx, _ever(ctx, rng, idx)[:, 0], codelist_codes(group)[0])
        ctx.flag(f"plus_{group}", member, eligible)


def _encounters(ctx: _Ctx) -> None:
    """Background GP activity (about 6 entries a person a year) so the events file has a realistic mix."""
    rng = ctx.rng(_ENCOUNTERS)
    who, days = _poisson_days(rng, np.arange(ctx.n), 6.0, ctx.t0 + 1, ctx.t1)
    ctx.add(who, days, ENCOUNTERS, which=rng.integers(0, 2, who.size))


def _cancer(ctx: _Ctx) -> None:
    """Registrations of adults, dates uniform; stage X for 10%, else early (1/2) with the planted
    probability. 5% are C44 (non-melanoma skin, outside the cancer codelist) with the same stage mix,
    so the planted value holds whether or not they are counted."""
    rng = ctx.rng(_CANCER)
    who, days = _poisson_days(rng, np.flatnonzero(ctx.age_last >= 18), CANCER_INCIDENCE, ctx.t0 + 1, ctx.t1)
    k = who.size
    prefixes = np.array(codelist_codes("cancer_icd10"))
    prefix = np.where(rng.random(k) < 0.3, prefixes[0], prefixes[rng.integers(0, prefixes.size, k)])
    prefix = np.where(rng.random(k) < 0.05, "C44", prefix)
    icd10 = np.char.add(np.char.add(prefix.astype(str), "."), rng.integers(0, 10, k).astype(str))
    early = rng.random(k) < ctx.p(PLANTED["CANCER_EARLY_STAGE"], who)
    stage = np.where(early, rng.choice(["1", "2"], k), rng.choice(["3", "4"], k))
    stage = np.where(rng.random(k) < CANCER_STAGE_UNKNOWN, "X", stage)
    ctx.row("cancer_registrations", pl.DataFrame({"pidx": who.astype(np.int32), "day": days.astype(np.int32),
                                                  "icd10": icd10, "stage": stage}))


def _maternity(ctx: _Ctx) -> None:
    """Bookings of women 15-49 in every period (16-48 at the first), continuity planted per booking."""
    rng = ctx.rng(_MATERNITY)
    women = np.flatnonzero(ctx.female & (ctx.age_first >= 16) & (ctx.age_last <= 48))
    who, days = _poisson_days(rng, women, BOOKING_RATE, ctx.t0 + 1, ctx.t1)
    coc = np.where(rng.random(who.size) < ctx.p(PLANTED["MATERNITY_CONTINUITY"], who), "Y", "N")
    ctx.row("maternity_bookings", pl.DataFrame({"pidx": who.astype(np.int32), "day": days.astype(np.int32),
                                                "continuity_of_carer": coc}))


def _admissions(ctx: _Ctx) -> None:
    """Qualifying admissions as Poisson processes at the planted rates (tooth extractions: everyone
    0-10 at the first period; sharp-object assaults: 0-25), dates uniform over the timeline, and other
    admissions as noise. About 10% of qualifying codes are written HES-style without the dot (K021,
    F104, X999), which the codelists' prefix rule still matches. Noise never pairs K02 with F09/F10
    nor, for anyone under 27 at the first period, carries X99, so it never qualifies."""
    rng = ctx.rng(_ADMISSIONS)
    frames = []

    def frame(who, days, diag, cause, proc):  # "" = blank
        text = {"primary_diagnosis": diag, "external_cause": cause, "main_procedure": proc}
        frames.append(pl.DataFrame({"pidx": who.astype(np.int32), "day": days.astype(np.int32),
                                    **{c: pl.Series(np.asarray(v, dtype=str)) for c, v in text.items()}})
                      .with_columns(pl.when(pl.col(c) != "").then(pl.col(c)).alias(c) for c in text))

    def undot(codes: np.ndarray) -> np.ndarray:
        return np.where(rng.random(codes.size) < 0.10, np.char.replace(codes.astype(str), ".", ""), codes)

    kids = np.flatnonzero(ctx.age_first <= 10)
    rate = ctx.p(PLANTED["CYP_TOOTH_EXTRACTIONS"], kids)
    ctx.flag("tooth_extraction_rate", ctx.p(PLANTED["CYP_TOOTH_EXTRACTIONS"]), ctx.age_first <= 10)
    who, days = _poisson_days(rng, kids, rate, ctx.t0 + 1, ctx.t1)
    k = who.size
    diag = undot(np.array(["K02.1", "K02.9", "K02.5"])[rng.integers(0, 3, k)])
    proc = undot(np.array(["F10.4", "F10.1", "F09.1", "F09.3"])[rng.integers(0, 4, k)])
    frame(who, days, diag, np.full(k, ""), proc)

    young = np.flatnonzero(ctx.age_first <= 25)
    ctx.flag("sharp_object_assault_rate", ctx.p(PLANTED["SHARP_OBJECT_ASSAULT_ADMISSIONS"]), ctx.age_first <= 25)
    who, days = _poisson_days(rng, young, ctx.p(PLANTED["SHARP_OBJECT_ASSAULT_ADMISSIONS"], young), ctx.t0 + 1, ctx.t1)
    k = who.size
    diag = np.array(["S21.1", "S31.1", "S61.9", "S11.8", "S41.1"])[rng.integers(0, 5, k)]
    cause = undot(np.char.add("X99.", rng.integers(0, 10, k).astype(str)))
    proc = np.where(rng.random(k) < 0.6, "", np.array(["S57.1", "T30.1", "S47.2"])[rng.integers(0, 3, k)])
    frame(who, days, diag, cause, proc)

    # Noise: other diagnoses; dental caries without an extraction; an OPCS F10 after a tooth
    # fracture (not K02); ICD-10 F10 (alcohol, not an extraction); other external causes; X99 for older adults.
    who, days = _poisson_days(rng, np.arange(ctx.n), NOISE_ADMISSION_RATE, ctx.t0 + 1, ctx.t1)
    k = who.size
    kind = rng.integers(0, 8, k)
    diag = np.array(["J18.9", "I21.9", "K35.8", "N39.0", "R07.4", "K02.1", "S02.5", "F10.2"])[kind]
    proc = np.where(kind == 6, "F10.4", np.where((kind < 5) & (rng.random(k) < 0.4),
                                                  np.array(["H01.1", "K40.1", "W37.1"])[rng.integers(0, 3, k)], ""))
    cause = np.where(kind == 6, "W19.9", "")
    older = (ctx.age_first[who] >= 27) & (rng.random(k) < 0.05)
    diag = np.where(older, "S21.1", diag)
    cause = np.where(older, "X99.9", cause)
    proc = np.where(older, "", proc)
    frame(who, days, diag, cause, proc)
    for f in frames:
        ctx.row("hospital_admissions", f)


def _mh_contacts(ctx: _Ctx) -> None:
    """CYP MH access: `cyp_mh` contacts every 45-100 days for "yes" children; adult_mh noise for adults."""
    rng = ctx.rng(_MH)
    eligible = _cyp(ctx)
    yes = eligible & (rng.random(ctx.n) < ctx.p(PLANTED["CYP_MH_ACCESS"]))
    ctx.flag("cyp_mh_access", yes, eligible)
    who, days = _recurring(rng, np.flatnonzero(yes), ctx.t0, ctx.t1, 45, 100)
    ctx.row("mh_contacts", pl.DataFrame({"pidx": who.astype(np.int32), "day": days.astype(np.int32),
                                         "service": np.full(who.size, "cyp_mh")}))
    adults = np.flatnonzero((ctx.age_first >= 19) & (rng.random(ctx.n) < 0.08))
    who, days = _poisson_days(rng, adults, 4.0, ctx.t0 + 1, ctx.t1)
    ctx.row("mh_contacts", pl.DataFrame({"pidx": who.astype(np.int32), "day": days.astype(np.int32),
                                         "service": np.full(who.size, "adult_mh")}))


# ---------------------------------------------------------------------------------------------
# Police.uk street-level crimes (KNIFE_CRIME_RATE)
# ---------------------------------------------------------------------------------------------

def _police(con: duckdb.DuckDBPyConnection, landing_dir: Path, truth_dir: Path, lsoas: list[str],
            periods: tuple[date, ...], seed: int) -> None:
    """One police.uk-format file per month of the timeline, for the LSOAs where generated patients
    live: "Possession of weapons" at the planted rate per Census 2021 resident by the LSOA's IMD
    quintile, some other crimes and anti-social behaviour as noise, and a few rows without a location."""
    rng = np.random.default_rng([seed, 1_000_003])
    folder = landing_dir / "reference" / "police"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*-synthetic-street.csv"):
        old.unlink()
    con.execute("create or replace temp table gen_lsoas (lsoa21_code varchar)")
    con.executemany("insert into gen_lsoas values (?)", [[code] for code in lsoas])
    areas = con.execute("""
        select l.lsoa21_code, d.imd_quintile, cast(coalesce(p.residents, 0) as bigint) as residents,
               coalesce(g.lsoa21_name, l.lsoa21_code) as lsoa_name, coalesce(g.ltla22_name, '') as ltla
        from gen_lsoas l
        join ref.lsoa_deprivation d using (lsoa21_code)
        left join (select lsoa21_code, sum(usual_residents) as residents from ref.lsoa_population group by 1) p
            using (lsoa21_code)
        left join (select lsoa21_code, any_value(lsoa21_name) as lsoa21_name, any_value(ltla22_name) as ltla22_name
                   from ref.lsoa21_geography group by 1) g using (lsoa21_code)
        order by l.lsoa21_code""").pl()
    forces = {"Barrow-in-Furness": "Cumbria Constabulary", "South Lakeland": "Cumbria Constabulary",
              "Copeland": "Cumbria Constabulary", "Allerdale": "Cumbria Constabulary",
              "Craven": "North Yorkshire Police"}
    areas = areas.with_columns(
        pl.col("ltla").replace_strict(forces, default="Lancashire Constabulary").alias("force"),
        pl.Series(np.round(-2.7 + rng.random(areas.height) * 0.6, 6)).alias("lon"),
        pl.Series(np.round(53.6 + rng.random(areas.height) * 0.6, 6)).alias("lat"))
    rate = np.asarray(PLANTED["KNIFE_CRIME_RATE"])[areas["imd_quintile"].to_numpy() - 1]
    residents = areas["residents"].to_numpy().astype(float)
    first_month = add_months(month_end(periods[0].year, periods[0].month), -23)
    months = period_ends(periods[-1], 24 + len(periods) - 1)
    assert months[0] == first_month
    all_rows = []
    for m in months:
        label = m.strftime("%Y-%m")
        weapons = rng.poisson(rate * residents / 12)
        other = rng.poisson(1.5, areas.height)
        asb = rng.poisson(1.0, areas.height)
        a = np.concatenate([np.repeat(np.arange(areas.height), c) for c in (weapons, other, asb)])
        crime = np.concatenate([np.full(weapons.sum(), WEAPONS),
                                np.array(OTHER_CRIMES)[rng.integers(0, len(OTHER_CRIMES), other.sum())],
                                np.full(asb.sum(), "Anti-social behaviour")])
        k = a.size
        frame = pl.DataFrame({
            "Crime ID": _hex_ids(rng, k),
            "Month": np.full(k, label),
            "Reported by": areas["force"].to_numpy()[a],
            "Falls within": areas["force"].to_numpy()[a],
            "Longitude": np.char.mod("%.6f", areas["lon"].to_numpy()[a] + rng.normal(0, 0.002, k)),
            "Latitude": np.char.mod("%.6f", areas["lat"].to_numpy()[a] + rng.normal(0, 0.002, k)),
            "Location": np.char.add("On or near ", np.array(STREETS)[rng.integers(0, len(STREETS), k)]),
            "LSOA code": areas["lsoa21_code"].to_numpy()[a],
            "LSOA name": areas["lsoa_name"].to_numpy()[a],
            "Crime type": crime,
            "Last outcome category": np.array(OUTCOMES)[rng.integers(0, len(OUTCOMES), k)],
            "Context": np.full(k, ""),
        }, schema={c: pl.Utf8 for c in POLICE_HEADER})
        # No location: blank coordinates and LSOA (real files have these); some are weapons crimes.
        nowhere = 3
        frame = pl.concat([frame, pl.DataFrame({
            "Crime ID": _hex_ids(rng, nowhere), "Month": [label] * nowhere,
            "Reported by": ["Lancashire Constabulary"] * nowhere, "Falls within": ["Lancashire Constabulary"] * nowhere,
            "Longitude": [""] * nowhere, "Latitude": [""] * nowhere, "Location": ["No location"] * nowhere,
            "LSOA code": [""] * nowhere, "LSOA name": [""] * nowhere,
            "Crime type": [WEAPONS, "Other crime", "Violence and sexual offences"],
            "Last outcome category": ["Under investigation"] * nowhere, "Context": [""] * nowhere},
            schema={c: pl.Utf8 for c in POLICE_HEADER})])
        asb_rows = pl.col("Crime type") == "Anti-social behaviour"
        frame = frame.with_columns(pl.when(asb_rows).then(pl.lit("")).otherwise(pl.col(c)).alias(c)
                                   for c in ("Crime ID", "Last outcome category"))
        frame = frame.sort(["LSOA code", "Crime type", "Crime ID"]).with_columns(
            pl.when(pl.col(c) != "").then(pl.col(c)).alias(c) for c in POLICE_HEADER)  # blanks unquoted
        frame.write_csv(folder / f"{label}-synthetic-street.csv", quote_style="necessary")
        all_rows.append(frame)
    pl.concat(all_rows).write_parquet(truth_dir / "police_crimes.parquet")
    areas.with_columns(pl.Series("planted_rate", rate)).write_parquet(truth_dir / "police_lsoas.parquet")


def _hex_ids(rng: np.random.Generator, k: int) -> list[str]:
    raw = rng.bytes(32 * k).hex()
    return [raw[64 * i: 64 * (i + 1)] for i in range(k)]


# ---------------------------------------------------------------------------------------------
# Truth, snapshots and submissions
# ---------------------------------------------------------------------------------------------

def _with_person_id(persons: pl.DataFrame, frame: pl.DataFrame) -> pl.DataFrame:
    ids = persons["person_id"].gather(frame["pidx"])
    return frame.drop("pidx").insert_column(0, ids)


def _write_truth(truth_dir: Path, site_code: str, persons: pl.DataFrame, tables: dict[str, pl.DataFrame]) -> None:
    """`<site>_persons.parquet` (people and their planted flags) and one parquet per record table,
    `<site>_events.parquet` being the full event timeline (person_id, event_date, code, value)."""
    persons.write_parquet(truth_dir / f"{site_code}_persons.parquet")
    for kind, frame in tables.items():
        frame = _with_person_id(persons, frame)
        frame.with_columns(pl.col(pl.Enum).cast(pl.Utf8)).write_parquet(truth_dir / f"{site_code}_{kind}.parquet")


def _snapshot(persons: pl.DataFrame, tables: dict[str, pl.DataFrame], period_end: date) -> dict[str, pl.DataFrame]:
    """One period's submission: people registered by period_end (plus those who left or died in the
    24-month window, which the pipeline must exclude) and their records in the window."""
    window_start = add_months(period_end, -24)
    in_scope = ((pl.col("birth_date") <= period_end) & (pl.col("registration_start") <= period_end)
                & (pl.col("registration_end").is_null() | (pl.col("registration_end") > window_start))
                & (pl.col("date_of_death").is_null() | (pl.col("date_of_death") > window_start)))
    mask = persons.select(in_scope.alias("m"))["m"]
    # Someone who leaves or dies after period_end was still registered and alive on period_end.
    patients = persons.filter(mask).with_columns(
        pl.when(pl.col("registration_end") > period_end).then(None).otherwise(pl.col("registration_end")).alias("registration_end"),
        pl.when(pl.col("date_of_death") > period_end).then(None).otherwise(pl.col("date_of_death")).alias("date_of_death"),
    ).select(FILE_COLUMNS["patients"])
    out = {"patients": patients}
    for kind, frame in tables.items():
        when = next(c for c in frame.columns if c.endswith("_date"))
        f = frame.filter((pl.col(when) > window_start) & (pl.col(when) <= period_end)
                         & pl.lit(mask).gather(pl.col("pidx")))
        out[kind] = _with_person_id(persons, f).select(FILE_COLUMNS[kind])
    return out


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


@lru_cache(maxsize=None)
def _codelist(codelist_id: str) -> tuple[str, ...]:
    path = DBT_PROJECT_DIR / "seeds" / "codelists" / f"cl_{codelist_id}.csv"
    with path.open(newline="") as f:
        return tuple(row["code"] for row in csv.DictReader(f))


def codelist_codes(codelist_id: str) -> list[str]:
    """Codes of one codelist seed, in file order."""
    return list(_codelist(codelist_id))
