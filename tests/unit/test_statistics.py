"""Tests for assets/statistics.py.

Reference values come from the R package PHEindicatormethods
(github.com/ukhsa-collaboration/PHEindicatormethods); the file each one was
taken from is cited beside it.  Values printed by R to 7 significant figures
are compared at 1e-6 relative; exact-arithmetic references at 1e-9.  SII
confidence limits are Monte Carlo (R's RNG cannot be replayed), so they are
compared at the package's own test tolerance of 5% (tests/testthat/testSII.R,
``tol <- 0.05``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from assets.statistics import (
    ESP2013,
    byar_ci,
    byar_ci_arrays,
    dsr,
    gap_trend_label,
    gaps,
    rate_ci,
    rate_ci_arrays,
    sii,
    sii_from_counts,
    special_cause_flags,
    wilson_ci,
    wilson_ci_arrays,
    xmr,
)

EXACT = 1e-9
PRINTED = 1e-6  # R/knitr output printed to 7 significant figures
MC_TOL = 0.05  # package's SII test tolerance


def close(actual: float, expected: float, rel: float = EXACT) -> bool:
    return math.isclose(actual, expected, rel_tol=rel)


# ---------------------------------------------------------------------------
# Wilson
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "n", "lower", "upper"),
    [
        (65, 100, 0.552544432968880, 0.736357517569025),
        (1045, 5000, 0.197955498800133, 0.220491303731890),
    ],
)
def test_wilson_reference(x, n, lower, upper):
    lo, hi = wilson_ci(x, n)
    assert close(lo, lower) and close(hi, upper)


# tests/testthat/NCMP_testdata.csv (the package's prevalence_data): Count,
# Measured and the 95% Wilson LCL/UCL (percent) for 2006/07, deciles 1-10.
NCMP_607_Y6 = {
    "measured": [34353, 32112, 27715, 25372, 23889, 23260, 23180, 24193, 23609, 24488],
    "count": [7287, 6881, 5656, 4868, 4176, 3876, 3617, 3546, 3314, 2960],
    "rate": [21.2121212121212, 21.4281265570503, 20.4077214504781, 19.1865048084503,
             17.4808489262841, 16.6638005159071, 15.6039689387403, 14.6571322283305,
             14.0370197805921, 12.0875530872264],
    "lcl": [20.7830499225555, 20.9827711465288, 19.9373517258999, 18.7066648694241,
            17.0044640703038, 16.190410576997, 15.1425075468518, 14.2170753783533,
            13.5997670936376, 11.6852009907382],
    "ucl": [21.6476300812899, 21.8803170788612, 20.8862933590925, 19.675673996565,
            17.9676905527535, 17.148199783417, 16.0768288675927, 15.1084110529924,
            14.4859737537153, 12.5017980504761],
}
NCMP_607_R = {
    "measured": [36111, 31803, 26681, 24184, 23023, 21506, 22197, 23679, 23271, 23464],
    "count": [4362, 3734, 3032, 2561, 2304, 2024, 1938, 1981, 1856, 1635],
    "rate": [12.0794217828363, 11.7410307203723, 11.3638919080994, 10.5896460469732,
             10.0073839204274, 9.41132707151493, 8.730909582376, 8.36606275602855,
             7.97559193846418, 6.96812137742925],
    "lcl": [11.7473271937339, 11.3918517825361, 10.9886239767609, 10.2080757108839,
            9.62638859468932, 9.02830437346462, 8.36665612937408, 8.02012076260088,
            7.63441201710209, 6.64933849950753],
    "ucl": [12.4195834343315, 12.0994510822713, 11.7502836842961, 10.9837345114021,
            10.4017228033421, 9.80884729303046, 9.10944479237356, 8.72551115710111,
            8.33064392278473, 7.30099206057122],
}


@pytest.mark.parametrize("data", [NCMP_607_Y6, NCMP_607_R], ids=["year6", "reception"])
def test_wilson_arrays_match_package_test_data(data):
    lower, upper = wilson_ci_arrays(data["count"], data["measured"])
    np.testing.assert_allclose(lower * 100, data["lcl"], rtol=EXACT)
    np.testing.assert_allclose(upper * 100, data["ucl"], rtol=EXACT)


def test_wilson_edge_cases():
    assert all(math.isnan(v) for v in wilson_ci(0, 0))
    assert wilson_ci(3, 10, confidence=1.0) == (0.0, 1.0)  # package: 100% -> full range
    assert wilson_ci(0, 10)[0] == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(ValueError):
        wilson_ci(11, 10)
    with pytest.raises(ValueError):
        wilson_ci(-1, 10)


# ---------------------------------------------------------------------------
# Byar's / exact counts and rates
# ---------------------------------------------------------------------------


def test_byar_reference():
    lo, hi = byar_ci(65)
    assert close(lo, 50.1631877104595) and close(hi, 82.8491385459398)


def test_rate_exact_reference():
    lo, hi = rate_ci(1, 100, multiplier=100)
    assert close(lo, 0.0253178079842899) and close(hi, 5.57164339093890)


def test_rate_ci_is_count_ci_scaled():
    for x in (0, 3, 9, 10, 65, 1045):
        c_lo, c_hi = byar_ci(x)
        r_lo, r_hi = rate_ci(x, 2500, multiplier=1000)
        assert close(r_lo, c_lo / 2500 * 1000) and close(r_hi, c_hi / 2500 * 1000)


def test_zero_count_and_zero_population():
    lo, hi = byar_ci(0)
    assert lo == 0.0 and close(hi, 3.68887945411394)  # qchisq(0.975, 2) / 2
    assert all(math.isnan(v) for v in rate_ci(5, 0))


def test_method_switches_at_ten():
    lo9, _ = byar_ci_arrays([9.0])
    lo10, _ = byar_ci_arrays([10.0])
    from scipy import stats

    assert close(float(lo9[0]), stats.chi2.ppf(0.025, 18) / 2)
    z = stats.norm.ppf(0.975)
    assert close(float(lo10[0]), 10 * (1 - 1 / 90 - z / (3 * math.sqrt(10))) ** 3)


# ---------------------------------------------------------------------------
# DSR
# ---------------------------------------------------------------------------

DSR_COUNTS = [127, 25, 18, 21, 12, 27, 48, 27, 29, 32, 32, 34, 45, 65, 38, 68, 74, 82, 91]
DSR_POPS = [636, 558, 609, 543, 384, 594, 669, 843, 660, 576, 606, 522, 426, 273, 300,
            288, 153, 123, 207]


def test_dsr_reference():
    result = dsr(DSR_COUNTS, DSR_POPS)
    assert result is not None
    assert close(result.value, 10430.247991469)
    assert close(result.lower, 9717.709067986)
    assert close(result.upper, 11178.940915479)
    assert result.total_count == sum(DSR_COUNTS)
    assert result.total_population == sum(DSR_POPS)


def test_esp2013():
    assert list(ESP2013) == [5000, 5500, 5500, 5500, 6000, 6000, 6500, 7000, 7000, 7000,
                             7000, 6500, 6000, 5500, 5000, 4000, 2500, 1500, 1000]
    assert sum(ESP2013) == 100_000


def test_dsr_suppressed_below_ten_and_missing_counts_are_zero():
    counts = [0.0] * 19
    counts[3] = 9
    assert dsr(counts, DSR_POPS) is None
    counts[5] = float("nan")  # package's na.zero
    counts[6] = 1
    assert dsr(counts, DSR_POPS) is not None


# ---------------------------------------------------------------------------
# SII / RII
# ---------------------------------------------------------------------------

# Reference supplied in the brief (LE deciles, value_type 0).  The SEs are the
# 2 d.p. StandardError column of the phe_sii example in R/SII_function.R; the
# exact test-data SEs live in tests/testthat/testdata_SII.xlsx (binary, not
# readable here), hence the package's 5% tolerance on the limits.
LE_POPS = [7291, 7997, 6105, 7666, 5790, 6934, 5918, 5974, 7147, 7534]
LE_VALUES = [75.933459010308, 78.344238272784, 83.836063104165, 83.637539966493,
             80.465503152956, 81.115675985702, 81.693083571856, 84.190006206099,
             80.595564108147, 86.289434957862]
LE_SES = [1.64, 1.58, 1.51, 1.78, 1.7, 1.56, 1.37, 1.4, 2.43, 1.57]


def test_sii_reference_life_expectancy():
    result = sii(LE_VALUES, LE_POPS, LE_SES)
    assert close(result.sii, 6.934616473669)
    assert close(result.rii, 1.088818080445)
    assert close(result.sii_lower, 3.13, MC_TOL)
    assert close(result.sii_upper, 10.76, MC_TOL)
    assert result.rii_lower < result.rii < result.rii_upper


# tests/testthat/LE_testdata.csv (the package's LE_data), Sex 1; expected
# values from the rendered vignette inst/doc/WorkedExamples_phe_sii.html
# (phe_sii, value_type 0, se = SE, 1000 reps).
LE_DATA = {
    "E06000001": (
        [13837, 14519, 14940, 14599, 12311, 13196, 13335, 13388, 13685, 11779],
        [70.56313911, 72.61347473, 75.06710359, 75.20662276, 76.23469045, 75.21801932,
         77.09240397, 79.84156222, 80.81329918, 82.73763832],
        [1.133868862, 1.020288759, 1.108685178, 1.485618539, 1.311653285, 1.169033147,
         1.306645801, 1.090905616, 0.979426096, 1.319452272],
        (11.68886, 9.215442, 14.07460, 7.896985, 15.27278),
    ),
    "E06000002": (
        [21675, 20065, 19750, 24713, 20112, 19618, 22408, 19752, 18939, 19312],
        [70.54853186, 71.57155734, 72.48698671, 73.51985519, 73.14605425, 76.15898712,
         78.65444871, 80.56476961, 80.85486627, 79.9711253],
        [0.947488056, 1.043688022, 0.969320245, 1.023567868, 1.006757968, 0.906037647,
         0.724013864, 1.118131371, 0.848327099, 0.94159082],
        (12.54785, 10.579679, 14.57307, 9.433565, 15.43696),
    ),
}


@pytest.mark.parametrize("area", sorted(LE_DATA))
def test_sii_matches_package_vignette_le_data(area):
    pops, values, ses, (point, lo95, hi95, lo998, hi998) = LE_DATA[area]
    r95 = sii(values, pops, ses)
    r998 = sii(values, pops, ses, confidence=0.998)
    assert close(r95.sii, point, PRINTED)
    assert close(r95.sii_lower, lo95, MC_TOL) and close(r95.sii_upper, hi95, MC_TOL)
    assert close(r998.sii_lower, lo998, MC_TOL) and close(r998.sii_upper, hi998, MC_TOL)


def test_sii_from_cls_equals_sii_from_se_when_se_derived_the_same_way():
    z = 1.959963984540054
    lower = [v - 1.3 * z for v in LE_VALUES]
    upper = [v + 1.3 * z for v in LE_VALUES]
    from_cls = sii(LE_VALUES, LE_POPS, lower_cls=lower, upper_cls=upper, reps=5000)
    from_se = sii(LE_VALUES, LE_POPS, [1.3] * 10, reps=5000)
    for a, b in zip(vars(from_cls).values(), vars(from_se).values()):
        assert close(a, b, 1e-9)


# tests/testthat/DSR_testdata.csv (the package's DSR_data), Period 2010;
# expected from the rendered vignette (value_type 1, transform = TRUE,
# rii = TRUE, 100,000 reps).
DSR_2010 = {
    "pops": [1434002, 1450590, 1453827, 1440980, 1457780],
    "values": [150.2200205, 131.0221747, 127.4954973, 130.494241, 135.4664241],
    "lower": [147.3194185, 128.3676972, 125.0421198, 128.2469515, 133.2469515],
    "upper": [153.1498241, 133.7051129, 129.975513, 132.7657553, 137.8657553],
}


def test_sii_rate_log_transform_matches_vignette():
    r = sii(DSR_2010["values"], DSR_2010["pops"], lower_cls=DSR_2010["lower"],
            upper_cls=DSR_2010["upper"], value_type=1, transform=True)
    assert close(r.sii, -14.03684, PRINTED)
    assert close(r.rii, 0.9010655, PRINTED)
    assert close(r.sii_lower, -17.95990, MC_TOL) and close(r.sii_upper, -10.126662, MC_TOL)
    assert close(r.rii_lower, 0.8752420, MC_TOL) and close(r.rii_upper, 0.9275826, MC_TOL)


@pytest.mark.parametrize(
    ("data", "expected"),
    [(NCMP_607_Y6, (10.964626, 10.442276, 11.487365)),
     (NCMP_607_R, (5.970062, 5.549097, 6.393890))],
    ids=["year6", "reception"],
)
def test_sii_proportion_logit_transform_matches_vignette(data, expected):
    # Vignette: prevalence_data / 100, value_type 2, transform TRUE, multiplier -100.
    point, lo, hi = expected
    r = sii(np.array(data["rate"]) / 100, data["measured"],
            lower_cls=np.array(data["lcl"]) / 100, upper_cls=np.array(data["ucl"]) / 100,
            value_type=2, transform=True, multiplier=-100)
    assert close(r.sii, point, PRINTED)
    assert close(r.sii_lower, lo, MC_TOL) and close(r.sii_upper, hi, MC_TOL)
    # The same from raw counts: Wilson limits are what the test data holds.
    c = sii_from_counts(data["count"], data["measured"], 2, transform=True, multiplier=-100)
    assert close(c.sii, point, PRINTED)
    assert close(c.sii_lower, r.sii_lower, 1e-9) and close(c.sii_upper, r.sii_upper, 1e-9)


def test_sii_numerators_instead_of_values():
    d = NCMP_607_Y6
    kwargs = dict(lower_cls=np.array(d["lcl"]) / 100, upper_cls=np.array(d["ucl"]) / 100,
                  value_type=2, reps=2000)
    a = sii(None, d["measured"], numerators=d["count"], **kwargs)
    b = sii(np.array(d["count"]) / np.array(d["measured"]), d["measured"], **kwargs)
    assert a == b


def test_sii_from_counts_rates_uses_byars_limits():
    counts = [420, 380, 300, 260, 200]
    pops = [100_000, 98_000, 101_000, 99_000, 100_500]
    r = sii_from_counts(counts, pops, 1, reps=2000)
    lower, upper = rate_ci_arrays(counts, pops, 100_000)
    values = np.array(counts) / np.array(pops) * 100_000
    s = sii(values, pops, lower_cls=lower, upper_cls=upper, value_type=1, reps=2000)
    assert r == s
    assert r.sii < 0  # rates fall from most to least deprived


def test_sii_sign_convention_and_negative_multiplier():
    forward = sii(LE_VALUES, LE_POPS, LE_SES, reps=2000)
    reversed_ = sii(LE_VALUES[::-1], LE_POPS[::-1], LE_SES[::-1], reps=2000)
    assert forward.sii > 0 > reversed_.sii  # least deprived live longer
    flipped = sii(LE_VALUES, LE_POPS, LE_SES, reps=2000, multiplier=-1)
    assert close(flipped.sii, -forward.sii)
    assert close(flipped.rii, 1 / forward.rii)
    # Same draws; the package's order-statistic positions are not symmetric
    # (round(R * 0.025) vs round(R * 0.975)), so mirrored limits agree to one
    # order statistic, not exactly.
    assert close(flipped.sii_lower, -forward.sii_upper, 0.01)
    assert close(flipped.rii_lower, 1 / forward.rii_upper, 0.01)


def _fitted_ends(counts: list[int], pops: list[int]) -> tuple[float, float]:
    """Rates per 100,000 regressed on the population-weighted relative rank, fitted at ranks 0 and 1:
    numpy's weighted least squares, independent of assets.statistics."""
    pops_a = np.asarray(pops, float)
    share = pops_a / pops_a.sum()
    rank = np.cumsum(share) - share / 2
    slope, intercept = np.polyfit(rank, np.asarray(counts) / pops_a * 100_000, 1, w=np.sqrt(share))
    return intercept, intercept + slope


