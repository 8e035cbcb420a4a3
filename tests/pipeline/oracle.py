"""An independent computation of the hypertension indicators from the generator's planted truth
(its full person-level timeline and its own IMD quintile per person), in plain pandas: no SQL,
no dbt, no code shared with the pipeline. Disclosure control is re-implemented here too."""
from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

SYSTOLIC = {"271649006", "72313002"}
DIASTOLIC = {"271650006", "1091811000000102"}


def months_before(d: date, months: int) -> date:
    y, m = divmod(d.month - 1 - months, 12)
    year, month = d.year + y, m + 1
    last = pd.Timestamp(year=year, month=month, day=1).days_in_month
    return date(year, month, min(d.day, last)) if d.day < 28 else date(year, month, last)


def hypertension_cells(truth_dir: Path, site: str, period_end: date, site_practices: set[str]) -> pd.DataFrame:
    persons = pd.read_parquet(truth_dir / f"{site}_persons.parquet")
    events = pd.read_parquet(truth_dir / f"{site}_events.parquet")
    p = pd.Timestamp(period_end)
    for col in ("birth_date", "registration_start", "registration_end", "date_of_death"):
        persons[col] = pd.to_datetime(persons[col])
    events["event_date"] = pd.to_datetime(events["event_date"])
    alive = (persons.birth_date <= p) & (persons.registration_start <= p) \
        & (persons.registration_end.isna() | (persons.registration_end > p)) \
        & (persons.date_of_death.isna() | (persons.date_of_death > p)) & persons.practice_code.isin(site_practices)
    base = persons[alive].copy()
    base["age"] = [(p.year - b.year) - ((p.month, p.day) < (b.month, b.day)) for b in base.birth_date]
    adults = base[base.age >= 18].set_index("person_id")

    extract = events[(events.event_date > pd.Timestamp(months_before(period_end, 24))) & (events.event_date <= p)]
    diag = extract[extract.code == "38341003"].groupby("person_id").event_date.max()
    resolved = extract[extract.code == "162659009"].groupby("person_id").event_date.max()
    on_register = {pid for pid, d in diag.items() if pid not in resolved or resolved[pid] <= d}

    window = extract[extract.event_date > pd.Timestamp(months_before(period_end, 12))]
    latest = {}
    for name, codes in (("sys", SYSTOLIC), ("dia", DIASTOLIC)):
        r = window[window.code.isin(codes) & window.value.notna()]
        last_day = r.groupby("person_id").event_date.transform("max")
        latest[name] = r[r.event_date == last_day].groupby("person_id").value.min()

    adults["on_register"] = adults.index.isin(on_register)
    sys_v, dia_v = latest["sys"].reindex(adults.index), latest["dia"].reindex(adults.index)
    limit = np.where(adults.age >= 80, 150, 140)
    adults["controlled"] = (sys_v <= limit) & (dia_v <= 90)
    adults["quintile"] = adults.imd_quintile.map(lambda q: "unknown" if pd.isna(q) else str(int(q)))
    adults["core20"] = adults.imd_quintile.map(lambda q: "unknown" if pd.isna(q) else ("core20" if q == 1 else "not_core20"))

    rows = []
    for indicator, denominator, numerator in (
            ("HYP_PREVALENCE", adults, adults.on_register),
            ("HYP_TREATED_TO_TARGET", adults[adults.on_register], adults.on_register & adults.controlled)):
        den = denominator.assign(num=numerator.reindex(denominator.index).astype(int), overall="overall")
        for breakdown, col in (("overall", "overall"), ("imd_quintile", "quintile"), ("core20", "core20")):
            g = den.groupby(col).num.agg(["sum", "count"])
            rows += [{"indicator_id": indicator, "breakdown": breakdown, "breakdown_value": v,
                      "numerator": int(r["sum"]), "denominator": int(r["count"])} for v, r in g.iterrows()]
    return pd.DataFrame(rows)


def disclose(count: int) -> float | None:
    """SPEC §9, written out again: 1-7 suppressed, others to the nearest 5 (halves up)."""
    if 1 <= count <= 7:
        return None
    return float(int(count / 5 + 0.5) * 5)
