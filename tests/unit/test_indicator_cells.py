"""The vectorised cell statistics the dbt model calls agree with the scalar reference methods."""
import numpy as np
import pandas as pd
import pytest

from assets.statistics import indicator_values_with_cis, rate_ci, wilson_ci


def test_cells_use_wilson_for_percentages_and_byar_for_rates() -> None:
    cells = pd.DataFrame({
        "numerator": [65, 0, 1045, 3, 250], "denominator": [100, 0, 5000, 1500, 1200],
        "unit": ["%", "%", "%", "per 100,000", "per 1,000"], "multiplier": [100, 100, 100, 100_000, 1000]})
    out = indicator_values_with_cis(cells)
    assert out["lower_ci"][0] == pytest.approx(100 * 0.552544432968880, rel=1e-12)
    assert out["upper_ci"][2] == pytest.approx(100 * 0.220491303731890, rel=1e-12)
    assert np.isnan(out["value"][1]) and np.isnan(out["lower_ci"][1])
    for i in (3, 4):
        low, up = rate_ci(cells.numerator[i], cells.denominator[i], cells.multiplier[i])
        assert (out["lower_ci"][i], out["upper_ci"][i]) == pytest.approx((low, up), rel=1e-12)
        assert out["value"][i] == pytest.approx(cells.numerator[i] / cells.denominator[i] * cells.multiplier[i])
    assert out["lower_ci"][0] / 100 == pytest.approx(wilson_ci(65, 100)[0], rel=1e-12)


def test_rate_numerators_may_exceed_denominators() -> None:
    """Admission counts can exceed the people at risk; only % cells need x <= n."""
    out = indicator_values_with_cis(pd.DataFrame({"numerator": [12], "denominator": [10], "unit": ["per 100,000"],
                                                  "multiplier": [100_000]}))
    assert out["value"][0] == pytest.approx(120_000) and out["lower_ci"][0] < 120_000 < out["upper_ci"][0]
