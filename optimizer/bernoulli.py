"""The classic check of Chapelle & Li (2011): Thompson sampling on Bernoulli bandits.

This is the Beta-Bernoulli special case of :class:`optimizer.ThompsonPolicy`'s sampler (one
posterior draw per arm, play the argmax; with no context, a conjugate Beta posterior replaces
the Laplace approximation), vectorised over independent runs so that 10^6 rounds take seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def bernoulli_kl(p: float, q: float) -> float:
    """KL divergence between Bernoulli(p) and Bernoulli(q)."""
    if not (0.0 < p < 1.0 and 0.0 < q < 1.0):
        raise ValueError(f"p and q must be in (0, 1), not {p}, {q}")
    return p * math.log(p / q) + (1.0 - p) * math.log((1.0 - p) / (1.0 - q))


def lai_robbins_bound(means: Sequence[float], horizon: float) -> float:
    """Lai & Robbins' asymptotic lower bound on regret: ``sum_i gap_i / KL(mu_i, mu*) * ln T``."""
    best = max(means)
    return sum((best - m) / bernoulli_kl(m, best) for m in means if m < best) * math.log(horizon)


def thompson_bernoulli_regret(
    means: Sequence[float],
    horizon: int,
    *,
    n_runs: int,
    rng: np.random.Generator,
    checkpoints: Sequence[int] = (),
) -> FloatArray:
    """Mean cumulative (pseudo-)regret of Beta(1, 1) Thompson sampling over ``n_runs`` runs.

    Args:
        means: success probability of each arm.
        horizon: number of rounds.
        n_runs: independent runs, simulated side by side.
        rng: the source of randomness.
        checkpoints: rounds (1-based) at which to report; default only ``horizon``.

    Returns:
        Mean cumulative expected regret at each checkpoint, shape ``(len(checkpoints),)``.

    Example:
        >>> r = thompson_bernoulli_regret([0.5, 0.4], 1000, n_runs=4,
        ...                               rng=np.random.default_rng(0))
        >>> float(r[0]) < 100
        True
    """
    mu = np.asarray(means, dtype=np.float64)
    if mu.ndim != 1 or mu.size < 2 or np.any((mu <= 0) | (mu >= 1)):
        raise ValueError("means must list at least two probabilities in (0, 1)")
    if horizon < 1 or n_runs < 1:
        raise ValueError(f"horizon and n_runs must be >= 1, not {horizon}, {n_runs}")
    marks = sorted(set(checkpoints or (horizon,)))
    if marks[0] < 1 or marks[-1] > horizon:
        raise ValueError(f"checkpoints must lie in 1..{horizon}")
    gaps = mu.max() - mu
    wins = np.ones((n_runs, mu.size))
    losses = np.ones((n_runs, mu.size))
    runs = np.arange(n_runs)
    regret = np.zeros(n_runs)
    out = []
    step = 0
    for mark in marks:
        for _ in range(mark - step):
            arms = rng.beta(wins, losses).argmax(axis=1)
            reward = rng.random(n_runs) < mu[arms]
            wins[runs, arms] += reward
            losses[runs, arms] += ~reward
            regret += gaps[arms]
        step = mark
        out.append(regret.mean())
    return np.array(out)
