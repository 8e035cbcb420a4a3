"""The synthetic generator: deterministic by seed, every file valid against the submission checks,
and its planted truth what `PLANTED*` says, both per person in every period (recomputed here from
the written timelines with the SPEC §5 definitions) and in frequency by IMD quintile."""
from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pytest

from assets.generator import (PLANTED, PLANTED_PLUS, PLANTED_PREVALENCE, add_months, codelist_codes,
                              generate_landing, month_end, sha256_file)
from checks.schemas import FILE_COLUMNS, FILE_KINDS, schema_for
from orchestration.settings import Settings, load_settings
from tests.conftest import env_for

LAST = date(2026, 10, 31)
SITES = ("lsc", "blackpool_central", "burnley_east")
PERSON_COLUMNS = {"person_id", "practice_code", "lsoa21_code", "lsoa_code", "imd_quintile", "sex", "birth_date",
                  "birth_month", "ethnic_category", "registration_start", "registration_end", "date_of_death"}
POLICE_HEADER = ("Crime ID,Month,Reported by,Falls within,Longitude,Latitude,Location,LSOA code,LSOA name,"
                 "Crime type,Last outcome category,Context")


def _generate(root: Path, people: int, months: int, seed: int, sites: tuple[str, ...] = SITES) -> Settings:
    settings = load_settings(env_for(root))
    generate_landing(settings, people_per_site=people, months=months, last_period=LAST, seed=seed,
                     sites=tuple(s for s in settings.sites if s.site_code in sites))
    return settings


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return _generate(tmp_path_factory.mktemp("small"), 300, 3, seed=11)


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """One big site, one period: enough people for the frequencies by quintile."""
    return _generate(tmp_path_factory.mktemp("large"), 40_000, 1, seed=5, sites=("lsc",))


def _files(landing: Path) -> dict[str, bytes]:
    return {str(p.relative_to(landing)): p.read_bytes() for p in sorted(landing.rglob("*")) if p.is_file()}


def _submissions(settings: Settings) -> list[Path]:
    return sorted(p for p in (settings.landing_dir / "sites").glob("*/*") if (p / "manifest.json").exists())


def _period_end(folder: Path) -> date:
    y, m = map(int, folder.name.split("-"))
    return month_end(y, m)


def _text(path: Path) -> pl.DataFrame:
    return pl.read_csv(path, infer_schema=False)


# --- determinism and file validity ------------------------------------------------------------

def test_same_seed_gives_byte_identical_files(small: Settings, tmp_path: Path) -> None:
    again = _generate(tmp_path / "again", 300, 3, seed=11)
    first, second = _files(small.landing_dir), _files(again.landing_dir)
    assert first.keys() == second.keys() and len(first) == 3 * 3 * 7 + 24 + 2
    assert [k for k in first if first[k] != second[k]] == []
    other = _generate(tmp_path / "other", 300, 3, seed=12)
    assert _files(other.landing_dir)["sites/lsc/2026-10/events.csv"] != first["sites/lsc/2026-10/events.csv"]


def test_every_file_passes_its_pandera_schema(small: Settings) -> None:
    folders = _submissions(small)
    assert [f"{f.parent.name}/{f.name}" for f in folders] == [
        f"{s}/{p}" for s in sorted(SITES) for p in ("2026-08", "2026-09", "2026-10")]
    for folder in folders:
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["period_end"] == _period_end(folder).isoformat()
        for kind in FILE_KINDS:
            path = folder / f"{kind}.csv"
            frame = _text(path)
            assert tuple(frame.columns) == FILE_COLUMNS[kind]
            assert frame.height > 0, path
            assert manifest["files"][path.name] == {"rows": frame.height, "sha256": sha256_file(path)}
            schema_for(kind, _period_end(folder)).validate(frame, lazy=True)