def test_rii_is_none_when_the_fitted_line_crosses_zero_and_the_sii_stands():
    """Rates rising steeply from a most deprived quintile with 1 case: the line fitted through the
    quintiles is below zero at rank 0, so fitted(1) / fitted(0) is negative. phe_sii would report it
    (about -4.4, CI -11.0 to -3.6); a ratio of a rate to a negative rate means nothing."""
    counts, pops = [1, 2, 20, 40, 60], [380] * 5
    y0, y1 = _fitted_ends(counts, pops)
    assert y0 < 0 < y1
    r = sii_from_counts(counts, pops, 1, reps=5000)
    assert close(r.sii, y1 - y0, 1e-9)
    assert r.rii is None and r.rii_lower is None and r.rii_upper is None


def test_rii_is_none_when_its_interval_would_be_unbounded():
    """Both fitted ends positive, but so few cases at rank 0 that its interval reaches zero: the ratio's
    simulated values run to infinity either side (phe_sii: 8.5, CI -86 to 101, a negative lower limit
    for a ratio of positive rates). With more cases the same gradient keeps its RII."""
    counts, pops = [5, 8, 10, 14, 20], [380] * 5
    assert min(_fitted_ends(counts, pops)) > 0
    assert sii_from_counts(counts, pops, 1, reps=5000).rii is None
    big = sii_from_counts([c * 100 for c in counts], [p * 100 for p in pops], 1, reps=5000)
    y0, y1 = _fitted_ends([c * 100 for c in counts], [p * 100 for p in pops])
    assert close(big.rii, y1 / y0, 1e-9)
    assert 0 < big.rii_lower < big.rii < big.rii_upper


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 60), min_size=5, max_size=5), st.integers(200, 5000))
@example(counts=[3, 4, 2, 4, 3], pop=200)  # each fitted end's draws under the limit, the two together not
def test_a_published_rii_is_positive_and_inside_its_interval(counts: list[int], pop: int) -> None:
    r = sii_from_counts(counts, [pop] * 5, 1, reps=2000)
    assert r.sii_lower <= r.sii <= r.sii_upper
    assert r.rii is None or 0 < r.rii_lower <= r.rii <= r.rii_upper


