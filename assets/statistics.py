"""The project's statistics module: pure functions, numpy/scipy only.

Public health methods reproduce the R package PHEindicatormethods
(ukhsa-collaboration/PHEindicatormethods, files R/utils.R, R/Rates.R,
R/DSR.R, R/SII_function.R) so that published Fingertips-style figures can be
re-derived exactly.  SPC follows NHS England's "Making Data Count" (MDC) XmR
conventions as implemented by NHSRplotthedots (R/ptd_spc_standard.R,
R/ptd_calculate_point_type.R, R/ptd_calculate_assurance_type.R), with the
deviations documented on :func:`xmr`.

Confidence levels are fractions in (0, 1], e.g. 0.95 or 0.998.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Sequence

if TYPE_CHECKING:
    import pandas as pd

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

__all__ = [
    "ESP2013",
    "DsrResult",
    "GapResult",
    "SiiResult",
    "SpcResult",
    "byar_ci",
    "byar_ci_arrays",
    "dsr",
    "gap_trend_label",
    "indicator_values_with_cis",
    "gaps",
    "rate_ci",
    "rate_ci_arrays",
    "sii",
    "sii_from_counts",
    "special_cause_flags",
    "wilson_ci",
    "wilson_ci_arrays",
    "xmr",
]

Direction = Literal["higher", "lower"]
FloatArray = NDArray[np.float64]

# European Standard Population 2013, 19 five-year bands 0-4 ... 90+.
ESP2013: tuple[int, ...] = (
    5000, 5500, 5500, 5500, 6000, 6000, 6500, 7000, 7000, 7000,
    7000, 6500, 6000, 5500, 5000, 4000, 2500, 1500, 1000,
)

# The package derives SEs from 95% limits whatever CI is asked for the SII.
_Z95 = float(stats.norm.ppf(0.975))
# Making Data Count XmR constants.
_XMR_LIMIT = 2.66  # 3 / d2, rounded as MDC publishes it
_D2 = 1.128  # d2 for moving ranges of two points
_RUN_LENGTH = 7  # points in a shift or a trend


# --------------------------------------------------------------------------
# Small shared helpers
# --------------------------------------------------------------------------


def _z(confidence: float) -> float:
    """Two-sided normal quantile, validating the level once for everyone."""
    if not 0.0 < confidence <= 1.0:
        raise ValueError("confidence must be a fraction in (0, 1]")
    return float(stats.norm.ppf(confidence + (1.0 - confidence) / 2.0))


def _as_float(a: ArrayLike) -> FloatArray:
    return np.asarray(a, dtype=np.float64)


def _check_direction(direction: str | None, allow_none: bool = False) -> None:
    allowed = ("higher", "lower", None) if allow_none else ("higher", "lower")
    if direction not in allowed:
        raise ValueError(f"direction must be one of {allowed}, got {direction!r}")


# --------------------------------------------------------------------------
# Wilson score interval for proportions (PHEindicatormethods wilson_lower/upper)
# --------------------------------------------------------------------------


def wilson_ci_arrays(
    x: ArrayLike, n: ArrayLike, confidence: float = 0.95
) -> tuple[FloatArray, FloatArray]:
    """Vectorised Wilson score limits on the 0..1 scale.

    Rows with n == 0 (or a NaN input) give NaN limits; negative counts or
    x > n raise, as the package does, because they are data errors.
    """
    xs, ns = np.broadcast_arrays(_as_float(x), _as_float(n))
    if np.any(xs < 0) or np.any(ns < 0):
        raise ValueError("x and n must be >= 0")
    if np.any(xs > ns):
        raise ValueError("x must be <= n for a Wilson score interval")
    z = _z(confidence)
    valid = ns > 0
    if confidence == 1.0:  # package returns the whole range at 100%
        return np.where(valid, 0.0, np.nan), np.where(valid, 1.0, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        root = z * np.sqrt(z * z + 4.0 * xs * (1.0 - xs / ns))
        denom = 2.0 * (ns + z * z)
        lower = (2.0 * xs + z * z - root) / denom
        upper = (2.0 * xs + z * z + root) / denom
    # x = 0 and x = n give exactly 0 and 1 algebraically; pin them (and clip)
    # so float round-off never leaves [0, 1] or breaks monotonicity.
    lower = np.clip(np.where(xs == 0, 0.0, lower), 0.0, 1.0)
    upper = np.clip(np.where(xs == ns, 1.0, upper), 0.0, 1.0)
    return np.where(valid, lower, np.nan), np.where(valid, upper, np.nan)


def wilson_ci(x: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score CI for x successes out of n, as a 0..1 proportion.

    n == 0 gives (nan, nan).  Matches PHEindicatormethods wilson_lower/upper.
    """
    lower, upper = wilson_ci_arrays(x, n, confidence)
    return float(lower), float(upper)