def test_every_submission_passes_the_cross_file_rules(small: Settings, tmp_path: Path) -> None:
    from assets.reference import load_reference
    from assets.staging import Staging
    from assets.submissions import discover, load_pending
    from checks.rules import Checked, rule_issues
    con = duckdb.connect(str(tmp_path / "build.duckdb"))
    load_reference(con, small)
    subs = discover(small.landing_dir)
    assert len(subs) == 9
    staging = Staging(tmp_path / "staged")
    for sub in subs:
        for kind in FILE_KINDS:
            assert load_pending(con, staging, sub, kind) == []
    names = {k: f"{k}.csv" for k in FILE_KINDS}
    found = rule_issues(con, staging, [Checked(s.submission_id, s.site_code, s.period_end, names) for s in subs])
    assert found == {s.submission_id: [] for s in subs}


def test_snapshots_hold_the_period_window_and_its_people_only(small: Settings) -> None:
    dates = {"events": "event_date", "cancer_registrations": "diagnosis_date", "maternity_bookings": "booking_date",
             "hospital_admissions": "admission_date", "mh_contacts": "contact_date"}
    for folder in _submissions(small):
        end = _period_end(folder)
        patients = _text(folder / "patients.csv")
        assert patients["person_id"].is_unique().all()
        for kind, col in dates.items():
            frame = _text(folder / f"{kind}.csv")
            assert frame["person_id"].is_in(patients["person_id"].implode()).all()
            d = frame[col].str.to_date()
            assert (d > add_months(end, -24)).all() and (d <= end).all()


def test_police_files_are_street_level_csvs_for_every_month(small: Settings) -> None:
    files = sorted((small.landing_dir / "reference" / "police").glob("*.csv"))
    assert [f.name for f in files][0] == "2024-09-synthetic-street.csv" and len(files) == 26
    assert files[-1].name == "2026-10-synthetic-street.csv"
    crimes = pl.concat([_text(f) for f in files])
    assert all(f.read_text().splitlines()[0] == POLICE_HEADER for f in files)
    assert crimes["LSOA code"].null_count() > 0
    assert {"Possession of weapons", "Anti-social behaviour", "Burglary"} <= set(crimes["Crime type"])
    patients = pl.concat([pl.read_parquet(small.landing_dir.parent / "generator_truth" / f"{s}_persons.parquet")
                          for s in SITES])
    assert set(crimes["LSOA code"].drop_nulls()) == set(patients["lsoa21_code"].drop_nulls())


# --- the planted states hold per person, in every period ----------------------------------------

def _codes(*names: str) -> list[str]:
    return [c for n in names for c in codelist_codes(n)]