def test_sii_seeded_rerun_identical_and_seed_matters():
    a = sii(LE_VALUES, LE_POPS, LE_SES, reps=5000, seed=7)
    b = sii(LE_VALUES, LE_POPS, LE_SES, reps=5000, seed=7)
    c = sii(LE_VALUES, LE_POPS, LE_SES, reps=5000, seed=8)
    assert a == b
    assert a.sii == c.sii and a.sii_lower != c.sii_lower


def test_sii_input_validation():
    with pytest.raises(ValueError):
        sii(LE_VALUES[:4], LE_POPS[:4], LE_SES[:4])  # fewer than 5 groups
    with pytest.raises(ValueError):
        sii(LE_VALUES, LE_POPS)  # no SE and no limits
    with pytest.raises(ValueError):
        sii(LE_VALUES, LE_POPS, LE_SES, value_type=0, transform=True)
    with pytest.raises(ValueError):
        sii(LE_VALUES, LE_POPS, LE_SES, reps=999)
    with pytest.raises(ValueError):
        sii_from_counts([0, 1, 2, 3, 4], [10] * 5, 2)


# ---------------------------------------------------------------------------
# Gaps
# ---------------------------------------------------------------------------


def test_gaps_higher_is_better():
    g = gaps(75.0, 80.0, "higher")
    assert g.absolute_gap == -5.0 and close(g.relative_gap, 0.9375)
    assert g.label == "core20_worse_off"
    assert gaps(82.0, 80.0, "higher").label == "core20_better_off"


