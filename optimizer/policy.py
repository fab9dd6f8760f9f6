"""The policy interface the workers call, and the industry's fixed schedule as one policy.

One decision per touch: given the context of an abandoned cart at touch ``n``, a policy returns
an :class:`~optimizer.arms.Decision` — a delay, a channel and a discount, or the holdout arm
("send nothing"). When the decision's outcome is final (an order, or its attribution window
closing) the caller reports it with :meth:`Policy.record`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from optimizer.arms import Arm, Decision


@runtime_checkable
class Policy(Protocol):
    """What the workers need from a policy."""

    #: The journey ends after this many touches.
    max_touches: int

    def choose(self, context: Mapping[str, Any], *, now: datetime) -> Decision:
        """Choose the arm for one touch; ``context["touch"]`` is 1-based."""
        ...

    def record(
        self,
        decision: Decision,
        *,
        converted: bool,
        order_value: float,
        message_sent: bool,
        at: datetime,
    ) -> None:
        """Learn from a decision whose outcome is final. Called once per decision."""
        ...


class FixedSchedulePolicy:
    """The schedule CartStack and Klaviyo ship by default: email at 1 h, 24 h and 72 h.

    Offsets are measured from abandonment; arms carry the delay since the previous touch, so
    the default offsets (60, 1440, 4320 minutes) become delays of 60, 1380 and 2880 minutes.
    Deterministic, so every propensity is 1. A customer who cannot be reached on the channel
    gets the holdout arm (nothing is sent, and the journey ends).

    Example:
        >>> from datetime import datetime, timezone
        >>> p = FixedSchedulePolicy()
        >>> p.choose({"touch": 2, "channels": ["email"]}, now=datetime.now(timezone.utc)).arm.key
        'email/1380m/0%'
    """

    def __init__(
        self,
        offsets_minutes: Sequence[int] = (60, 24 * 60, 72 * 60),
        channel: str = "email",
        discount_pct: float = 0.0,
    ) -> None:
        if not offsets_minutes:
            raise ValueError("offsets_minutes must name at least one touch")
        if any(b <= a for a, b in zip(offsets_minutes, offsets_minutes[1:], strict=False)):
            raise ValueError(f"offsets_minutes must increase, not {list(offsets_minutes)}")
        if offsets_minutes[0] < 0:
            raise ValueError("offsets_minutes must be >= 0")
        previous = [0, *offsets_minutes[:-1]]
        self.arms = [
            Arm(delay_minutes=b - a, channel=channel, discount_pct=discount_pct)
            for a, b in zip(previous, offsets_minutes, strict=True)
        ]
        self.max_touches = len(self.arms)

    def choose(self, context: Mapping[str, Any], *, now: datetime) -> Decision:
        touch = int(context.get("touch", 1))
        if not 1 <= touch <= self.max_touches:
            raise ValueError(f"touch must be in 1..{self.max_touches}, not {touch}")
        arm = self.arms[touch - 1]
        if arm.channel not in context.get("channels", (arm.channel,)):
            arm = Arm.holdout()
        return Decision(arm=arm, propensity=1.0, context=dict(context), decided_at=now)

    def record(
        self,
        decision: Decision,
        *,
        converted: bool,
        order_value: float,
        message_sent: bool,
        at: datetime,
    ) -> None:
        """A fixed schedule learns nothing."""
        del decision, converted, order_value, message_sent, at