def _recomputed(truth: Path, site: str, end: date) -> pl.DataFrame:
    """Each planted state recomputed from the written timelines with the SPEC §5 definitions, for
    the base population (registered and alive on `end`)."""
    persons = pl.read_parquet(truth / f"{site}_persons.parquet")
    ev = pl.read_parquet(truth / f"{site}_events.parquet").filter(
        (pl.col("event_date") > add_months(end, -24)) & (pl.col("event_date") <= end))
    w12 = pl.col("event_date") > add_months(end, -12)
    base = persons.filter(
        (pl.col("registration_start") <= end) & (pl.col("registration_end").is_null() | (pl.col("registration_end") > end))
        & (pl.col("date_of_death").is_null() | (pl.col("date_of_death") > end))
    ).with_columns(age=end.year - pl.col("birth_date").dt.year() - (end.month < pl.col("birth_date").dt.month()))

    def has(names: tuple[str, ...], window: bool) -> pl.DataFrame:
        e = ev.filter(pl.col("code").is_in(_codes(*names)) & (w12 if window else True))
        return e.select("person_id").unique().with_columns(pl.lit(True).alias("x"))

    def on_register(dx: str, res: str) -> pl.DataFrame:
        last = lambda name, c: ev.filter(pl.col("code").is_in(_codes(c))).group_by("person_id").agg(
            pl.col("event_date").max().alias(name))
        r = last("dx", dx).join(last("res", res), on="person_id", how="left")
        return r.filter(pl.col("res").is_null() | (pl.col("res") <= pl.col("dx"))).select("person_id")

    def latest_min(codes: str) -> pl.DataFrame:
        r = ev.filter(w12 & pl.col("code").is_in(_codes(codes)) & pl.col("value").is_not_null())
        return r.filter(pl.col("event_date") == pl.col("event_date").max().over("person_id")).group_by(
            "person_id").agg(pl.col("value").min().alias(codes))

    out = base.select("person_id", "age", *[c for c in persons.columns if c not in PERSON_COLUMNS])

    def flag(name: str, frame: pl.DataFrame) -> None:
        nonlocal out
        ids = frame["person_id"].implode()
        out = out.with_columns(pl.col("person_id").is_in(ids).alias(f"got_{name}"))

    for name, dx, res in (("hypertension_register", "hypertension", "hypertension_resolved"),
                          ("smi_register", "smi", "smi_remission"), ("copd_register", "copd", "copd_resolved"),
                          ("asthma_register", "asthma", "asthma_resolved"),
                          ("type1_diabetes_register", "type1_diabetes", "diabetes_resolved"),
                          ("epilepsy_register", "epilepsy", "epilepsy_resolved")):
        flag(name, on_register(dx, res))
    bp = latest_min("systolic_bp").join(latest_min("diastolic_bp"), on="person_id").join(
        base.select("person_id", "age"), on="person_id").filter(
        (pl.col("systolic_bp") <= pl.when(pl.col("age") >= 80).then(150).otherwise(140)) & (pl.col("diastolic_bp") <= 90))
    flag("bp_controlled", bp)
    six = ("bmi", "blood_pressure_check", "cholesterol", "glucose_hba1c", "smoking_status", "alcohol")
    checked = base.select("person_id")
    for c in six:
        checked = checked.join(has((c,), True), on="person_id", how="semi")
    flag("smi_health_check", checked)
    flag("copd_flu_vaccination", has(("flu_vaccination",), True))
    flag("copd_pneumo_vaccination", has(("pneumococcal_vaccination",), False))
    flag("copd_covid_vaccination", has(("covid_vaccination",), True))
    status = ev.filter(w12 & pl.col("code").is_in(_codes("current_smoker", "non_smoker_status"))).sort(
        "event_date").group_by("person_id").agg(pl.col("code").last())
    flag("current_smoker", status.filter(pl.col("code").is_in(codelist_codes("current_smoker"))))
    flag("smoking_cessation_support", has(("smoking_cessation_support",), True))
    flag("asthma_medicated", has(("saba", "asthma_preventer"), True))
    saba = ev.filter(w12 & pl.col("code").is_in(codelist_codes("saba"))).group_by("person_id").len()
    flag("asthma_reliever_overuse", saba.filter(pl.col("len") >= 6))
    flag("diabetes_tech", has(("cgm", "insulin_pump"), False))
    flag("epilepsy_nurse", has(("epilepsy_specialist_nurse",), True))
    mh = pl.read_parquet(truth / f"{site}_mh_contacts.parquet")
    flag("cyp_mh_access", mh.filter((pl.col("service") == "cyp_mh") & (pl.col("contact_date") > add_months(end, -12))
                                    & (pl.col("contact_date") <= end)))
    for group in PLANTED_PLUS:
        flag(f"plus_{group}", has((group,), False))
    return out