def test_gaps_lower_is_better():
    g = gaps(150.0, 100.0, "lower")
    assert g.absolute_gap == 50.0 and g.relative_gap == 1.5
    assert g.label == "core20_worse_off"
    assert gaps(90.0, 100.0, "lower").label == "core20_better_off"


def test_gaps_equal_missing_and_zero():
    assert gaps(5.0, 5.0, "higher").label == "no_gap"
    missing = gaps(None, 5.0, "higher")
    assert missing.label is None and math.isnan(missing.absolute_gap)
    assert math.isnan(gaps(1.0, 0.0, "lower").relative_gap)
    with pytest.raises(ValueError):
        gaps(1.0, 2.0, "up")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("previous", "current", "direction", "label"),
    [
        (-5.0, -3.0, "higher", "gap narrowing"),  # signed value rose, gap shrank
        (-3.0, -5.0, "higher", "gap widening"),
        (50.0, 30.0, "lower", "gap narrowing"),
        (30.0, 50.0, "lower", "gap widening"),
        (-5.0, 3.0, "higher", "gap narrowing"),  # crossover, smaller gap
        (-5.0, 7.0, "higher", "gap widening"),  # crossover, other group further behind
        (4.0, -4.0, "lower", "no change"),
        (2.0, 2.0, "higher", "no change"),
        (None, 2.0, "higher", None),
    ],
)
def test_gap_trend_label(previous, current, direction, label):
    assert gap_trend_label(previous, current, direction) == label


