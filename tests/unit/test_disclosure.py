import numpy as np
import pandas as pd
import pytest
from hypothesis import given, strategies as st

from checks.disclosure import PublicationRefused, apply_disclosure_control, assert_publishable, comparator_disclosive


def _cells(num: list[int], den: list[int]) -> pd.DataFrame:
    n = len(num)
    return pd.DataFrame({
        "site_code": ["s"] * n, "period_end": ["2026-10-31"] * n, "indicator_id": ["HYP_PREVALENCE"] * n,
        "breakdown": ["imd_quintile"] * n, "breakdown_value": [str(i) for i in range(n)],
        "numerator": num, "denominator": den,
        "value": [x / y * 100 if y else np.nan for x, y in zip(num, den)],
        "lower_ci": [0.0] * n, "upper_ci": [100.0] * n,
    })


def test_small_counts_suppressed_and_others_rounded() -> None:
    out = apply_disclosure_control(_cells([0, 1, 7, 8, 12, 13, 100], [10, 100, 100, 100, 100, 100, 102]))
    assert out["suppressed"].tolist() == [False, True, True, False, False, False, False]
    assert out["numerator"].tolist()[3:] == [10, 10, 15, 100]
    assert pd.isna(out["numerator"][1]) and pd.isna(out["value"][1]) and pd.isna(out["upper_ci"][2])
    assert out["denominator"].tolist()[-1] == 100  # 102 rounds down
    # values stay as computed from the unrounded counts
    assert out["value"][4] == pytest.approx(12.0)


def test_suppressed_denominator_nulls_the_value() -> None:
    out = apply_disclosure_control(_cells([0], [5]))
    assert out["suppressed"][0] and pd.isna(out["denominator"][0]) and pd.isna(out["value"][0])


@given(st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 2000)), min_size=1, max_size=30))
def test_no_published_count_is_small_or_unrounded(pairs: list[tuple[int, int]]) -> None:
    num = [min(a, b) for a, b in pairs]
    den = [max(a, b) for a, b in pairs]
    out = apply_disclosure_control(_cells(num, den))
    for col in ("numerator", "denominator"):
        published = out[col].dropna()
        assert not published.between(1, 7).any()
        assert (published % 5 == 0).all()
    assert out.loc[out["suppressed"], ["value", "lower_ci", "upper_ci"]].isna().all().all()
    assert_publishable("indicator_values", out)


@pytest.mark.parametrize("column", ["person_id", "nhs_number", "NHSNumber", "date_of_birth", "postcode", "patient_id"])
def test_gate_refuses_identifier_columns(column: str) -> None:
    frame = apply_disclosure_control(_cells([10], [20])).assign(**{column: ["x"]})
    with pytest.raises(PublicationRefused, match=column):
        assert_publishable("indicator_values", frame)


def test_gate_refuses_rows_finer_than_a_cell_and_unsuppressed_counts() -> None:
    frame = apply_disclosure_control(_cells([10, 10], [20, 20]))
    frame["breakdown_value"] = "1"
    with pytest.raises(PublicationRefused, match="finer than a cell"):
        assert_publishable("indicator_values", frame)
    raw = _cells([3], [20]).assign(suppressed=False)
    with pytest.raises(PublicationRefused, match="numerator"):
        assert_publishable("indicator_values", raw)


def test_a_suppressed_row_carries_no_comparator_and_the_gate_checks_it() -> None:
    cells = _cells([3, 40], [50, 80]).assign(comparator_value=[6.0, 50.0])  # 6.0 would be 3/50 again
    out = apply_disclosure_control(cells)
    assert pd.isna(out["comparator_value"][0]) and out["comparator_value"][1] == 50.0
    leaked = out.assign(comparator_value=[6.0, 50.0])
    with pytest.raises(PublicationRefused, match="suppressed cell still carries"):
        assert_publishable("indicator_values", leaked)


def test_a_comparator_of_one_site_or_of_small_combined_counts_would_disclose() -> None:
    numerator, denominator = pd.Series([3, 30, 30, 0, 5]), pd.Series([44, 200, 200, 200, 400])
    sites = pd.Series([1, 2, 1, 3, 2])
    assert comparator_disclosive(numerator, denominator, sites).tolist() == [True, False, True, False, True]
