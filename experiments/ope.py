"""Off-policy evaluation: what a policy is worth, estimated from decisions another policy made.

A bandit's raw per-arm means are biased: it sends an arm more often where that arm looks good,
so each arm's sample is a skewed slice of carts. Every decision logs the probability the
logging policy had of choosing what it chose (its *propensity* ``mu(a_i | x_i)``); reweighting
by it recovers unbiased values of "always arm a" or of any other policy ``pi``.

With ``w_i = pi(a_i | x_i) / mu(a_i | x_i)`` and reward ``r_i`` (profit, or conversion):

* IPS:    ``V = mean(w_i r_i)`` — unbiased; variance grows with the weights.
* SNIPS:  ``V = sum(w_i r_i) / sum(w_i)`` — self-normalised (Hajek); a little bias, often much
  less variance, and invariant to a constant shift of the reward.
* DR:     ``V = mean(sum_a pi(a|x_i) q(x_i, a) + w_i (r_i - q(x_i, a_i)))`` — unbiased if either
  the propensities or the reward model ``q`` are right, and tighter than IPS when ``q`` is
  good (Dudik, Langford & Li 2011).

Intervals are CLT intervals on the per-decision terms (for SNIPS, on its influence function
``w_i (r_i - V) / mean(w)``). Each decision is treated as one independent contextual-bandit
round; touches of the same cart are not modelled jointly.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np
import numpy.typing as npt
import scipy.stats

from experiments.stats import Outcomes

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Metric = Literal["profit", "conversion"]


@dataclass(frozen=True)
class OPEEstimate:
    """An off-policy value with its ``1 - alpha`` interval.

    ``effective_sample_size = (sum w)^2 / sum w^2`` — how many on-policy decisions the
    reweighted log is worth; far below ``n`` means the target strays from what was logged.
    """

    estimator: str
    value: float | None
    low: float | None
    high: float | None
    n: int
    effective_sample_size: float
    message: str | None = None

    def contains(self, x: float) -> bool:
        return self.low is not None and self.high is not None and self.low <= x <= self.high


@dataclass(frozen=True)
class OPEReport:
    metric: str
    ips: OPEEstimate
    snips: OPEEstimate
    doubly_robust: OPEEstimate


def ips(
    reward: npt.ArrayLike,
    logging_propensity: npt.ArrayLike,
    target_propensity: npt.ArrayLike,
    *,
    alpha: float = 0.05,
) -> OPEEstimate:
    """Inverse propensity scoring.

    Args:
        reward: reward of each logged decision.
        logging_propensity: ``mu(a_i | x_i)`` of the logged action, in (0, 1].
        target_propensity: ``pi(a_i | x_i)``, the target policy's probability of the logged
            action, in [0, 1].
        alpha: 1 - confidence level.

    Example:
        >>> round(ips([1.0, 0.0], [0.5, 0.5], [1.0, 0.0]).value, 3)
        1.0
    """
    r, mu, pi = _validate_weights(reward, logging_propensity, target_propensity, alpha)
    w = pi / mu
    return _clt("ips", w * r, w, alpha)


def snips(
    reward: npt.ArrayLike,
    logging_propensity: npt.ArrayLike,
    target_propensity: npt.ArrayLike,
    *,
    alpha: float = 0.05,
) -> OPEEstimate:
    """Self-normalised IPS (see :func:`ips` for the arguments)."""
    r, mu, pi = _validate_weights(reward, logging_propensity, target_propensity, alpha)
    w = pi / mu
    n = r.shape[0]
    ess = _ess(w)
    if n == 0:
        return OPEEstimate("snips", None, None, None, 0, 0.0, "no data")
    if w.sum() == 0:
        return OPEEstimate(
            "snips",
            None,
            None,
            None,
            n,
            0.0,
            "no overlap: the target never chooses a logged action",
        )
    v = float(np.sum(w * r) / np.sum(w))
    # Delta method: SNIPS - V ~ mean(w (r - V)) / mean(w).
    infl = w * (r - v) / w.mean()
    se = math.sqrt(float(np.mean(infl**2)) / n)
    z = _z(alpha)
    return OPEEstimate("snips", v, v - z * se, v + z * se, n, ess, _small_n(n))


def doubly_robust(
    reward: npt.ArrayLike,
    logging_propensity: npt.ArrayLike,
    action: npt.ArrayLike,
    target_probs: npt.ArrayLike,
    reward_hat: npt.ArrayLike,
    *,
    alpha: float = 0.05,
) -> OPEEstimate:
    """Doubly robust estimate.

    Args:
        reward: reward of each logged decision, shape ``(n,)``.
        logging_propensity: ``mu(a_i | x_i)``, shape ``(n,)``.
        action: column index of the logged action, shape ``(n,)``.
        target_probs: ``pi(a | x_i)`` for every action, shape ``(n, k)``, rows summing to 1.
        reward_hat: reward model ``q(x_i, a)`` for every action, shape ``(n, k)`` — ideally
            cross-fitted (:func:`cross_fit_reward_model`), so a row's prediction did not see
            its own reward.
        alpha: 1 - confidence level.
    """
    r, mu, a, pi_all, q = _validate_dr(
        reward, logging_propensity, action, target_probs, reward_hat, alpha
    )
    n = r.shape[0]
    rows = np.arange(n)
    w = pi_all[rows, a] / mu
    terms = np.sum(pi_all * q, axis=1) + w * (r - q[rows, a])
    return _clt("doubly_robust", terms, w, alpha)


def cross_fit_reward_model(
    action: npt.ArrayLike,
    reward: npt.ArrayLike,
    *,
    n_actions: int,
    strata: npt.ArrayLike | None = None,
    n_folds: int = 2,
    rng: np.random.Generator,
) -> FloatArray:
    """Per-action (x stratum) mean reward, cross-fitted: predictions for all actions, ``(n, k)``.

    Rows are split at random into ``n_folds`` folds; a row's predictions come from the means
    of the *other* folds, so its own reward never enters its prediction (which would make DR's
    correction term shrink toward 0 and its interval too narrow). A cell (stratum, action) with
    no data in the other folds falls back to the action's mean there, then to the overall
    mean.
    """
    a = np.asarray(action, dtype=np.int64)
    r = np.asarray(reward, dtype=np.float64)
    n = a.shape[0]
    if r.shape != (n,):
        raise ValueError(f"reward must have shape ({n},) like action, not {r.shape}")
    if n_actions < 1 or np.any((a < 0) | (a >= n_actions)):
        raise ValueError(f"action must index 0..n_actions-1 (n_actions={n_actions})")
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, not {n_folds}")
    if strata is None:
        s = np.zeros(n, dtype=np.int64)
    else:
        _, s = np.unique(np.asarray(strata), return_inverse=True)
        if s.shape != (n,):
            raise ValueError(f"strata must have shape ({n},)")
    n_s = int(s.max()) + 1 if n else 1
    fold = rng.permutation(n) % n_folds
    out = np.empty((n, n_actions))
    cell = s * n_actions + a
    for f in range(n_folds):
        train = fold != f
        test = ~train
        cnt = np.bincount(cell[train], minlength=n_s * n_actions).astype(np.float64)
        tot = np.bincount(cell[train], weights=r[train], minlength=n_s * n_actions)
        a_cnt = np.bincount(a[train], minlength=n_actions).astype(np.float64)
        a_tot = np.bincount(a[train], weights=r[train], minlength=n_actions)
        overall = float(r[train].mean()) if train.any() else 0.0
        a_mean = np.where(a_cnt > 0, a_tot / np.maximum(a_cnt, 1.0), overall)
        cnt2, tot2 = cnt.reshape(n_s, n_actions), tot.reshape(n_s, n_actions)
        c_mean = np.where(cnt2 > 0, tot2 / np.maximum(cnt2, 1.0), a_mean[None, :])
        out[test] = c_mean[s[test]]
    return out


def policy_value(
    outcomes: Outcomes,
    target_probs: npt.ArrayLike,
    *,
    arms: Sequence[str],
    margin_rate: float,
    metric: Metric = "profit",
    rng: np.random.Generator,
    reward_hat: npt.ArrayLike | None = None,
    n_folds: int = 2,
    alpha: float = 0.05,
) -> OPEReport:
    """Value of a target policy (mean profit per decision, or conversion rate) by IPS, SNIPS, DR.

    Args:
        outcomes: logged decisions with their propensities.
        target_probs: ``pi(a | x_i)`` for each decision and each of ``arms``, ``(n, len(arms))``.
        arms: arm keys, in the column order of ``target_probs``; every logged arm must be one.
        margin_rate: for the profit reward.
        metric: ``"profit"`` (per decision) or ``"conversion"`` (rate).
        rng: for the cross-fitting folds.
        reward_hat: reward model predictions ``(n, len(arms))``; default a cross-fitted
            per-arm x segment mean (:func:`cross_fit_reward_model`).
        n_folds: cross-fitting folds.
        alpha: 1 - confidence level.
    """
    a = _arm_index(outcomes, arms)
    r = _reward(outcomes, margin_rate, metric)
    pi_all = np.asarray(target_probs, dtype=np.float64)
    if pi_all.shape != (len(outcomes), len(arms)):
        raise ValueError(
            f"target_probs must have shape ({len(outcomes)}, {len(arms)}), not {pi_all.shape}"
        )
    q = (
        cross_fit_reward_model(
            a, r, n_actions=len(arms), strata=outcomes.segment, n_folds=n_folds, rng=rng
        )
        if reward_hat is None
        else np.asarray(reward_hat, dtype=np.float64)
    )
    pi_logged = pi_all[np.arange(len(outcomes)), a]
    mu = outcomes.propensity
    return OPEReport(
        metric=metric,
        ips=ips(r, mu, pi_logged, alpha=alpha),
        snips=snips(r, mu, pi_logged, alpha=alpha),
        doubly_robust=doubly_robust(r, mu, a, pi_all, q, alpha=alpha),
    )


def arm_value_ips(
    outcomes: Outcomes,
    arm: str,
    *,
    margin_rate: float,
    metric: Metric = "profit",
    self_normalised: bool = True,
    alpha: float = 0.05,
) -> OPEEstimate:
    """Value of "always ``arm``" from a bandit's log: (SN)IPS with ``pi = 1[a_i = arm]``.

    Self-normalised by default: an arm's value then is a propensity-weighted mean of its own
    rewards, bounded by them, and a constant shift of the reward shifts it the same.

    Example:
        >>> o = Outcomes.from_sequences(arm=["a", "b", "a"], converted=[True, False, False],
        ...                             revenue=[10.0, 0.0, 0.0], propensity=[0.5, 0.5, 1.0])
        >>> round(arm_value_ips(o, "a", margin_rate=1.0).value, 3)
        6.667
    """
    r = _reward(outcomes, margin_rate, metric)
    pi = (outcomes.arm == arm).astype(np.float64)
    est = snips if self_normalised else ips
    return est(r, outcomes.propensity, pi, alpha=alpha)


@dataclass(frozen=True)
class WeightedSums:
    """Sums over one arm's logged decisions, with ``w = 1 / propensity`` and reward ``r``.

    Enough for :func:`arm_value_from_sums` to give the same (SN)IPS value of "always this arm"
    as :func:`arm_value_ips` on the rows, so a database can sum and send back one row per arm
    (or per day and arm: pooling is ``+``).
    """

    w: float = 0.0
    wr: float = 0.0
    w2: float = 0.0
    w2r: float = 0.0
    w2r2: float = 0.0

    def __add__(self, other: WeightedSums) -> WeightedSums:
        if not isinstance(other, WeightedSums):
            return NotImplemented
        return WeightedSums(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


def arm_value_from_sums(
    sums: WeightedSums, n: int, *, self_normalised: bool = True, alpha: float = 0.05
) -> OPEEstimate:
    """:func:`arm_value_ips` from an arm's :class:`WeightedSums` over a log of ``n`` decisions.

    ``n`` counts every logged decision (those of the other arms too: their weight for "always
    this arm" is 0). The terms are the same as on rows, expanded: IPS's variance is
    ``(sum (w r)^2 - n mean^2) / (n - 1)``; SNIPS's influence ``w (r - V) / mean(w)`` has
    ``sum infl^2 = (w2r2 - 2 V w2r + V^2 w2) / mean(w)^2``.

    Example:
        >>> # arm "a" logged twice: reward 10 at propensity 0.5, reward 0 at propensity 1
        >>> sums = WeightedSums(w=3.0, wr=20.0, w2=5.0, w2r=40.0, w2r2=400.0)
        >>> round(arm_value_from_sums(sums, 3).value, 3)
        6.667
    """
    _z(alpha)
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    name = "snips" if self_normalised else "ips"
    if n == 0:
        return OPEEstimate(name, None, None, None, 0, 0.0, "no data")
    ess = sums.w**2 / sums.w2 if sums.w2 > 0 else 0.0
    z = _z(alpha)
    if self_normalised:
        if sums.w <= 0:
            return OPEEstimate(
                name,
                None,
                None,
                None,
                n,
                0.0,
                "no overlap: the target never chooses a logged action",
            )
        v = sums.wr / sums.w
        mean_w = sums.w / n
        spread = _cancelled(sums.w2r2, 2.0 * v * sums.w2r, v * v * sums.w2, n)
        se = math.sqrt(spread / mean_w**2 / n / n)
        return OPEEstimate(name, v, v - z * se, v + z * se, n, ess, _small_n(n))
    v = sums.wr / n
    se = math.sqrt(_cancelled(sums.w2r2, n * v * v, 0.0, n) / (n - 1) / n) if n > 1 else math.inf
    msg = _small_n(n)
    if sums.w <= 0:
        msg = "no overlap: the target never chooses a logged action (estimate rests on 0 rows)"
    return OPEEstimate(name, v, v - z * se, v + z * se, n, ess, msg)


def _cancelled(a: float, b: float, c: float, n: int) -> float:
    """``a - b + c`` (>= 0 in exact arithmetic), or 0 where it is within the rounding of its
    ``n``-term sums: where every reward is alike the expansion cancels, and what is left is
    rounding noise whose square root would widen the interval by ~1e-9 of nothing."""
    spread = a - b + c
    if spread <= n * sys.float_info.epsilon * (abs(a) + abs(b) + abs(c)):
        return 0.0
    return spread


# --------------------------------------------------------------------------------------------


def _reward(outcomes: Outcomes, margin_rate: float, metric: str) -> FloatArray:
    if metric == "profit":
        return outcomes.profit(margin_rate)
    if metric == "conversion":
        return outcomes.converted.astype(np.float64)
    raise ValueError(f"metric must be 'profit' or 'conversion', not {metric!r}")


def _arm_index(outcomes: Outcomes, arms: Sequence[str]) -> IntArray:
    keys = np.asarray(list(arms), dtype=np.str_)
    if len(set(arms)) != len(arms) or not len(arms):
        raise ValueError("arms must be distinct and non-empty")
    order = np.argsort(keys)
    pos = np.searchsorted(keys[order], outcomes.arm)
    pos = np.minimum(pos, len(arms) - 1)
    found = keys[order][pos] == outcomes.arm
    if not np.all(found):
        missing = sorted(set(outcomes.arm[~found].tolist()))
        raise ValueError(f"arms lacks logged arms {missing}")
    return np.asarray(order[pos], dtype=np.int64)


def _z(alpha: float) -> float:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), not {alpha}")
    return float(scipy.stats.norm.ppf(1.0 - alpha / 2.0))


def _ess(w: FloatArray) -> float:
    s2 = float(np.sum(w**2))
    return float(np.sum(w)) ** 2 / s2 if s2 > 0 else 0.0


def _small_n(n: int) -> str | None:
    return "fewer than 30 decisions: the CLT interval is rough" if n < 30 else None


def _clt(name: str, terms: FloatArray, w: FloatArray, alpha: float) -> OPEEstimate:
    n = terms.shape[0]
    if n == 0:
        return OPEEstimate(name, None, None, None, 0, 0.0, "no data")
    v = float(terms.mean())
    se = float(terms.std(ddof=1)) / math.sqrt(n) if n > 1 else math.inf
    z = _z(alpha)
    msg = _small_n(n)
    if not np.any(w > 0):
        msg = "no overlap: the target never chooses a logged action (estimate rests on 0 rows)"
    return OPEEstimate(name, v, v - z * se, v + z * se, n, _ess(w), msg)


def _validate_weights(
    reward: npt.ArrayLike,
    logging_propensity: npt.ArrayLike,
    target_propensity: npt.ArrayLike,
    alpha: float,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    r = np.asarray(reward, dtype=np.float64)
    mu = np.asarray(logging_propensity, dtype=np.float64)
    pi = np.asarray(target_propensity, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"reward must be one-dimensional, not shape {r.shape}")
    if mu.shape != r.shape:
        raise ValueError(f"logging_propensity must have shape {r.shape} like reward")
    if pi.shape != r.shape:
        raise ValueError(f"target_propensity must have shape {r.shape} like reward")
    if not np.all(np.isfinite(r)):
        raise ValueError("reward must be finite")
    if not np.all((mu > 0) & (mu <= 1)):
        raise ValueError("logging_propensity must be in (0, 1]")
    if not np.all((pi >= 0) & (pi <= 1)):
        raise ValueError("target_propensity must be in [0, 1]")
    _z(alpha)
    return r, mu, pi


def _validate_dr(
    reward: npt.ArrayLike,
    logging_propensity: npt.ArrayLike,
    action: npt.ArrayLike,
    target_probs: npt.ArrayLike,
    reward_hat: npt.ArrayLike,
    alpha: float,
) -> tuple[FloatArray, FloatArray, IntArray, FloatArray, FloatArray]:
    r = np.asarray(reward, dtype=np.float64)
    a = np.asarray(action, dtype=np.int64)
    pi_all = np.asarray(target_probs, dtype=np.float64)
    q = np.asarray(reward_hat, dtype=np.float64)
    n = r.shape[0]
    if pi_all.ndim != 2 or pi_all.shape[0] != n:
        raise ValueError(f"target_probs must have shape ({n}, k)")
    k = pi_all.shape[1]
    if q.shape != (n, k):
        raise ValueError(f"reward_hat must have shape ({n}, {k}) like target_probs")
    if a.shape != (n,) or np.any((a < 0) | (a >= k)):
        raise ValueError(f"action must have shape ({n},) and index 0..{k - 1}")
    if not np.allclose(pi_all.sum(axis=1), 1.0, atol=1e-6) or np.any(pi_all < 0):
        raise ValueError("target_probs rows must be probabilities summing to 1")
    if not np.all(np.isfinite(q)):
        raise ValueError("reward_hat must be finite")
    _, mu, _ = _validate_weights(r, logging_propensity, pi_all[np.arange(n), a], alpha)
    return r, mu, a, pi_all, q