@pytest.mark.parametrize("site", SITES)
def test_planted_states_hold_in_every_period(small: Settings, site: str) -> None:
    truth = small.landing_dir.parent / "generator_truth"
    checked = 0
    for end in (date(2026, 8, 31), date(2026, 9, 30), date(2026, 10, 31)):
        got = _recomputed(truth, site, end)
        pairs = [(c, c) for c in ("hypertension_register", "smi_register", "copd_register", "asthma_register",
                                  "type1_diabetes_register", "epilepsy_register", "cyp_mh_access",
                                  *[f"plus_{g}" for g in PLANTED_PLUS])]
        cond = {  # planted flag -> the denominator it is planted for
            "bp_controlled": "hypertension_register", "smi_health_check": "smi_register",
            "copd_flu_vaccination": "copd_register", "copd_pneumo_vaccination": "copd_register",
            "copd_covid_vaccination": "copd_register", "diabetes_tech": "type1_diabetes_register",
            "epilepsy_nurse": "epilepsy_register", "asthma_medicated": "asthma_register",
            "asthma_reliever_overuse": "asthma_medicated", "smoking_cessation_support": "current_smoker"}
        got = got.with_columns(current_smoker=pl.col("smoking_status") == "current")
        for flag, planted_for in [*pairs, *cond.items()]:
            rows = got.filter(pl.col(flag).is_not_null() & pl.col(planted_for).fill_null(False))
            wrong = rows.filter(pl.col(flag) != pl.col(f"got_{flag}"))
            assert wrong.height == 0, (end, flag, wrong.select("person_id", "age", flag, f"got_{flag}").head())
            checked += rows.height
        smokers = got.filter(pl.col("smoking_status").is_not_null() & (pl.col("age") >= 15))
        assert (smokers["got_current_smoker"] == smokers["current_smoker"]).all(), end
    assert checked > 1000


# --- planted frequencies by quintile ----------------------------------------------------------

def _close(observed: list[tuple[int, int]], planted: tuple[float, ...], what: str, rate: bool = False) -> None:
    """Each quintile's estimate within 4.5 standard errors of the planted value."""
    for q, ((num, den), p) in enumerate(zip(observed, planted), start=1):
        assert den > 30, (what, q, den)
        se = math.sqrt(p * den) / den if rate else math.sqrt(p * (1 - p) / den)
        assert abs(num / den - p) < 4.5 * se, (what, q, num, den, num / den, p)


def _by_quintile(frame: pl.DataFrame, flag: str) -> list[tuple[int, int]]:
    g = frame.filter(pl.col(flag).is_not_null() & pl.col("imd_quintile").is_not_null()).group_by("imd_quintile").agg(
        pl.col(flag).sum().alias("num"), pl.len().alias("den")).sort("imd_quintile")
    assert g["imd_quintile"].to_list() == [1, 2, 3, 4, 5]
    return list(zip(g["num"].to_list(), g["den"].to_list()))


def test_planted_frequencies_in_the_truth_match_the_constants(large: Settings) -> None:
    truth = large.landing_dir.parent / "generator_truth"
    persons = pl.read_parquet(truth / "lsc_persons.parquet").with_columns(
        current_smoker=pl.when(pl.col("smoking_status").is_not_null()).then(pl.col("smoking_status") == "current"))
    flags = {"HYP_PREVALENCE": "hypertension_register", "HYP_TREATED_TO_TARGET": "bp_controlled",
             "SMI_HEALTH_CHECK": "smi_health_check", "COPD_FLU_VACCINATION": "copd_flu_vaccination",
             "COPD_PNEUMO_VACCINATION": "copd_pneumo_vaccination", "COPD_COVID_VACCINATION": "copd_covid_vaccination",
             "SMOKING_CESSATION_SUPPORT": "smoking_cessation_support",
             "CYP_ASTHMA_RELIEVER_OVERUSE": "asthma_reliever_overuse", "CYP_DIABETES_TECH": "diabetes_tech",
             "CYP_EPILEPSY_NURSE": "epilepsy_nurse", "CYP_MH_ACCESS": "cyp_mh_access"}
    for indicator, flag in flags.items():
        _close(_by_quintile(persons, flag), PLANTED[indicator], indicator)
    registers = {"hypertension": "hypertension_register", "smi": "smi_register", "copd": "copd_register",
                 "asthma": "asthma_register", "type1_diabetes": "type1_diabetes_register",
                 "epilepsy": "epilepsy_register", "current_smoker": "current_smoker"}
    assert registers.keys() == PLANTED_PREVALENCE.keys()
    for name, flag in registers.items():
        _close(_by_quintile(persons, flag), PLANTED_PREVALENCE[name], name)
    for group in PLANTED_PLUS:
        _close(_by_quintile(persons, f"plus_{group}"), PLANTED_PLUS[group], group)

    q = persons.select("person_id", "imd_quintile")
    cancers = pl.read_parquet(truth / "lsc_cancer_registrations.parquet").join(q, on="person_id").filter(
        pl.col("stage") != "X").with_columns(early=pl.col("stage").is_in(["1", "2"]))
    _close(_by_quintile(cancers, "early"), PLANTED["CANCER_EARLY_STAGE"], "CANCER_EARLY_STAGE")
    bookings = pl.read_parquet(truth / "lsc_maternity_bookings.parquet").join(q, on="person_id").with_columns(
        coc=pl.col("continuity_of_carer") == "Y")
    _close(_by_quintile(bookings, "coc"), PLANTED["MATERNITY_CONTINUITY"], "MATERNITY_CONTINUITY")