# --------------------------------------------------------------------------
# Counts and crude rates (PHEindicatormethods byars_lower/upper and phe_rate)
# --------------------------------------------------------------------------


def _byars(x: FloatArray, z: float) -> tuple[FloatArray, FloatArray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        lower = x * (1.0 - 1.0 / (9.0 * x) - z / (3.0 * np.sqrt(x))) ** 3
        xp1 = x + 1.0
        upper = xp1 * (1.0 - 1.0 / (9.0 * xp1) + z / (3.0 * np.sqrt(xp1))) ** 3
    # The package turns an impossible negative Byar's lower limit into NA.
    return np.where(lower < 0, np.nan, lower), upper


def _exact_poisson(x: FloatArray, confidence: float) -> tuple[FloatArray, FloatArray]:
    alpha = 1.0 - confidence
    # R's qchisq(p, df = 0) is 0: a zero count has a zero lower limit.
    with np.errstate(invalid="ignore"):
        lower = np.where(x > 0, stats.chi2.ppf(alpha / 2.0, 2.0 * x) / 2.0, 0.0)
    upper = stats.chi2.ppf(confidence + alpha / 2.0, 2.0 * x + 2.0) / 2.0
    return lower, upper


def byar_ci_arrays(
    x: ArrayLike, confidence: float = 0.95
) -> tuple[FloatArray, FloatArray]:
    """Vectorised count CI: Byar's method for x >= 10, exact Poisson below.

    This is the switch phe_rate makes: Byar's approximation is poor for
    small counts, so those use the chi-square form of the exact interval.
    """
    xs = _as_float(x)
    if np.any(xs < 0):
        raise ValueError("counts must be >= 0")
    z = _z(confidence)
    b_low, b_up = _byars(xs, z)
    e_low, e_up = _exact_poisson(xs, confidence)
    small = xs < 10
    return np.where(small, e_low, b_low), np.where(small, e_up, b_up)


def byar_ci(x: float, confidence: float = 0.95) -> tuple[float, float]:
    """CI for an observed count x (Byar's for x >= 10, exact Poisson below)."""
    lower, upper = byar_ci_arrays(x, confidence)
    return float(lower), float(upper)


def rate_ci_arrays(
    x: ArrayLike, n: ArrayLike, multiplier: float = 100_000, confidence: float = 0.95
) -> tuple[FloatArray, FloatArray]:
    """Vectorised crude-rate CI: count CI / n * multiplier; n <= 0 -> NaN."""
    xs, ns = np.broadcast_arrays(_as_float(x), _as_float(n))
    lower, upper = byar_ci_arrays(xs, confidence)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(ns > 0, multiplier / ns, np.nan)
    return lower * scale, upper * scale


def rate_ci(
    x: float, n: float, multiplier: float = 100_000, confidence: float = 0.95
) -> tuple[float, float]:
    """CI of the crude rate x / n * multiplier, as phe_rate computes it."""
    lower, upper = rate_ci_arrays(x, n, multiplier, confidence)
    return float(lower), float(upper)


def indicator_values_with_cis(cells: "pd.DataFrame", confidence: float = 0.95) -> "pd.DataFrame":
    """Value and CI for each indicator cell: Wilson for unit '%', Byar / exact Poisson for rates.

    `cells` has numerator, denominator, unit and multiplier (100 for %); the value is
    numerator / denominator * multiplier, null where the denominator is 0.
    """
    out = cells.copy()
    num = out["numerator"].to_numpy(dtype=float)
    den = out["denominator"].to_numpy(dtype=float)
    mult = out["multiplier"].to_numpy(dtype=float)
    is_pct = (out["unit"] == "%").to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        out["value"] = np.where(den > 0, num / den * mult, np.nan)
    # Wilson needs x <= n; rate rows (events per person) may exceed it, so they are masked out.
    w_low, w_up = wilson_ci_arrays(np.where(is_pct, num, 0.0), np.where(is_pct, den, 0.0), confidence)
    r_low, r_up = rate_ci_arrays(num, den, 1.0, confidence)
    out["lower_ci"] = np.where(is_pct, w_low, r_low) * mult
    out["upper_ci"] = np.where(is_pct, w_up, r_up) * mult
    return out


# --------------------------------------------------------------------------
# Directly standardised rates (PHEindicatormethods phe_dsr / calculate_dsr)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class DsrResult:
    value: float
    lower: float
    upper: float
    total_count: float
    total_population: float


def dsr(
    counts: Sequence[float] | ArrayLike,
    populations: Sequence[float] | ArrayLike,
    standard: Sequence[float] | ArrayLike = ESP2013,
    multiplier: float = 100_000,
    confidence: float = 0.95,
) -> DsrResult | None:
    """Directly standardised rate with Dobson (Byar's-based) limits.

    Bands are matched by position.  Missing counts count as zero (the
    package's na.zero).  Returns None when the total count is < 10, where
    the package suppresses the DSR as unreliable.
    """
    x = np.nan_to_num(_as_float(counts), nan=0.0)
    n, w = _as_float(populations), _as_float(standard)
    if not x.shape == n.shape == w.shape:
        raise ValueError("counts, populations and standard must align by band")
    if np.any(x < 0) or np.any(~(n > 0)) or np.any(w < 0):
        raise ValueError("counts >= 0, populations > 0 and standard >= 0 required")
    total = float(x.sum())
    if total < 10:
        return None
    value = float(np.sum(x * w / n) / w.sum() * multiplier)
    var = float(np.sum(x * (w / n) ** 2) / w.sum() ** 2)
    b_low, b_up = _byars(np.array(total), _z(confidence))
    scale = np.sqrt(var / total) * multiplier  # Dobson: scale the count CI
    lower = float(value + scale * (float(b_low) - total))
    upper = float(value + scale * (float(b_up) - total))
    return DsrResult(value, lower, upper, total, float(n.sum()))


# --------------------------------------------------------------------------
# Slope and relative index of inequality (PHEindicatormethods phe_sii)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SiiResult:
    sii: float
    sii_lower: float
    sii_upper: float
    rii: float | None       # None when the ratio is unbounded: see _sii_untransformed
    rii_lower: float | None
    rii_upper: float | None


def _midpoints(populations: FloatArray) -> FloatArray:
    """Relative rank: midpoint of each group's cumulative population share."""
    share = populations / populations.sum()
    return np.cumsum(share) - share / 2.0


def _forward(values: FloatArray, value_type: int) -> FloatArray:
    """The package's scale for simulation: log for rates, logit for props."""
    if value_type == 1:
        return np.log(values)
    if value_type == 2:
        return np.log(values / (1.0 - values))
    return values


def _inverse(values: FloatArray, value_type: int) -> FloatArray:
    if value_type == 1:
        return np.exp(values)
    if value_type == 2:
        return 1.0 / (1.0 + np.exp(-values))
    return values


def _design(populations: FloatArray) -> tuple[FloatArray, FloatArray]:
    """sqrt(a) and b*sqrt(a): WLS on population share via a no-intercept OLS."""
    sqrt_a = np.sqrt(populations / populations.sum())
    return sqrt_a, _midpoints(populations) * sqrt_a


def _fit(sqrt_a: FloatArray, b_sqrt_a: FloatArray, y: FloatArray) -> FloatArray:
    """(intercept, slope) for each row of y (values, not yet weighted).

    Same closed form as the package's SimulationFunc: solve(M M') M y.
    """
    m = np.vstack([sqrt_a, b_sqrt_a])
    solver = np.linalg.solve(m @ m.T, m)
    return (y * sqrt_a) @ solver.T


def _order_stats(samples: FloatArray, confidence: float) -> tuple[float, float]:
    """The package's percentile rule: sorted[round(R*p)] with 1-based index.

    R's round() halves to even, as numpy's does.
    """
    lo_i, hi_i = _order_positions(samples.size, confidence)
    part = np.partition(samples, [lo_i, hi_i])
    return float(part[lo_i]), float(part[hi_i])


def _order_positions(reps: int, confidence: float) -> tuple[int, int]:
    """The 0-based positions in the sorted samples of _order_stats' lower and upper limits."""
    upper_p = confidence + (1.0 - confidence) / 2.0
    lo = int(np.round(reps * (1.0 - upper_p)))
    hi = int(np.round(reps * upper_p))
    return max(lo, 1) - 1, min(max(hi, 1), reps) - 1


def _sii_inputs(
    values: ArrayLike | None,
    populations: ArrayLike,
    standard_errors: ArrayLike | None,
    numerators: ArrayLike | None,
    lower_cls: ArrayLike | None,
    upper_cls: ArrayLike | None,
    value_type: int,
    transform: bool,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Validate as phe_sii does; return (pops, transformed values, SEs)."""
    pops = _as_float(populations)
    if value_type not in (0, 1, 2):
        raise ValueError("value_type should be 0, 1 or 2")
    if not 5 <= pops.size <= 100:
        raise ValueError("Number of quantiles must be between 5 and 100")
    if np.any(~(pops > 0)):
        raise ValueError("some groups have a zero, negative or missing population")
    if values is None:
        if value_type != 2 or numerators is None:
            raise ValueError("values are required, or numerators for proportions")
        vals = _as_float(numerators) / pops
    else:
        vals = _as_float(values)
    if transform and value_type == 0:
        raise ValueError("value_type should be 1 or 2 when transform is true")
    if transform and standard_errors is not None:
        raise ValueError("standard_errors must be omitted when transform is true")
    if value_type == 2 and np.any((vals <= 0) | (vals >= 1)):
        raise ValueError("proportions must lie strictly between 0 and 1")
    if value_type == 1 and np.any(vals <= 0):
        raise ValueError("rates must be > 0 to be log-transformed")
    se = _sii_se(standard_errors, lower_cls, upper_cls, value_type)
    if not vals.shape == pops.shape == se.shape:
        raise ValueError("all group inputs must have one entry per group")
    return pops, _forward(vals, value_type), se


def _sii_se(
    standard_errors: ArrayLike | None,
    lower_cls: ArrayLike | None,
    upper_cls: ArrayLike | None,
    value_type: int,
) -> FloatArray:
    """Supplied SE (already on the transformed scale) or one from 95% CLs."""
    if standard_errors is not None:
        se = _as_float(standard_errors)
        if np.any(~(se >= 0)):
            raise ValueError("negative or missing standard errors")
        return se
    if lower_cls is None or upper_cls is None:
        raise ValueError("need standard_errors, or both lower_cls and upper_cls")
    lo = _forward(_as_float(lower_cls), value_type)
    hi = _forward(_as_float(upper_cls), value_type)
    se = (hi - lo) / _Z95 / 2.0
    if np.any(~np.isfinite(se)) or np.any(se < 0):
        raise ValueError("limits must be finite, ordered and inside the value's domain")
    return se


def sii(
    values: ArrayLike | None,
    populations: ArrayLike,
    standard_errors: ArrayLike | None = None,
    *,
    numerators: ArrayLike | None = None,
    lower_cls: ArrayLike | None = None,
    upper_cls: ArrayLike | None = None,
    value_type: Literal[0, 1, 2] = 0,
    transform: bool = False,
    multiplier: float = 1.0,
    reps: int = 100_000,
    confidence: float = 0.95,
    seed: int = 1,
) -> SiiResult:
    """Slope (SII) and relative (RII) index of inequality, as phe_sii.

    Groups must be ordered 1 = most deprived ... k = least deprived (5-100
    groups).  Each group's relative rank is the midpoint of its cumulative
    population share; values are regressed on rank weighted by population
    share (no-intercept OLS of sqrt(a)*y on sqrt(a) and b*sqrt(a)).

    Sign convention (the package's): SII = fitted(least deprived, rank 1) -
    fitted(most deprived, rank 0), times ``multiplier``.  So life expectancy
    (higher is better) gives a positive SII when the least deprived live
    longer; use a negative multiplier to flip polarity, which also inverts
    the RII.  RII = fitted(rank 1) / fitted(rank 0) = (intercept + slope) /
    intercept.

    Inputs: ``values`` (or, for proportions only, ``numerators`` divided by
    ``populations``) plus either ``standard_errors`` or 95% ``lower_cls`` and
    ``upper_cls``.  value_type 0 = other, 1 = rate, 2 = proportion (0..1).
    For rates/proportions, limits are log/logit transformed before the SE is
    taken ((U - L) / 2 / z95, always 95% as in the package), and a supplied
    SE must already be on the log/logit scale.

    CIs: ``reps`` Monte-Carlo draws of every group's value from
    Normal(transformed value, SE), back-transformed, refitted; limits are
    the package's order statistics.  A seeded numpy Generator makes reruns
    identical (they cannot match R's RNG draw for draw, only in law).

    ``transform=True`` (rates/proportions, CLs required) fits on the
    log/logit scale and back-transforms the fitted end points, as the
    package does.  One deliberate deviation: for rates the package swaps
    limits when 0 < multiplier < 1 (its test is ``multiplier < 1``); here the
    swap happens only for negative multipliers, as for proportions.
    """
    if reps < 1000:
        raise ValueError("reps must be 1000 or greater")
    _z(confidence)
    pops, vals_t, se = _sii_inputs(
        values, populations, standard_errors, numerators,
        lower_cls, upper_cls, value_type, transform,
    )
    sqrt_a, b_sqrt_a = _design(pops)
    rng = np.random.default_rng(seed)
    draws = rng.normal(vals_t, se, size=(reps, vals_t.size))
    if transform:
        return _sii_transformed(sqrt_a, b_sqrt_a, vals_t, draws, value_type,
                                multiplier, confidence)
    point = _fit(sqrt_a, b_sqrt_a, _inverse(vals_t, value_type))
    sims = _fit(sqrt_a, b_sqrt_a, _inverse(draws, value_type))
    return _sii_untransformed(point, sims, multiplier, confidence)


def _rii(intercept: FloatArray, slope: FloatArray, multiplier: float) -> FloatArray:
    """RII = fitted(rank 1) / fitted(rank 0), inverted for negative multipliers."""
    rii = (intercept + slope) / intercept
    return 1.0 / rii if multiplier < 0 else rii


def _sii_untransformed(
    point: FloatArray, sims: FloatArray, multiplier: float, confidence: float
) -> SiiResult:
    """The RII is a ratio of the fitted values at ranks 1 and 0. When the confidence interval of
    either fitted end reaches zero, that ratio is unbounded (Fieller): its simulated values run to
    +/- infinity and their percentiles can exclude the point estimate itself (RII -102.97, CI from
    -73.0, at one site of 384 people). Then the RII and its CI are None, not numbers. A deliberate
    deviation from phe_sii, which reports them whatever the fitted line does; the SII stands."""
    sii_lo, sii_hi = _order_stats(sims[:, 1] * multiplier, confidence)
    # The ratio's lower limit (_order_stats) can be <= 0 when more draws than its position have an end
    # at or below zero, either end: counted over the draws together, since each end alone can stay under
    # the position while the two together do not (counts 3, 4, 2, 4, 3 of 200 gave a CI from -0.2). A
    # count, not a partition of every draw (that was a tenth of each SII's time).
    lo_i = _order_positions(sims.shape[0], confidence)[0]
    reaches_zero = np.count_nonzero((sims[:, 0] <= 0) | (sims[:, 0] + sims[:, 1] <= 0)) > lo_i
    if reaches_zero or min(point[0], point[0] + point[1]) <= 0:
        return SiiResult(float(point[1] * multiplier), sii_lo, sii_hi, None, None, None)
    rii_lo, rii_hi = _order_stats(_rii(sims[:, 0], sims[:, 1], multiplier), confidence)
    return SiiResult(
        float(point[1] * multiplier), sii_lo, sii_hi,
        float(_rii(point[0], point[1], multiplier)), rii_lo, rii_hi,
    )


def _sii_transformed(
    sqrt_a: FloatArray,
    b_sqrt_a: FloatArray,
    vals_t: FloatArray,
    draws: FloatArray,
    value_type: int,
    multiplier: float,
    confidence: float,
) -> SiiResult:
    """Fit on the log/logit scale; back-transform around the fitted midpoint.

    The package keeps the fitted value at rank 0.5 fixed and moves the
    simulated slope's limits about it, then back-transforms both ends.
    """
    icpt, slope = _fit(sqrt_a, b_sqrt_a, vals_t)
    half = icpt + slope / 2.0
    slope_lo, slope_hi = _order_stats(_fit(sqrt_a, b_sqrt_a, draws)[:, 1], confidence)

    def ends(s: float) -> tuple[float, float]:  # back-transformed (rank 0, rank 1)
        return (float(_inverse(np.asarray(half - s / 2.0), value_type)),
                float(_inverse(np.asarray(half + s / 2.0), value_type)))

    (y0, y1), (y0_lo, y1_lo), (y0_hi, y1_hi) = ends(slope), ends(slope_lo), ends(slope_hi)
    sii_pair = ((y1_lo - y0_lo) * multiplier, (y1_hi - y0_hi) * multiplier)
    rii_pair = (y1_lo / y0_lo, y1_hi / y0_hi)
    if multiplier < 0:  # negation / inversion swaps which end is lower
        sii_pair = (sii_pair[1], sii_pair[0])
        rii_pair = (1.0 / rii_pair[1], 1.0 / rii_pair[0])
    rii = y1 / y0 if multiplier >= 0 else y0 / y1
    return SiiResult((y1 - y0) * multiplier, *sii_pair, rii, *rii_pair)


def sii_from_counts(
    numerators: ArrayLike,
    denominators: ArrayLike,
    value_type: Literal[1, 2],
    *,
    rate_multiplier: float = 100_000,
    transform: bool = False,
    multiplier: float = 1.0,
    reps: int = 100_000,
    confidence: float = 0.95,
    seed: int = 1,
) -> SiiResult:
    """SII/RII for quintiles (or any 5-100 groups) from numerator/denominator.

    Builds the inputs the package's own workflow would: proportions
    (value_type 2) use x/n with 95% Wilson limits (phe_proportion); rates
    (value_type 1) use x/n*rate_multiplier with 95% Byar's/exact limits
    (phe_rate).  phe_sii then derives each SE from those limits on the
    logit/log scale.  Denominators are the population weights.  Every
    numerator must be > 0 (and < n for proportions): log/logit of 0 or 1
    is undefined, and the package refuses zero counts too.
    """
    x, n = _as_float(numerators), _as_float(denominators)
    if np.any(~(x > 0)) or (value_type == 2 and np.any(x >= n)):
        raise ValueError("numerators must be > 0 (and < denominators for proportions)")
    if value_type == 2:
        values = x / n
        lower, upper = wilson_ci_arrays(x, n, 0.95)
    elif value_type == 1:
        values = x / n * rate_multiplier
        lower, upper = rate_ci_arrays(x, n, rate_multiplier, 0.95)
    else:
        raise ValueError("value_type must be 1 (rate) or 2 (proportion)")
    return sii(values, n, lower_cls=lower, upper_cls=upper, value_type=value_type,
               transform=transform, multiplier=multiplier, reps=reps,
               confidence=confidence, seed=seed)


@dataclass(frozen=True)
class SiiTask:
    """The arguments of one sii_from_counts call (a site, period and indicator's quintiles)."""
    numerators: tuple[float, ...]
    denominators: tuple[float, ...]
    value_type: Literal[1, 2]
    rate_multiplier: float
    multiplier: float
    seed: int


PARALLEL_FROM = 200  # tasks: below this, starting worker processes costs more than it saves


def _run_sii(task: SiiTask) -> SiiResult | None:
    try:
        return sii_from_counts(task.numerators, task.denominators, task.value_type,
                               rate_multiplier=task.rate_multiplier, multiplier=task.multiplier, seed=task.seed)
    except ValueError:
        return None


def sii_many(tasks: Sequence[SiiTask], workers: int = 1,
             parallel_from: int = PARALLEL_FROM) -> list[SiiResult | None]:
    """sii_from_counts for every task (None where it refuses the counts), over `workers` processes
    when there are many: 100,000 draws each make this the costliest statistic (~15 ms a call, some
    5,000 calls a nightly). Each task's own seed fixes its draws, so the results are the same however
    the tasks are split. Spawned, not forked (the caller may hold a database connection), so only a
    caller whose main module is import-safe passes workers > 1 (the dbt model: dbt's own script)."""
    if workers < 2 or len(tasks) < parallel_from:
        return [_run_sii(t) for t in tasks]
    with _one_blas_thread_each(), ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_run_sii, tasks, chunksize=max(1, len(tasks) // (workers * 8))))


BLAS_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextmanager
def _one_blas_thread_each() -> Iterator[None]:
    """Workers spawned meanwhile start numpy's BLAS with one thread: by default each would start one per
    core, and on 2 cores 2 workers ran 1,000 SIIs in 34.6 s against 22.2 s for one process (12.9 s so)."""
    saved = {k: os.environ.get(k) for k in BLAS_THREADS}
    os.environ.update({k: "1" for k in BLAS_THREADS})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --------------------------------------------------------------------------
# Core20 gaps
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class GapResult:
    absolute_gap: float
    relative_gap: float
    label: str | None


def _missing(*values: float | None) -> bool:
    return any(v is None or not np.isfinite(v) for v in values)


def gaps(
    core20_value: float | None, not_core20_value: float | None, direction: Direction
) -> GapResult:
    """Core20 vs rest: absolute = core20 - not_core20, relative = core20 / not_core20.

    ``direction`` is the indicator polarity ("higher" = higher is better).
    label: "core20_worse_off", "core20_better_off" or "no_gap"; None (with
    NaN gaps) when either value is missing.  relative_gap is NaN when
    not_core20 is 0.
    """
    _check_direction(direction)
    if _missing(core20_value, not_core20_value):
        return GapResult(float("nan"), float("nan"), None)
    absolute = float(core20_value) - float(not_core20_value)
    relative = float(core20_value) / not_core20_value if not_core20_value else float("nan")
    if absolute == 0:
        return GapResult(absolute, relative, "no_gap")
    core20_higher = absolute > 0
    better = core20_higher == (direction == "higher")
    return GapResult(absolute, relative, "core20_better_off" if better else "core20_worse_off")


def gap_trend_label(
    previous_gap: float | None,
    current_gap: float | None,
    direction: Direction,
    tolerance: float = 0.0,
) -> str | None:
    """Compare two absolute gaps (core20 - not_core20) over time.

    A gap narrows when it is better for whichever group is worse off, i.e.
    when the distance between the groups shrinks: |current| < |previous|.
    That holds for either polarity -- with "higher is better" a Core20 gap
    of -5 moving to -3 narrows even though the signed number rose, and with
    "lower is better" +50 moving to +30 narrows.  A crossover is judged on
    size too: -5 -> +3 narrows, but -5 -> +7 widens (the other group is now
    further behind than Core20 was).  So the label never depends on
    ``direction``; it is validated so callers keep gap and polarity paired.

    Returns "gap narrowing", "gap widening" or "no change" (sizes within
    ``tolerance``), or None when either gap is missing.
    """
    _check_direction(direction)
    if _missing(previous_gap, current_gap):
        return None
    change = abs(float(current_gap)) - abs(float(previous_gap))
    if abs(change) <= tolerance:
        return "no change"
    return "gap narrowing" if change < 0 else "gap widening"


# --------------------------------------------------------------------------
# XmR statistical process control (NHS England Making Data Count)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SpcResult:
    mean: float
    mean_moving_range: float
    ucl: float
    lcl: float
    variation: str
    assurance: str
    special_cause_rules: list[str]


def _limits(y: FloatArray, observed: NDArray[np.bool_]) -> tuple[float, float]:
    """Mean and mean moving range; a missing point breaks its two ranges."""
    mean = float(np.mean(y[observed])) if observed.any() else float("nan")
    ranges = np.abs(np.diff(y))[observed[1:] & observed[:-1]]
    return mean, float(np.mean(ranges)) if ranges.size else float("nan")


def _runs(flags: NDArray[np.bool_], length: int) -> NDArray[np.bool_]:
    """Mark every point belonging to a run of >= ``length`` True values."""
    out = np.zeros(flags.size, dtype=bool)
    start = None
    for i, f in enumerate(np.append(flags, False)):
        if f and start is None:
            start = i
        elif not f and start is not None:
            if i - start >= length:
                out[start:i] = True
            start = None
    return out


def _trend(y: FloatArray) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Points in 7+ strictly rising / falling runs (6+ same-sign steps)."""
    step = np.sign(np.diff(y))
    up, down = np.zeros(y.size, dtype=bool), np.zeros(y.size, dtype=bool)
    for target, out in ((1.0, up), (-1.0, down)):
        in_run = _runs(step == target, _RUN_LENGTH - 1)
        out[:-1] |= in_run  # a step marks both of its points
        out[1:] |= in_run
    return up, down


def _two_of_three(y: FloatArray, mean: float, sigma: float) -> NDArray[np.bool_]:
    """Points beyond 2 sigma that have a same-side partner within 3 points."""
    side = np.where(y > mean + 2 * sigma, 1, np.where(y < mean - 2 * sigma, -1, 0))
    out = np.zeros(y.size, dtype=bool)
    for start in range(max(y.size - 2, 0)):
        window = side[start:start + 3]
        for s in (1, -1):
            if np.sum(window == s) >= 2:
                out[start:start + 3] |= window == s
    return out


def special_cause_flags(
    values: Sequence[float | None] | ArrayLike,
) -> dict[str, NDArray[np.bool_]]:
    """Per-point MDC special-cause flags for an XmR chart.

    Missing values (None/NaN) are dropped first; the returned arrays are
    aligned to the observed points only.  Keys:
      beyond_limits: outside mean +/- 2.66 x mean moving range;
      shift: part of a run of >= 7 on one side of the mean (a point on the
        mean breaks the run);
      trend_up / trend_down: part of >= 7 consecutive strictly rising /
        falling points (a tie breaks the trend);
      two_of_three: beyond 2 sigma (sigma = mean MR / 1.128) with another
        point beyond 2 sigma on the same side within a window of 3.  This is
        the Western Electric form: points beyond the limits count and the
        window's third point may lie anywhere (NHSRplotthedots instead needs
        all three on one side and only counts points inside the limits).
    """
    y_all = _as_float([np.nan if v is None else v for v in values])
    observed = ~np.isnan(y_all)
    mean, mr = _limits(y_all, observed)
    y = y_all[observed]
    side = np.sign(y - mean)
    up, down = _trend(y)
    return {
        "beyond_limits": np.abs(y - mean) > _XMR_LIMIT * mr,
        "shift": _runs(side > 0, _RUN_LENGTH) | _runs(side < 0, _RUN_LENGTH),
        "trend_up": up,
        "trend_down": down,
        "two_of_three": _two_of_three(y, mean, mr / _D2),
    }


def _latest_signal(flags: dict[str, NDArray[np.bool_]], above_mean: bool) -> tuple[list[str], int]:
    """Rules hit by the latest point and its signal (+1 high, -1 low, 0 none).

    Level rules (limits, shift, 2-of-3) speak for the side of the mean the
    point is on and take precedence over a trend's direction when they
    disagree, because they describe where the process is now.
    """
    hit = [name for name, f in flags.items() if f.size and f[-1]]
    level = {"beyond_limits", "shift", "two_of_three"} & set(hit)
    if level:
        return hit, 1 if above_mean else -1
    if "trend_up" in hit:
        return hit, 1
    if "trend_down" in hit:
        return hit, -1
    return hit, 0


def _variation(signal: int, direction: str | None) -> str:
    if signal == 0:
        return "common_cause"
    if direction is None:
        return "special_cause_neither"
    good = 1 if direction == "higher" else -1
    return "special_cause_improvement" if signal == good else "special_cause_concern"


def _assurance(target: float | None, direction: str | None, ucl: float, lcl: float,
               enough: bool) -> str:
    if target is None or direction is None or not np.isfinite(target):
        return "no_target"
    if not enough:
        return "insufficient_data"
    if target > ucl:  # every point will sit below the target
        return "fail" if direction == "higher" else "pass"
    if target < lcl:  # every point will sit above the target
        return "pass" if direction == "higher" else "fail"
    return "inconsistent"


def xmr(
    values: Sequence[float | None],
    target: float | None = None,
    direction: Direction | None = None,
    min_points: int = 15,
) -> SpcResult:
    """NHS England Making Data Count XmR summary for one series.

    Limits: mean +/- 2.66 x mean moving range over all observed points (no
    moving-range outlier screening: the MDC Excel tools do not screen;
    NHSRplotthedots' deviations vignette).  A missing value (None/NaN) is
    skipped for rules and breaks the two moving ranges it touches.
    Rules: see :func:`special_cause_flags` (7-point shift and trend, 2-of-3
    beyond 2 sigma, a point beyond the limits).

    variation -- judged on the latest observed point, like the MDC icon:
      "insufficient_data": fewer than ``min_points`` observed values;
      "common_cause": the latest point triggers no rule;
      "special_cause_improvement" / "special_cause_concern": it does, and
        the signal is on the good / bad side for ``direction`` ("higher" =
        higher is better).  The signal side is the side of the mean for
        limit/shift/2-of-3 hits, else the trend's direction;
      "special_cause_neither": it does, but no direction was given.
    special_cause_rules -- the rules the latest point triggers (empty for
    common cause or insufficient data), so it always explains ``variation``.

    assurance -- can the process be relied on to meet ``target``?
      "no_target": no target, or no direction to say which side is good
        (NHSRplotthedots gives no assurance for neutral direction either);
      "insufficient_data": fewer than ``min_points`` observed values;
      "pass": the target lies strictly beyond a limit on the bad side of
        the process (below the LCL when higher is better), so every
        expected point meets it;
      "fail": strictly beyond a limit on the good side (above the UCL when
        higher is better): no expected point meets it;
      "inconsistent": the target lies within the limits (inclusive), so
        the process will sometimes meet and sometimes miss it.

    min_points -- observed (non-missing) points needed before variation or
    assurance is judged; default 15, the figure MDC training material
    commonly gives (20+ preferred).  NHSRplotthedots only warns below 12 and
    calls such limits "trial limits".  mean/limits are still returned as
    trial values from 2 observed points, NaN below that.
    """
    _check_direction(direction, allow_none=True)
    y = _as_float([np.nan if v is None else v for v in values])
    observed = ~np.isnan(y)
    mean, mr = _limits(y, observed)
    ucl, lcl = mean + _XMR_LIMIT * mr, mean - _XMR_LIMIT * mr
    enough = int(observed.sum()) >= max(min_points, 2)
    assurance = _assurance(target, direction, ucl, lcl, enough)
    if not enough:
        return SpcResult(mean, mr, ucl, lcl, "insufficient_data", assurance, [])
    latest = y[observed][-1]
    rules, signal = _latest_signal(special_cause_flags(y), latest > mean)
    return SpcResult(mean, mr, ucl, lcl, _variation(signal, direction), assurance, rules)
