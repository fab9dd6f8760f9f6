"""Arms, economics and decisions: the vocabulary every policy speaks.

An *arm* is one choice for one touch of one abandoned cart: how long to wait, which channel to
use and what discount to offer — or, for the holdout arm, to send nothing at all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

CHANNELS = ("email", "sms", "push", "kakao")


@dataclass(frozen=True, order=True)
class Arm:
    """One choice for one touch.

    Args:
        delay_minutes: how long to wait, counted from the previous touch (or, for the first
            touch, from the moment the cart was found abandoned).
        channel: one of ``CHANNELS``, or ``None`` for "send nothing".
        discount_pct: the discount offered, in percent of the cart value (0 = none).

    Example:
        >>> Arm(delay_minutes=60, channel="email").key
        'email/60m/0%'
        >>> Arm.holdout().is_holdout
        True
    """

    delay_minutes: int = 0
    channel: str | None = None
    discount_pct: float = 0.0

    def __post_init__(self) -> None:
        _validate_arm(self)

    @classmethod
    def holdout(cls) -> Arm:
        """The send-nothing arm: always allowed, measures what happens anyway."""
        return cls(delay_minutes=0, channel=None, discount_pct=0.0)

    @property
    def is_holdout(self) -> bool:
        return self.channel is None

    @property
    def key(self) -> str:
        """A short, stable, human-readable identifier (used in logs, JSON and the database)."""
        if self.channel is None:
            return "holdout"
        return f"{self.channel}/{self.delay_minutes}m/{self.discount_pct:g}%"

    @classmethod
    def from_key(cls, key: str) -> Arm:
        """Inverse of :attr:`key`."""
        if key == "holdout":
            return cls.holdout()
        try:
            channel, delay, discount = key.split("/")
            return cls(
                delay_minutes=int(delay.removesuffix("m")),
                channel=channel,
                discount_pct=float(discount.removesuffix("%")),
            )
        except ValueError as exc:
            raise ValueError(f"not an arm key: {key!r}") from exc

    def to_dict(self) -> dict[str, Any]:
        return {
            "delay_minutes": self.delay_minutes,
            "channel": self.channel,
            "discount_pct": self.discount_pct,
        }


def _validate_arm(arm: Arm) -> None:
    if arm.channel is not None and arm.channel not in CHANNELS:
        raise ValueError(f"channel must be one of {CHANNELS} or None, not {arm.channel!r}")
    if arm.delay_minutes < 0:
        raise ValueError(f"delay_minutes must be >= 0, not {arm.delay_minutes}")
    if not 0.0 <= arm.discount_pct < 100.0:
        raise ValueError(f"discount_pct must be in [0, 100), not {arm.discount_pct}")
    if arm.channel is None and (arm.delay_minutes or arm.discount_pct):
        raise ValueError("the holdout arm (channel None) has no delay and no discount")


@dataclass(frozen=True)
class Economics:
    """What a conversion earns and what a message costs.

    The reward of a decision is
    ``converted * (order_value * margin_rate - discount given) - message cost``.
    """

    margin_rate: float = 0.35
    message_cost: Mapping[str, float] = field(
        default_factory=lambda: {"email": 0.002, "sms": 0.03, "push": 0.0005, "kakao": 0.01}
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.margin_rate <= 1.0:
            raise ValueError(f"margin_rate must be in (0, 1], not {self.margin_rate}")
        for channel, cost in self.message_cost.items():
            if cost < 0:
                raise ValueError(f"message_cost[{channel!r}] must be >= 0, not {cost}")

    def cost_of(self, arm: Arm) -> float:
        return 0.0 if arm.channel is None else float(self.message_cost.get(arm.channel, 0.0))

    def profit(self, arm: Arm, *, converted: bool, order_value: float, message_sent: bool) -> float:
        """Realised profit of one decision."""
        cost = self.cost_of(arm) if message_sent else 0.0
        if not converted:
            return -cost
        discount = order_value * arm.discount_pct / 100.0
        return order_value * self.margin_rate - discount - cost


@dataclass(frozen=True)
class Decision:
    """What a policy chose for one touch, and the probability it had of choosing it."""

    arm: Arm
    propensity: float
    context: Mapping[str, Any] = field(default_factory=dict)
    decided_at: datetime | None = None
    #: 128 random bits from the OS, as 32 hex digits (the format of ``uuid4().hex``, at a
    #: fifth of its cost: ``choose`` makes one per decision).
    id: str = field(default_factory=lambda: os.urandom(16).hex())

    def __post_init__(self) -> None:
        if not 0.0 < self.propensity <= 1.0:
            raise ValueError(f"propensity must be in (0, 1], not {self.propensity}")
