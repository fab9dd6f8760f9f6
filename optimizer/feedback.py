"""Delayed feedback: how long conversions take, so pending decisions can count as evidence.

A conversion is reported when it happens (often hours after the message); a non-conversion only
when the attribution window closes (days). Learning from final outcomes alone would see the
quick positives long before their negatives and over-rate whatever was chosen recently. The
policy therefore counts a pending decision as a *provisional negative* whose weight is the
share of converters who would already have converted by now, ``F(elapsed)``; the weight grows
as time passes, becomes 1 when the window closes, and is taken back if the decision converts.
In expectation this matches the evidence of the final outcomes (see ``ThompsonPolicy``).

``F`` is learned from the conversions themselves: an empirical distribution of the time from a
reference moment to the conversion, smoothed by a prior. ``ThompsonPolicy`` times it from the
*decision* and keeps one per channel × delay, because a message sent a day after the decision
sees that day's organic orders arrive before it: a distribution timed from the send, or shared
by a channel's delays, would give those orders no matching negatives. The ``delay_hours`` of
:meth:`ConversionLag.share_converted` serves callers who time from the send instead.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

#: Bin edges in hours for time-from-send-to-conversion. Fine near zero, where most
#: conversions after a message happen, and coarse over the days of an attribution window.
LAG_EDGES_HOURS = np.array(
    [0.0, 0.25, 0.5, 1, 2, 4, 8, 12, 18, 24, 36, 48, 72, 96, 120, 144, 168, 240, 336, 720]
)
_EDGES = LAG_EDGES_HOURS.tolist()


@dataclass
class ConversionLag:
    """Empirical distribution of hours from a reference moment (the decision, or the send) to
    conversion, with a smoothing prior.

    Args:
        prior_mean_hours: mean of the exponential prior shape. 12 h: abandoned-cart messages
            convert mostly within the day of the send, organic purchases over a few days (the
            policy adds the arm's delay, timing from the decision).
        prior_weight: how many conversions the prior is worth; 20 keeps it from dominating
            after a day of traffic while stopping the first few conversions from setting F.

    Attributes:
        counts: weight of conversions per bin; ``counts[0]`` holds conversions at or before
            the reference moment (lag <= 0), ``counts[i]`` those in ``(edges[i-1], edges[i]]``, and
            the last entry those beyond the last edge.
    """

    prior_mean_hours: float = 12.0
    prior_weight: float = 20.0
    counts: FloatArray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        if not self.prior_mean_hours > 0:
            raise ValueError(f"prior_mean_hours must be > 0, not {self.prior_mean_hours}")
        if not self.prior_weight > 0:
            raise ValueError(f"prior_weight must be > 0, not {self.prior_weight}")
        if self.counts.size == 0:
            cdf = 1.0 - np.exp(-LAG_EDGES_HOURS / self.prior_mean_hours)
            prior = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
            self.counts = self.prior_weight * prior
        elif self.counts.shape != (LAG_EDGES_HOURS.size + 1,):
            raise ValueError(f"counts must have {LAG_EDGES_HOURS.size + 1} entries")

    def add(self, lag_hours: float) -> None:
        """Count one conversion ``lag_hours`` after the reference moment (negative: before it;
        counted at 0)."""
        self.counts[bisect.bisect_left(_EDGES, max(lag_hours, 0.0))] += 1.0

    def share_converted(
        self, elapsed_hours: FloatArray, delay_hours: FloatArray, window_hours: float
    ) -> FloatArray:
        """``F``: share of eventual converters already converted after ``elapsed_hours``.

        Args:
            elapsed_hours: time since each decision.
            delay_hours: each decision's arm delay (its send time after the decision).
            window_hours: the attribution window; converters are by definition inside it, so
                ``F`` is renormalised to reach 1 when the window closes.

        Returns:
            Values in [0, 1], 1 once the window has closed.
        """
        cum = np.cumsum(self.counts)[:-1] / self.counts.sum()
        since_send = np.maximum(elapsed_hours - delay_hours, 0.0)
        at_close = np.interp(np.maximum(window_hours - delay_hours, 0.0), LAG_EDGES_HOURS, cum)
        share = np.interp(since_send, LAG_EDGES_HOURS, cum) / np.maximum(at_close, 1e-12)
        share = np.where(elapsed_hours >= window_hours, 1.0, share)
        return np.clip(share, 0.0, 1.0)
