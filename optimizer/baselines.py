"""Reference policies for the simulator: send nothing, uniform random, epsilon-greedy.

The fixed 1 h / 24 h / 72 h email schedule is :class:`optimizer.policy.FixedSchedulePolicy`;
the oracle that knows the truth lives with the simulator (:mod:`optimizer.simulate`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from optimizer.arms import Arm, Decision, Economics


def _feasible(arms: Sequence[Arm], context: Mapping[str, Any]) -> list[int]:
    channels = set(context.get("channels") or ())
    return [i for i, a in enumerate(arms) if a.is_holdout or a.channel in channels]


class HoldoutPolicy:
    """Always send nothing: what happens anyway, the baseline of incremental profit."""

    def __init__(self, max_touches: int = 3) -> None:
        self.max_touches = max_touches

    def choose(self, context: Mapping[str, Any], *, now: datetime) -> Decision:
        return Decision(arm=Arm.holdout(), propensity=1.0, context=dict(context), decided_at=now)

    def record(
        self,
        decision: Decision,
        *,
        converted: bool,
        order_value: float,
        message_sent: bool,
        at: datetime,
    ) -> None:
        """Learns nothing."""
        del decision, converted, order_value, message_sent, at


class UniformRandomPolicy:
    """Every feasible arm (holdout included) with equal probability."""

    def __init__(
        self, arms: Sequence[Arm], *, rng: np.random.Generator, max_touches: int = 3
    ) -> None:
        self.arms = list(arms) if Arm.holdout() in arms else [*arms, Arm.holdout()]
        self.rng = rng
        self.max_touches = max_touches

    def choose(self, context: Mapping[str, Any], *, now: datetime) -> Decision:
        feasible = _feasible(self.arms, context)
        arm = self.arms[feasible[int(self.rng.integers(len(feasible)))]]
        return Decision(
            arm=arm, propensity=1.0 / len(feasible), context=dict(context), decided_at=now
        )

    def record(
        self,
        decision: Decision,
        *,
        converted: bool,
        order_value: float,
        message_sent: bool,
        at: datetime,
    ) -> None:
        """Learns nothing."""
        del decision, converted, order_value, message_sent, at


class EpsilonGreedyPolicy:
    """Epsilon-greedy on the mean realised profit of each (touch, arm), ignoring the context.

    Untried feasible arms are tried first; then with probability ``epsilon`` a uniformly
    random feasible arm, otherwise the one with the best mean profit so far.
    """

    def __init__(
        self,
        arms: Sequence[Arm],
        economics: Economics,
        *,
        rng: np.random.Generator,
        epsilon: float = 0.1,
        max_touches: int = 3,
    ) -> None:
        if not 0.0 < epsilon < 1.0:
            raise ValueError(f"epsilon must be in (0, 1), not {epsilon}")
        self.arms = list(arms) if Arm.holdout() in arms else [*arms, Arm.holdout()]
        self.index = {a: i for i, a in enumerate(self.arms)}
        self.economics = economics
        self.rng = rng
        self.epsilon = epsilon
        self.max_touches = max_touches
        self.total = np.zeros((max_touches, len(self.arms)))
        self.count = np.zeros((max_touches, len(self.arms)))

    def choose(self, context: Mapping[str, Any], *, now: datetime) -> Decision:
        touch = min(max(int(context.get("touch", 1)), 1), self.max_touches) - 1
        feasible = np.array(_feasible(self.arms, context))
        counts = self.count[touch, feasible]
        means = np.where(counts > 0, self.total[touch, feasible] / np.maximum(counts, 1), np.inf)
        greedy = int(feasible[int(np.argmax(means))])
        if self.rng.random() < self.epsilon:
            arm = int(feasible[int(self.rng.integers(feasible.size))])
        else:
            arm = greedy
        propensity = self.epsilon / feasible.size + (1.0 - self.epsilon) * (arm == greedy)
        return Decision(
            arm=self.arms[arm], propensity=propensity, context=dict(context), decided_at=now
        )

    def record(
        self,
        decision: Decision,
        *,
        converted: bool,
        order_value: float,
        message_sent: bool,
        at: datetime,
    ) -> None:
        del at
        touch = min(max(int(decision.context.get("touch", 1)), 1), self.max_touches) - 1
        arm = self.index[decision.arm]
        profit = self.economics.profit(
            decision.arm, converted=converted, order_value=order_value, message_sent=message_sent
        )
        self.total[touch, arm] += profit
        self.count[touch, arm] += 1
