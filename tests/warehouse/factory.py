"""Small Publication objects built directly, without the pipeline: two indicators, a handful of
breakdowns (practice cells included, which only site schemas may show), counts that are often 1-7."""
from __future__ import annotations

import numpy as np
import pandas as pd

from assets.publish import content_hash
from assets.warehouse import INEQUALITY_COLUMNS, Publication
from checks.disclosure import apply_disclosure_control

PERIODS = ("2026-09-30", "2026-10-31")
INDICATORS = ("HYP_TREATED_TO_TARGET", "HYP_PREVALENCE")
CELLS = (("overall", "overall"), ("core20", "core20"), ("core20", "not_core20"), ("sex", "female"),
         ("sex", "male"), ("imd_quintile", "1"), ("practice", "P00001"), ("practice", "P00002"))


def make_publication(sites: tuple[str, ...] = ("aa", "bb"), periods: tuple[str, ...] = PERIODS,
                     variant: int = 0, withheld: tuple[tuple[str, str], ...] = ()) -> Publication:
    """Deterministic by (sites, periods, variant); `withheld` site-periods are left out, with a reason."""
    rng = np.random.default_rng(variant)
    keep = [(s, p) for s in sites for p in periods if (s, p) not in withheld]
    values = apply_disclosure_control(cells(keep, rng))
    pub = Publication(
        indicator_values=values,
        inequality_summary=_summary(keep, rng),
        indicators=pd.DataFrame({"indicator_id": list(INDICATORS),
                                 "indicator_name": ["Treated to target", "Prevalence"],
                                 "unit": ["%", "%"], "direction": ["higher", "neither"], "target": [80.0, np.nan]}),
        sites=pd.DataFrame({"site_code": list(sites), "site_name": [f"Site {s.upper()}" for s in sites],
                            "programme": ["core20plus_connectors"] * len(sites), "practices": [2] * len(sites)}),
        data_quality=_data_quality(sites, withheld, variant),
        published=[(s, p) for s, p in keep],
        withheld=[{"site_code": s, "period_end": p, "reason": "submission quarantined: patients.csv, row 6, column sex"}
                  for s, p in withheld],
        run_id=f"run-{variant}",
        code_version="test",
        input_checksums={"reference": "ref", **{f"{s}:{p}": f"sha-{s}-{p}-{variant}" for s, p in keep}},
    )
    pub.content_hash = content_hash(pub)
    return pub


def cells(keep: list[tuple[str, str]], rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for site, period in keep:
        for indicator in INDICATORS:
            for breakdown, value in CELLS:
                den = int(rng.integers(1, 60))
                num = int(rng.integers(0, den + 1))
                rate = 100 * num / den
                rows.append({"site_code": site, "period_end": pd.Timestamp(period), "indicator_id": indicator,
                             "breakdown": breakdown, "breakdown_value": value, "numerator": num, "denominator": den,
                             "value": rate, "lower_ci": max(rate - 9.5, 0.0), "upper_ci": min(rate + 9.5, 100.0),
                             "unit": "%", "target": 80.0, "comparator_value": 41.25})
    return pd.DataFrame(rows)


def _summary(keep: list[tuple[str, str]], rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for site, period in keep:
        for indicator in INDICATORS:
            a, b = rng.uniform(20, 60, 2)
            rows.append({"site_code": site, "period_end": pd.Timestamp(period), "indicator_id": indicator,
                         "core20_value": a, "not_core20_value": b, "absolute_gap": a - b, "relative_gap": a / b,
                         "sii": 3.5, "sii_lower_ci": 1.0, "sii_upper_ci": 6.0, "rii": np.nan, "rii_lower_ci": np.nan,
                         "rii_upper_ci": np.nan, "spc_variation": "common_cause", "spc_assurance": "inconsistent"})
    return pd.DataFrame(rows, columns=[c for c in INEQUALITY_COLUMNS if c != "publication_id"])


def _data_quality(sites: tuple[str, ...], withheld: tuple[tuple[str, str], ...], variant: int) -> pd.DataFrame:
    rows = [{"run_id": f"run-{variant}", "site_code": s, "period_end": "*", "stage": "great_expectations",
             "check_name": "great_expectations", "severity": "error", "passed": True, "file": None, "row": None,
             "column": None, "message": "35 expectations passed"} for s in sites]
    rows += [{"run_id": f"run-{variant}", "site_code": s, "period_end": p, "stage": "ingest", "check_name": "schema",
              "severity": "error", "passed": False, "file": "patients.csv", "row": 6, "column": "sex",
              "message": "sex 'X' not in M, F, U"} for s, p in withheld]
    return pd.DataFrame(rows).astype({"row": "Int64"})