def test_gap_trend_tolerance():
    assert gap_trend_label(10.0, 9.95, "lower", tolerance=0.1) == "no change"


# ---------------------------------------------------------------------------
# XmR (Making Data Count)
# ---------------------------------------------------------------------------


def flat_noise(seed: int = 0, n: int = 30) -> list[float]:
    return list(np.random.default_rng(seed).normal(50.0, 2.0, n))


def test_xmr_limits_arithmetic():
    values = [10.0, 12, 11, 13, 12, 11, 10, 12, 11, 13, 12, 11, 10, 12, 11]
    r = xmr(values)
    mr = np.mean(np.abs(np.diff(values)))
    assert close(r.mean, float(np.mean(values)))
    assert close(r.mean_moving_range, float(mr))
    assert close(r.ucl, r.mean + 2.66 * mr) and close(r.lcl, r.mean - 2.66 * mr)


def test_xmr_flat_noise_is_common_cause():
    values = flat_noise(seed=0)
    r = xmr(values, direction="higher")
    assert r.variation == "common_cause" and r.special_cause_rules == []
    assert not any(f.any() for f in special_cause_flags(values).values())


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), baseline=st.integers(15, 30),
       up=st.booleans())
def test_xmr_detects_planted_shift(seed, baseline, up):
    rng = np.random.default_rng(seed)
    delta = 20.0 if up else -20.0  # 10 sd
    values = list(rng.normal(50.0, 2.0, baseline)) + list(rng.normal(50.0 + delta, 2.0, 8))
    r = xmr(values, direction="higher")
    assert "shift" in r.special_cause_rules
    assert r.variation == ("special_cause_improvement" if up else "special_cause_concern")
    assert xmr(values, direction="lower").variation == (
        "special_cause_concern" if up else "special_cause_improvement")
    assert xmr(values).variation == "special_cause_neither"


