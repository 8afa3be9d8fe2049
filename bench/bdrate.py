"""Bjøntegaard deltas (BD-rate, BD-PSNR) with piecewise cubic interpolation.

This is the "pchip" variant of the Bjøntegaard metric used by the JVET common
test conditions since VTM (JVET-K0491 / the CTC Excel sheet) and by the
``bjontegaard`` Python package: each RD curve is interpolated with a
monotone piecewise cubic Hermite polynomial (:class:`scipy.interpolate.PchipInterpolator`)
instead of the original single cubic fit (VCEG-M33), which overshoots on
curves with uneven point spacing.

BD-rate::

    anchor:  (PSNR_i, log10 R_i) --pchip--> f_a(PSNR)
    test:    (PSNR_j, log10 R_j) --pchip--> f_t(PSNR)
    [lo, hi] = overlap of the two PSNR ranges
    Δ = (∫ f_t - ∫ f_a) / (hi - lo)          over [lo, hi]
    BD-rate = (10**Δ - 1) * 100   percent    (negative = test saves bits)

BD-PSNR swaps the axes: PSNR as a function of log10 rate, integrated over
the shared log-rate range, and reports the mean difference in dB.

Any rate unit works (bpp, bytes, kbps) as long as both curves use the same
one: the metric only sees rate ratios.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator

__all__ = ["bd_rate", "bd_psnr"]


def _curve(rate: Sequence[float], quality: Sequence[float], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate one RD curve and return ``(log10 rate, quality)`` as arrays."""
    r = np.asarray(rate, dtype=np.float64).ravel()
    q = np.asarray(quality, dtype=np.float64).ravel()
    if r.shape != q.shape:
        raise ValueError(f"{name}: {r.size} rates but {q.size} quality values")
    if r.size < 2:
        raise ValueError(f"{name}: need at least 2 RD points, got {r.size}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(q))):
        raise ValueError(f"{name}: rates and quality values must be finite")
    if np.any(r <= 0):
        raise ValueError(f"{name}: rates must be positive (the metric works on log rate)")
    return np.log10(r), q


def _sorted_strict(x: np.ndarray, y: np.ndarray, name: str, axis: str) -> tuple[np.ndarray, np.ndarray]:
    """Sort a curve by ``x``; the interpolant needs strictly increasing abscissae."""
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    if np.any(np.diff(x) <= 0):
        raise ValueError(f"{name}: two RD points share the same {axis}; drop duplicates before computing BD metrics")
    return x, y


def _mean_gap(
    x_anchor: np.ndarray,
    y_anchor: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    axis: str,
) -> float:
    """Mean of ``y_test(x) - y_anchor(x)`` over the overlap of the two x ranges."""
    x_anchor, y_anchor = _sorted_strict(x_anchor, y_anchor, "anchor", axis)
    x_test, y_test = _sorted_strict(x_test, y_test, "test", axis)
    lo = max(x_anchor[0], x_test[0])
    hi = min(x_anchor[-1], x_test[-1])
    if not hi > lo:
        raise ValueError(
            f"the {axis} ranges of the two curves do not overlap "
            f"(anchor {x_anchor[0]:.4g}..{x_anchor[-1]:.4g}, test {x_test[0]:.4g}..{x_test[-1]:.4g})"
        )
    # extrapolate=False: the integral never leaves [lo, hi], and if it ever
    # did, a NaN is better than a silent cubic extrapolation.
    int_anchor = PchipInterpolator(x_anchor, y_anchor, extrapolate=False).integrate(lo, hi)
    int_test = PchipInterpolator(x_test, y_test, extrapolate=False).integrate(lo, hi)
    return float((int_test - int_anchor) / (hi - lo))


def bd_rate(
    rate_anchor: Sequence[float],
    psnr_anchor: Sequence[float],
    rate_test: Sequence[float],
    psnr_test: Sequence[float],
) -> float:
    """Average rate difference of ``test`` against ``anchor`` at equal quality.

    Args:
        rate_anchor: sequence of float. Anchor rates (any positive unit), any order.
        psnr_anchor: sequence of float. Anchor quality at those rates (dB).
        rate_test: sequence of float. Test rates, same unit as the anchor.
        psnr_test: sequence of float. Test quality at those rates (dB).

    Returns:
        float. Percent; negative means the test codec needs fewer bits for
        the same PSNR (``-10.0`` is 10 % fewer bits).

    Raises:
        ValueError: fewer than 2 points, mismatched lengths, non-finite or
            non-positive values, two points with the same PSNR, or PSNR
            ranges that do not overlap.
    """
    log_ra, qa = _curve(rate_anchor, psnr_anchor, "anchor")
    log_rt, qt = _curve(rate_test, psnr_test, "test")
    delta = _mean_gap(qa, log_ra, qt, log_rt, axis="PSNR")
    return (math.pow(10.0, delta) - 1.0) * 100.0


def bd_psnr(
    rate_anchor: Sequence[float],
    psnr_anchor: Sequence[float],
    rate_test: Sequence[float],
    psnr_test: Sequence[float],
) -> float:
    """Average PSNR difference of ``test`` against ``anchor`` at equal rate.

    Args:
        rate_anchor: sequence of float. Anchor rates (any positive unit), any order.
        psnr_anchor: sequence of float. Anchor quality at those rates (dB).
        rate_test: sequence of float. Test rates, same unit as the anchor.
        psnr_test: sequence of float. Test quality at those rates (dB).

    Returns:
        float. dB; positive means the test codec is better at the same rate.

    Raises:
        ValueError: as :func:`bd_rate`, with "rate" in place of "PSNR".
    """
    log_ra, qa = _curve(rate_anchor, psnr_anchor, "anchor")
    log_rt, qt = _curve(rate_test, psnr_test, "test")
    return _mean_gap(log_ra, qa, log_rt, qt, axis="rate")