def test_planted_rates_in_the_truth_match_the_constants(large: Settings) -> None:
    """Qualifying admissions per person-year at risk (alive, from the timeline start), and weapons
    crimes per resident-year."""
    truth = large.landing_dir.parent / "generator_truth"
    persons = pl.read_parquet(truth / "lsc_persons.parquet")
    t0, t1 = add_months(LAST, -24), LAST
    end = pl.min_horizontal(pl.col("registration_end").fill_null(t1), pl.col("date_of_death").fill_null(t1), pl.lit(t1))
    start = pl.max_horizontal(pl.col("birth_date"), pl.lit(t0 + date.resolution))
    persons = persons.with_columns(years=((end - start).dt.total_days() + 1).clip(0) / 365.25)
    admissions = pl.read_parquet(truth / "lsc_hospital_admissions.parquet").with_columns(
        pl.col(c).str.replace_all(".", "", literal=True) for c in ("primary_diagnosis", "external_cause", "main_procedure"))
    tooth = admissions.filter(pl.col("primary_diagnosis").str.starts_with("K02")
                              & pl.col("main_procedure").str.contains("^F(09|10)"))
    sharp = admissions.filter(pl.col("external_cause").str.starts_with("X99"))
    for indicator, rows, flag in (("CYP_TOOTH_EXTRACTIONS", tooth, "tooth_extraction_rate"),
                                  ("SHARP_OBJECT_ASSAULT_ADMISSIONS", sharp, "sharp_object_assault_rate")):
        at_risk = persons.filter(pl.col(flag).is_not_null() & pl.col("imd_quintile").is_not_null())
        counts = rows.join(at_risk.select("person_id", "imd_quintile"), on="person_id").group_by("imd_quintile").len()
        years = at_risk.group_by("imd_quintile").agg(pl.col("years").sum())
        g = years.join(counts, on="imd_quintile", how="left").sort("imd_quintile")
        observed = list(zip(g["len"].fill_null(0).to_list(), g["years"].to_list()))
        _close(observed, PLANTED[indicator], indicator, rate=True)

    lsoas = pl.read_parquet(truth / "police_lsoas.parquet")
    crimes = pl.read_parquet(truth / "police_crimes.parquet").filter(pl.col("Crime type") == "Possession of weapons")
    months = crimes["Month"].n_unique()
    per_lsoa = crimes.group_by("LSOA code").len().rename({"LSOA code": "lsoa21_code"})
    g = lsoas.join(per_lsoa, on="lsoa21_code", how="left").group_by("imd_quintile").agg(
        pl.col("len").fill_null(0).sum(), (pl.col("residents").sum() * months / 12).alias("years")).sort("imd_quintile")
    _close(list(zip(g["len"].to_list(), g["years"].to_list())), PLANTED["KNIFE_CRIME_RATE"], "KNIFE_CRIME_RATE", rate=True)


def test_generator_refuses_more_than_24_months(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="24"):
        generate_landing(replace(load_settings(env_for(tmp_path)), sites=()), months=25)