def test_xmr_single_point_beyond_limits():
    values = flat_noise(seed=2) + [80.0]
    r = xmr(values, direction="lower")
    assert "beyond_limits" in r.special_cause_rules
    assert r.variation == "special_cause_concern"


def test_xmr_trend_of_seven():
    values = flat_noise(seed=3, n=20) + [44.0, 45.0, 46.0, 47.0, 48.0, 49.0, 49.5]
    flags = special_cause_flags(values)
    assert flags["trend_up"][-7:].all() and not flags["trend_up"][:-8].any()
    r = xmr(values, direction="higher")
    assert r.special_cause_rules == ["trend_up"]
    assert r.variation == "special_cause_improvement"
    six = flat_noise(seed=3, n=20) + [44.0, 45.0, 46.0, 47.0, 48.0, 49.0]
    assert "trend_up" not in xmr(six, direction="higher").special_cause_rules


def test_xmr_two_of_three_beyond_two_sigma():
    base = [50.0, 51, 49, 50, 51, 49, 50, 51, 49, 50, 51, 49, 50, 51, 49, 50, 51, 49]
    near = 52.0
    for _ in range(50):  # place `near` at 2.3 sigma of the final series
        r = xmr(base + [near, 50.0, near])
        near = r.mean + 2.3 * r.mean_moving_range / 1.128
    values = base + [near, 50.0, near]
    r = xmr(values)
    sigma = r.mean_moving_range / 1.128
    assert r.mean + 2 * sigma < near < r.ucl  # precondition: in the 2-sigma zone
    flags = special_cause_flags(values)
    assert flags["two_of_three"][-3] and flags["two_of_three"][-1]
    assert not flags["two_of_three"][-2]
    r = xmr(values, direction="lower")
    assert "two_of_three" in r.special_cause_rules and r.variation == "special_cause_concern"


def test_xmr_insufficient_data():
    r = xmr([1.0, 2.0, 3.0], target=2.0, direction="higher")
    assert r.variation == "insufficient_data" and r.assurance == "insufficient_data"
    assert r.special_cause_rules == []
    assert math.isnan(xmr([None, 4.0]).ucl)
    assert xmr([1.0, None] * 10).variation == "insufficient_data"  # 10 observed < 15


def test_xmr_missing_values_skip_and_break_ranges():
    values = flat_noise(seed=4, n=20)
    with_gap = values[:10] + [None] + values[10:]
    r = xmr(with_gap)
    expected_mr = np.mean(np.abs(np.diff(values))[[*range(9), *range(10, 19)]])
    assert close(r.mean_moving_range, float(expected_mr))
    assert close(r.mean, float(np.mean(values)))


