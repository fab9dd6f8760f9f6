"""Sufficient statistics of an experiment's decisions, one cell per (day, arm, segment, channel).

Every number of an experiment report (per-arm summaries, lift against the holdout at each
daily look, the sample ratio check, ROI overall / per channel / per segment, off-policy arm
values) is a function of sums over decisions. A database computes those sums with one
``GROUP BY`` and sends back a few hundred cells instead of a million rows; :class:`Tallies`
holds them, and pooling cells is addition. :meth:`Tallies.from_outcomes` builds the same cells
from rows, so the row-based functions and the database path can be checked against each other.

Columns (per cell, sums over its decisions):
    * ``carts`` (decisions), ``sends``, ``conversions``, ``revenue``, ``revenue_sq``,
      ``discount_cost``, ``message_cost``, ``profit``, ``profit_sq`` — as in
      :class:`experiments.stats.ArmTotals`;
    * ``attributed_orders``, ``attributed_revenue`` — converted decisions whose message went
      out ("recovered" as other tools count it);
    * ``w``, ``wr``, ``w2``, ``w2r``, ``w2r2`` — with ``w = 1 / propensity`` and ``r`` the
      profit: :class:`experiments.ope.WeightedSums`;
    * ``decisions`` — every decision, including those whose outcome is not final yet (the
      other columns cover only decisions with an outcome): what the traffic split shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import date
from typing import Any

import numpy as np
import numpy.typing as npt

from experiments.ope import WeightedSums
from experiments.stats import ArmTotals, Outcomes, channel_of

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
StrArray = npt.NDArray[np.str_]

TOTALS = tuple(f.name for f in fields(ArmTotals))
ATTRIBUTED = ("attributed_orders", "attributed_revenue")
WEIGHTED = tuple(f.name for f in fields(WeightedSums))
COLUMNS = (*TOTALS, *ATTRIBUTED, *WEIGHTED, "decisions")
_INDEX = {name: j for j, name in enumerate(COLUMNS)}
_COUNTS = ("carts", "sends", "conversions", "attributed_orders", "decisions")


@dataclass(frozen=True, eq=False)
class Tallies:
    """Cells of sufficient statistics. ``values[i, j]`` is column ``COLUMNS[j]`` of cell ``i``.

    ``day`` is ``date.toordinal()`` of the decisions' UTC day (0 when days are unknown).
    """

    day: IntArray
    arm: StrArray
    segment: StrArray
    channel: StrArray
    values: FloatArray

    def __post_init__(self) -> None:
        n = self.arm.shape[0]
        for name in ("day", "segment", "channel"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have shape ({n},) like arm")
        if self.values.shape != (n, len(COLUMNS)):
            raise ValueError(f"values must have shape ({n}, {len(COLUMNS)})")

    # --- building ------------------------------------------------------------------------

    @classmethod
    def empty(cls) -> Tallies:
        return cls(
            day=np.zeros(0, dtype=np.int64),
            arm=np.zeros(0, dtype=np.str_),
            segment=np.zeros(0, dtype=np.str_),
            channel=np.zeros(0, dtype=np.str_),
            values=np.zeros((0, len(COLUMNS))),
        )

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]]) -> Tallies:
        """Cells from mappings with ``day`` (a ``date``, ISO text or ordinal), ``arm``,
        ``segment``, optionally ``channel`` (default: from the arm key), and every column.
        A missing or NULL sum is 0."""
        rows = list(rows)
        if not rows:
            return cls.empty()
        arm = np.asarray([str(r["arm"]) for r in rows], dtype=np.str_)
        channel = (
            np.asarray([str(r["channel"]) for r in rows], dtype=np.str_)
            if "channel" in rows[0]
            else channel_of(arm)
        )
        return cls(
            day=np.asarray([_ordinal(r.get("day")) for r in rows], dtype=np.int64),
            arm=arm,
            segment=np.asarray([str(r.get("segment") or "unknown") for r in rows], dtype=np.str_),
            channel=channel,
            values=np.asarray(
                [[float(r.get(c) or 0.0) for c in COLUMNS] for r in rows], dtype=np.float64
            ),
        )

    @classmethod
    def from_outcomes(cls, outcomes: Outcomes, *, margin_rate: float) -> Tallies:
        """The cells of decision rows (what a ``GROUP BY`` over them would return)."""
        n = len(outcomes)
        if n == 0:
            return cls.empty()
        day = outcomes.day if outcomes.day is not None else np.zeros(n, dtype=np.int64)
        segment = (
            outcomes.segment if outcomes.segment is not None else np.full(n, "", dtype=np.str_)
        )
        keys = np.rec.fromarrays([day, outcomes.arm, segment, outcomes.channel])
        cells, idx = np.unique(keys, return_inverse=True)
        idx = idx.reshape(-1)
        profit = outcomes.profit(margin_rate)
        w = 1.0 / outcomes.propensity
        attributed = outcomes.converted & outcomes.sent
        per_row = {
            "carts": np.ones(n),
            "sends": outcomes.sent,
            "conversions": outcomes.converted,
            "revenue": outcomes.revenue,
            "revenue_sq": outcomes.revenue**2,
            "discount_cost": outcomes.discount_cost,
            "message_cost": outcomes.message_cost,
            "profit": profit,
            "profit_sq": profit**2,
            "attributed_orders": attributed,
            "attributed_revenue": np.where(attributed, outcomes.revenue, 0.0),
            "w": w,
            "wr": w * profit,
            "w2": w * w,
            "w2r": w * w * profit,
            "w2r2": (w * profit) ** 2,
            "decisions": np.ones(n),
        }
        k = cells.shape[0]
        values = np.column_stack(
            [
                np.bincount(idx, weights=np.asarray(per_row[c], np.float64), minlength=k)
                for c in COLUMNS
            ]
        ).astype(np.float64)
        return cls(
            day=np.asarray(cells["f0"], dtype=np.int64),
            arm=np.asarray(cells["f1"], dtype=np.str_),
            segment=np.asarray(cells["f2"], dtype=np.str_),
            channel=np.asarray(cells["f3"], dtype=np.str_),
            values=values,
        )

    # --- slicing -------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.arm.shape[0])

    def column(self, name: str) -> FloatArray:
        return self.values[:, _INDEX[name]]

    def select(self, mask: npt.NDArray[np.bool_]) -> Tallies:
        m = np.asarray(mask, dtype=np.bool_)
        if m.shape != (len(self),):
            raise ValueError(f"mask must have shape ({len(self)},), not {m.shape}")
        return Tallies(self.day[m], self.arm[m], self.segment[m], self.channel[m], self.values[m])

    def in_days(self, start: int | date | None = None, end: int | date | None = None) -> Tallies:
        """The cells whose day lies in ``[start, end]`` (inclusive; ``None`` = open)."""
        if start is None and end is None:
            return self
        lo = -np.inf if start is None else _ordinal(start)
        hi = np.inf if end is None else _ordinal(end)
        return self.select((self.day >= lo) & (self.day <= hi))

    def days(self) -> list[int]:
        """The distinct days (ordinals), in order: an experiment's daily looks."""
        return [int(d) for d in np.unique(self.day)]

    # --- pooling -------------------------------------------------------------------------

    def sums_by(self, labels: npt.NDArray[Any]) -> dict[Any, FloatArray]:
        """Every column summed per distinct label (one ``bincount`` per column)."""
        labels = np.asarray(labels)
        if labels.shape != (len(self),):
            raise ValueError(f"labels must have shape ({len(self)},), not {labels.shape}")
        keys, idx = np.unique(labels, return_inverse=True)
        idx = idx.reshape(-1)
        k = keys.shape[0]
        sums = np.column_stack(
            [np.bincount(idx, weights=self.values[:, j], minlength=k) for j in range(len(COLUMNS))]
        ).reshape(k, len(COLUMNS))
        return {keys[i].item(): sums[i] for i in range(k)}

    def totals_by(self, labels: npt.NDArray[Any]) -> dict[Any, ArmTotals]:
        return {key: _totals(row) for key, row in self.sums_by(labels).items()}

    def attributed_by(self, labels: npt.NDArray[Any]) -> dict[Any, ArmTotals]:
        """Per label, the attributed orders as totals (``carts = conversions`` = orders)."""
        out = {}
        for key, row in self.sums_by(labels).items():
            orders = int(round(row[_INDEX["attributed_orders"]]))
            out[key] = ArmTotals(
                carts=orders,
                conversions=orders,
                revenue=float(row[_INDEX["attributed_revenue"]]),
            )
        return out

    def weighted_by(self, labels: npt.NDArray[Any]) -> dict[Any, WeightedSums]:
        return {
            key: WeightedSums(*(float(row[_INDEX[c]]) for c in WEIGHTED))
            for key, row in self.sums_by(labels).items()
        }

    def total(self) -> ArmTotals:
        return _totals(self.values.sum(axis=0)) if len(self) else ArmTotals()

    def looks(self, mask: npt.NDArray[np.bool_], days: list[int]) -> list[ArmTotals]:
        """The cells under ``mask`` as one :class:`ArmTotals` per day of ``days`` (0s where
        a day has none): the increments :func:`experiments.stats.lift_from_totals` takes."""
        sel = self.select(mask)
        by_day = sel.totals_by(sel.day)
        return [by_day.get(d, ArmTotals()) for d in days]


def _totals(row: FloatArray) -> ArmTotals:
    values: dict[str, Any] = {}
    for name in TOTALS:
        v = float(row[_INDEX[name]])
        values[name] = int(round(v)) if name in _COUNTS else v
    return ArmTotals(**values)


def _ordinal(day: Any) -> int:
    if day is None:
        return 0
    if isinstance(day, date):
        return day.toordinal()
    if isinstance(day, str):
        return date.fromisoformat(day[:10]).toordinal()
    return int(day)
