"""Always-valid inference for a difference of means: mSPRT p-values and confidence sequences.

Growth teams look at experiments every day. A fixed-horizon p-value checked daily and acted on
the first time it dips below 0.05 rejects a true null far more often than 5% of the time (see
``tests/experiments/test_sequential.py``). The tests here stay valid at *every* look.

The statistic is the mixture sequential probability ratio test (mSPRT) of Johari, Koomen,
Pekelis & Walsh (2017, "Peeking at A/B tests"), as used by Optimizely's Stats Engine, for the
difference ``theta = mean_T - mean_C`` with its Gaussian approximation. At a look with estimate
``d`` and estimated variance ``V`` of ``d`` (``V = s_T^2/n_T + s_C^2/n_C``), mixing the
alternative over ``theta ~ N(0, tau^2)``::

    Lambda = sqrt(V / (V + tau^2)) * exp(d^2 * tau^2 / (2 * V * (V + tau^2)))

``Lambda`` is (asymptotically) a non-negative martingale under ``theta = 0``, so by Ville's
inequality ``P(sup_n Lambda_n >= 1/alpha) <= alpha``. The always-valid p-value is therefore
``p_n = min(1, min_{m <= n} 1 / Lambda_m)`` — the running minimum makes it non-increasing.

Inverting the same test at every ``theta`` gives the confidence sequence
``d +/- sqrt(V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2) / V)))``, intersected
over looks (running max of the lower bounds, running min of the upper ones).

With ``V = sigma^2 / N`` and ``tau^2 = rho^2 sigma^2`` this is exactly the asymptotic
confidence sequence of Waudby-Smith et al. (2021) that GrowthBook uses,
``d +/- sigma sqrt(2 (N rho^2 + 1) / (N^2 rho^2) * log(sqrt(N rho^2 + 1) / alpha))``. So the
default mixing variance follows GrowthBook: ``rho`` is tuned so the sequence is tightest at
``tuning_n`` units, and ``tau^2 = rho^2 * sigma_hat^2`` with ``sigma_hat^2 = V * N`` — in the
metric's own units, whatever they are (conversion, dollars of profit per cart).

All functions are vectorised over any leading axes; the *last* axis is the sequence of looks.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# GrowthBook's default "sequential tuning parameter": the sample size at which the confidence
# sequence is tightest. Abandoned-cart experiments run a few thousand carts per arm and week.
DEFAULT_TUNING_N = 5000.0


def tuned_rho2(tuning_n: float = DEFAULT_TUNING_N, alpha: float = 0.05) -> float:
    """Mixing variance per unit variance that makes the sequence tightest at ``tuning_n``.

    Waudby-Smith et al. (2021), eq. (C.3) as GrowthBook implements it:
    ``rho^2 = (-2 log(alpha) + log(-2 log(alpha) + 1)) / tuning_n``.

    Example:
        >>> round(tuned_rho2(5000, 0.05), 6)
        0.001587
    """
    _validate_alpha(alpha)
    if not tuning_n > 0:
        raise ValueError(f"tuning_n must be > 0, not {tuning_n}")
    two_log = -2.0 * math.log(alpha)
    return (two_log + math.log(two_log + 1.0)) / tuning_n


def default_tau2(var: FloatArray, n: FloatArray, *, tuning_n: float, alpha: float) -> FloatArray:
    """GrowthBook-style mixing variance ``rho^2 * sigma_hat^2`` with ``sigma_hat^2 = V * n``."""
    return tuned_rho2(tuning_n, alpha) * np.asarray(var, dtype=np.float64) * n


def msprt_log_lr(diff: FloatArray, var: FloatArray, tau2: FloatArray | float) -> FloatArray:
    """log of the mixture likelihood ratio ``Lambda`` at each look (0 where ``V`` is not > 0).

    A look with no usable variance (too few units, or every unit alike) carries no evidence:
    its ratio is 1, so its p-value is 1 and its confidence interval the whole line.
    """
    d = np.asarray(diff, dtype=np.float64)
    v = np.asarray(var, dtype=np.float64)
    t = np.broadcast_to(np.asarray(tau2, dtype=np.float64), np.broadcast_shapes(d.shape, v.shape))
    ok = np.isfinite(d) & np.isfinite(v) & (v > 0) & np.isfinite(t) & (t > 0)
    v_ok = np.where(ok, v, 1.0)
    t_ok = np.where(ok, t, 1.0)
    d_ok = np.where(ok, d, 0.0)
    # log Lambda = 0.5 log(V / (V + tau^2)) + d^2 tau^2 / (2 V (V + tau^2)); log1p keeps the
    # first term accurate when tau^2 << V (early looks).
    log_lr = -0.5 * np.log1p(t_ok / v_ok) + d_ok**2 * t_ok / (2.0 * v_ok * (v_ok + t_ok))
    return np.where(ok, log_lr, 0.0)


def always_valid_p_values(
    diff: FloatArray, var: FloatArray, tau2: FloatArray | float
) -> FloatArray:
    """Always-valid p-values at each look: ``min(1, running min of 1/Lambda)`` on the last axis.

    Example:
        >>> p = always_valid_p_values(np.array([0.0, 0.05, 0.01]), np.array([1e-3] * 3), 1e-3)
        >>> bool(p[2] == p[1] < 1.0)
        True
    """
    p = np.minimum(1.0, np.exp(-msprt_log_lr(diff, var, tau2)))
    return np.minimum.accumulate(p, axis=-1)


def confidence_sequence(
    diff: FloatArray, var: FloatArray, tau2: FloatArray | float, *, alpha: float = 0.05
) -> tuple[FloatArray, FloatArray]:
    """Lower and upper bounds of the ``1 - alpha`` confidence sequence at each look.

    Bounds are intersected over looks (running max / min on the last axis), so they only ever
    tighten. Looks with no usable variance contribute ``(-inf, inf)``.
    """
    _validate_alpha(alpha)
    d = np.asarray(diff, dtype=np.float64)
    v = np.asarray(var, dtype=np.float64)
    t = np.broadcast_to(np.asarray(tau2, dtype=np.float64), np.broadcast_shapes(d.shape, v.shape))
    ok = np.isfinite(d) & np.isfinite(v) & (v > 0) & np.isfinite(t) & (t > 0)
    v_ok = np.where(ok, v, 1.0)
    t_ok = np.where(ok, t, 1.0)
    half = np.sqrt(
        v_ok * (v_ok + t_ok) / t_ok * (2.0 * math.log(1.0 / alpha) + np.log1p(t_ok / v_ok))
    )
    lo = np.where(ok, d - half, -np.inf)
    hi = np.where(ok, d + half, np.inf)
    return np.maximum.accumulate(lo, axis=-1), np.minimum.accumulate(hi, axis=-1)


def _validate_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), not {alpha}")