@pytest.mark.parametrize(
    ("target", "direction", "assurance"),
    [
        (30.0, "higher", "pass"),
        (70.0, "higher", "fail"),
        (70.0, "lower", "pass"),
        (30.0, "lower", "fail"),
        (50.0, "higher", "inconsistent"),
        (None, "higher", "no_target"),
        (30.0, None, "no_target"),
    ],
)
def test_xmr_assurance(target, direction, assurance):
    assert xmr(flat_noise(seed=0), target=target, direction=direction).assurance == assurance


def test_xmr_bad_direction():
    with pytest.raises(ValueError):
        xmr(flat_noise(), direction="up")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

counts_and_totals = st.integers(1, 100_000).flatmap(
    lambda n: st.tuples(st.integers(0, n), st.just(n)))
levels = st.tuples(st.floats(0.80, 0.95), st.floats(0.951, 0.999))


@given(counts_and_totals, levels)
def test_wilson_properties(xn, conf):
    x, n = xn
    lo, hi = wilson_ci(x, n, conf[0])
    wlo, whi = wilson_ci(x, n, conf[1])
    assert 0.0 <= wlo <= lo <= x / n + 1e-12
    assert x / n - 1e-12 <= hi <= whi <= 1.0


@given(st.integers(0, 1_000_000), levels)
def test_count_ci_properties(x, conf):
    lo, hi = byar_ci(x, conf[0])
    wlo, whi = byar_ci(x, conf[1])
    assert wlo <= lo <= x <= hi <= whi


@given(st.lists(st.integers(0, 500), min_size=19, max_size=19),
       st.lists(st.integers(1, 100_000), min_size=19, max_size=19), levels)
def test_dsr_properties(counts, pops, conf):
    narrow = dsr(counts, pops, confidence=conf[0])
    wide = dsr(counts, pops, confidence=conf[1])
    if sum(counts) < 10:
        assert narrow is None and wide is None
        return
    assert narrow is not None and wide is not None
    assert wide.lower <= narrow.lower <= narrow.value <= narrow.upper <= wide.upper


@given(st.lists(st.integers(0, 18), max_size=9))
def test_dsr_none_under_ten(event_bands):
    counts = np.bincount(event_bands, minlength=19)  # at most 9 events in total
    assert dsr(counts, [1000] * 19) is None


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(60, 90), min_size=5, max_size=10).flatmap(
    lambda v: st.tuples(st.just(v),
                        st.lists(st.integers(1000, 50_000), min_size=len(v), max_size=len(v)),
                        st.lists(st.floats(0.2, 3.0), min_size=len(v), max_size=len(v)))),
    st.integers(0, 1000))
def test_sii_properties(inputs, seed):
    values, pops, ses = inputs
    narrow = sii(values, pops, ses, reps=4000, seed=seed, confidence=0.9)
    wide = sii(values, pops, ses, reps=4000, seed=seed, confidence=0.99)
    assert wide.sii_lower <= narrow.sii_lower <= narrow.sii <= narrow.sii_upper <= wide.sii_upper
    assert wide.rii_lower <= narrow.rii_lower <= narrow.rii_upper <= wide.rii_upper
    assert sii(values, pops, ses, reps=4000, seed=seed, confidence=0.9) == narrow


def test_sii_many_gives_the_same_results_in_worker_processes_as_one_by_one() -> None:
    from assets.statistics import SiiTask, sii_from_counts, sii_many
    rng = np.random.default_rng(7)
    tasks = [SiiTask(tuple(rng.integers(5, 60, 5).astype(float)), tuple(rng.integers(200, 900, 5).astype(float)),
                     2 if i % 2 else 1, rate_multiplier=1000.0, multiplier=100.0 if i % 2 else 1.0, seed=i)
             for i in range(12)]
    tasks.append(SiiTask((0.0, 1.0, 2.0, 3.0, 4.0), (10.0,) * 5, 2, 1000.0, 100.0, 99))  # a zero count: refused
    one_by_one = sii_many(tasks, workers=1)
    assert sii_many(tasks, workers=2, parallel_from=1) == one_by_one
    assert one_by_one[-1] is None and None not in one_by_one[:-1]
    t = tasks[3]
    assert one_by_one[3] == sii_from_counts(np.array(t.numerators), np.array(t.denominators), t.value_type,
                                            rate_multiplier=t.rate_multiplier, multiplier=t.multiplier, seed=t.seed)
