"""Seeded simulators for the statistics tests: vectorised, so thousands of experiments run in
well under a second.

Profit per cart in every simulated world follows ``optimizer.Economics``:
``converted * (value * (margin - discount_rate)) - message_cost``, with order values drawn from
a Gamma distribution (right-skewed, like real baskets).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Arm:
    """A simulated arm: conversion rate, Gamma(shape, scale) order value, costs."""

    p: float
    value_shape: float = 2.0
    value_scale: float = 40.0
    margin: float = 0.35
    discount_rate: float = 0.0
    message_cost: float = 0.0

    @property
    def value_mean(self) -> float:
        return self.value_shape * self.value_scale

    @property
    def unit_margin(self) -> float:
        return self.margin - self.discount_rate

    @property
    def profit_mean(self) -> float:
        """Expected profit per cart."""
        return self.p * self.value_mean * self.unit_margin - self.message_cost


@dataclass(frozen=True)
class CellTotals:
    """Sufficient statistics of many independent cells (e.g. experiments x days)."""

    carts: FloatArray
    conversions: FloatArray
    revenue: FloatArray
    revenue_sq: FloatArray
    profit: FloatArray
    profit_sq: FloatArray

    def cumsum(self, axis: int = -1) -> CellTotals:
        return CellTotals(*(np.cumsum(getattr(self, f), axis=axis) for f in self.__annotations__))

    def profit_mean_var(self) -> tuple[FloatArray, FloatArray]:
        """Mean profit per cart and the variance of that mean (s^2 / n)."""
        n = self.carts
        mean = self.profit / n
        s2 = (self.profit_sq - self.profit**2 / n) / (n - 1)
        return mean, np.maximum(s2, 0.0) / n

    def conversion_mean_var(self) -> tuple[FloatArray, FloatArray]:
        p = self.conversions / self.carts
        return p, p * (1 - p) / self.carts


def simulate_cells(
    rng: np.random.Generator, arm: Arm, shape: tuple[int, ...], carts: int
) -> CellTotals:
    """``carts`` carts in each of ``shape`` independent cells, summarised per cell.

    Only converted carts need an order value, so values are drawn for the conversions alone
    (about ``p`` of the rows) and summed back into their cells with ``bincount``.
    """
    n_cells = int(np.prod(shape))
    k = rng.binomial(carts, arm.p, size=n_cells)
    values = rng.gamma(arm.value_shape, arm.value_scale, size=int(k.sum()))
    cell = np.repeat(np.arange(n_cells), k)
    gain = values * arm.unit_margin - arm.message_cost
    rev = np.bincount(cell, weights=values, minlength=n_cells)
    rev2 = np.bincount(cell, weights=values**2, minlength=n_cells)
    prof = np.bincount(cell, weights=gain, minlength=n_cells) - (carts - k) * arm.message_cost
    prof2 = np.bincount(cell, weights=gain**2, minlength=n_cells) + (carts - k) * (
        arm.message_cost**2
    )
    return CellTotals(
        carts=np.full(shape, float(carts)),
        conversions=k.reshape(shape).astype(np.float64),
        revenue=rev.reshape(shape).astype(np.float64),
        revenue_sq=rev2.reshape(shape).astype(np.float64),
        profit=prof.reshape(shape),
        profit_sq=prof2.reshape(shape),
    )


# --------------------------------------------------------------------------------------------
# A logged contextual bandit for off-policy evaluation

ARM_KEYS = ("holdout", "email/60m/0%", "sms/30m/10%", "email/1440m/0%")
MESSAGE_COST = np.array([0.0, 0.002, 0.03, 0.002])
DISCOUNT_RATE = np.array([0.0, 0.0, 0.10, 0.0])
SEGMENT_KEYS = ("new", "returning", "vip")
SEGMENT_SHARE = np.array([0.5, 0.3, 0.2])
VALUE_SHAPE = 2.0
VALUE_SCALE = np.array([30.0, 45.0, 75.0])  # mean order value 60, 90, 150 by segment
# conversion rate [segment, arm]: messages lift it; the discount most where carts are small
CONVERSION = np.array(
    [
        [0.05, 0.09, 0.14, 0.07],
        [0.10, 0.15, 0.17, 0.13],
        [0.20, 0.27, 0.28, 0.24],
    ]
)
# logging policy mu[segment, arm]: non-uniform, favouring what looked good in each segment
LOGGING = np.array(
    [
        [0.10, 0.25, 0.50, 0.15],
        [0.10, 0.45, 0.25, 0.20],
        [0.10, 0.20, 0.20, 0.50],
    ]
)
# a different target policy pi[segment, arm] to evaluate
TARGET = np.array(
    [
        [0.05, 0.50, 0.30, 0.15],
        [0.05, 0.25, 0.50, 0.20],
        [0.05, 0.60, 0.25, 0.10],
    ]
)
MARGIN = 0.35


def expected_reward(metric: str) -> FloatArray:
    """E[reward | segment, arm], shape (segments, arms)."""
    if metric == "conversion":
        return CONVERSION.copy()
    value = VALUE_SHAPE * VALUE_SCALE[:, None]
    out = CONVERSION * value * (MARGIN - DISCOUNT_RATE[None, :]) - MESSAGE_COST[None, :]
    return np.asarray(out, dtype=np.float64)


def policy_truth(policy: FloatArray, metric: str) -> float:
    """On-policy value of a per-segment policy, computed analytically."""
    return float(SEGMENT_SHARE @ np.sum(policy * expected_reward(metric), axis=1))


@dataclass(frozen=True)
class Log:
    segment: IntArray
    action: IntArray
    converted: npt.NDArray[np.bool_]
    revenue: FloatArray
    discount_cost: FloatArray
    message_cost: FloatArray
    propensity: FloatArray


def simulate_log(rng: np.random.Generator, n: int, policy: FloatArray = LOGGING) -> Log:
    """``n`` decisions logged by a per-segment stochastic policy."""
    seg = rng.choice(len(SEGMENT_KEYS), size=n, p=SEGMENT_SHARE)
    # inverse-CDF sampling of one action per row, all rows at once
    cdf = np.cumsum(policy[seg], axis=1)
    action = (rng.random(n)[:, None] > cdf).sum(axis=1)
    action = np.minimum(action, len(ARM_KEYS) - 1)
    conv = rng.random(n) < CONVERSION[seg, action]
    value = rng.gamma(VALUE_SHAPE, VALUE_SCALE[seg])
    revenue = np.where(conv, value, 0.0)
    return Log(
        segment=seg,
        action=action,
        converted=conv,
        revenue=revenue,
        discount_cost=revenue * DISCOUNT_RATE[action],
        message_cost=MESSAGE_COST[action],
        propensity=policy[seg, action],
    )
