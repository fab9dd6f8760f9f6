"""A tiny synthetic world for the policy's statistical tests: known conversion probabilities.

Outcomes are drawn from fixed probabilities per (segment, arm) and reported with an optional
delay, so each test controls exactly what the policy could know.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from optimizer import Arm, Decision, Economics, ThompsonPolicy

START = datetime(2025, 3, 3, tzinfo=UTC)
ECON = Economics(margin_rate=0.4, message_cost={"email": 0.002, "sms": 0.03, "push": 0.0005})
ARMS = [
    Arm(60, "email"),
    Arm(60, "email", 10.0),
    Arm(60, "sms"),
    Arm(1440, "email"),
    Arm.holdout(),
]


def context(segment: str = "new", *, value: float = 80.0, touch: int = 1) -> dict[str, Any]:
    return {
        "cart_value": value,
        "customer_type": segment if segment in ("new", "returning") else "new",
        "device": "desktop" if segment == "desktop" else "mobile",
        "checkout_stage": "cart",
        "previous_abandons": 0,
        "channels": ["email", "sms"],
        "local_hour": 12,
        "touch": touch,
    }


def run(
    policy: ThompsonPolicy,
    truth: Callable[[Mapping[str, Any], Arm, float], float],
    contexts: Callable[[int, np.random.Generator], dict[str, Any]],
    *,
    n: int,
    rng: np.random.Generator,
    per_hour: float = 100.0,
    conversion_lag_hours: float | Callable[[Arm, np.random.Generator], float] = 0.0,
    window_hours: float = 0.0,
    stop_hours: float | None = None,
) -> list[tuple[Decision, bool]]:
    """Make ``n`` decisions, ``per_hour`` of them per simulated hour, and report outcomes.

    ``truth(context, arm, hours)`` is the conversion probability. A conversion is recorded
    ``Exp(conversion_lag_hours)`` after the decision (or ``conversion_lag_hours(arm, rng)``
    hours, when it is a function), a non-conversion ``window_hours`` after
    it; with ``stop_hours`` the run ends there and later outcomes stay pending.
    """
    events: list[tuple[float, int, Decision, bool]] = []
    made: list[tuple[Decision, bool]] = []
    seq = 0
    for i in range(n):
        hours = i / per_hour
        while events and events[0][0] <= hours:
            at, _, decision, converted = heapq.heappop(events)
            _record(policy, decision, converted, at)
        ctx = contexts(i, rng)
        decision = policy.choose(ctx, now=START + timedelta(hours=hours))
        converted = bool(rng.random() < truth(ctx, decision.arm, hours))
        made.append((decision, converted))
        if not converted:
            lag = window_hours
        elif callable(conversion_lag_hours):
            lag = conversion_lag_hours(decision.arm, rng)
        else:
            lag = rng.exponential(conversion_lag_hours)
        heapq.heappush(events, (hours + lag, seq, decision, converted))
        seq += 1
    end = stop_hours if stop_hours is not None else float("inf")
    while events and events[0][0] <= end:
        at, _, decision, converted = heapq.heappop(events)
        _record(policy, decision, converted, at)
    return made


def _record(policy: ThompsonPolicy, decision: Decision, converted: bool, hours: float) -> None:
    policy.record(
        decision,
        converted=converted,
        order_value=float(decision.context["cart_value"]),
        message_sent=not decision.arm.is_holdout,
        at=START + timedelta(hours=hours),
    )


def device_world() -> tuple[
    Callable[[Mapping[str, Any], Arm, float], float],
    Callable[[int, np.random.Generator], dict[str, Any]],
]:
    """(truth, contexts) of two device segments with their own best arms (SMS for phones, a
    day-late email for desktops), half the carts each, and an hour of day that changes
    nothing."""
    email, email10, sms, late, holdout = ARMS
    table = {
        "mobile": {sms: 0.14, email: 0.06, email10: 0.07, late: 0.05, holdout: 0.03},
        "desktop": {sms: 0.05, email: 0.06, email10: 0.065, late: 0.14, holdout: 0.03},
    }

    def truth(ctx: Mapping[str, Any], arm: Arm, _hours: float) -> float:
        return table[ctx["device"]][arm]

    def contexts(_i: int, rng: np.random.Generator) -> dict[str, Any]:
        segment = "desktop" if rng.random() < 0.5 else "new"  # "new" is a mobile shopper
        return {**context(segment), "local_hour": int(rng.integers(24))}

    return truth, contexts
