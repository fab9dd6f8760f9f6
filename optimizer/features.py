"""Feature maps for the contextual policy: contexts to rows, arms to columns.

The conversion model's weights form a matrix ``W`` of shape ``(n_rows, n_cols)``. A context
activates exactly one *row* per slot (plus the intercept row 0); an arm activates a few
*columns* (intercept, holdout, its channel, its delay, its discount). A log-odds for context
``x`` and arm ``a`` is the sum of ``W[r, c]`` over the active rows ``r`` of ``x`` and active
columns ``c`` of ``a``. Row 0 × column 0 is the global intercept, row 0 × arm columns are the
arm main effects, context rows × column 0 the context main effects, and every other cell a
context × arm interaction. Arms and contexts share strength through the main effects, while
the interactions let segments answer differently. (The noisy-OR model of
:mod:`optimizer.thompson` reads column 0 as the organic part and column 1 as a "sent" column
of every message instead of the holdout's.)

Every slot has an ``other`` row for missing or unexpected values, so the number of rows is
fixed when the policy is built and a context always activates the same number of rows.

An optional slot is a cross of two others, device × cart-value tier, for a case where a sum of
one-slot effects cannot say what shoppers do. Mobile shoppers answer best within half an hour
and big carts a day later, but a big cart on a phone still wants its day, not the sum of a
"mobile: send now" and a "big cart: wait" effect on the delay (which lands in between, at
half a day). The cross's rows carry that correction, shared by the cart values of a tier.

Another optional slot says how long ago the cart was abandoned (``hours_since_abandonment``,
five bins), for the organic part alone: the chance that a shopper still buys on their own
falls with every hour of the journey, and how many hours a later touch comes after depends on
the delays of the touches before it, which the touch number does not say. Its rows carry no
message effect (the policy pins those cells at zero).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from optimizer.arms import Arm

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
RowFunction = Callable[[Mapping[str, Any]], list[int]]

#: Cart-value bucket edges (currency units), about x1.5 apart: response to time and discount scales
#: with the size of the purchase, not its absolute difference.
CART_VALUE_EDGES = (20.0, 30.0, 45.0, 70.0, 100.0, 150.0, 220.0, 330.0, 500.0, 750.0)
#: Local-hour buckets: night, morning, afternoon, evening.
HOUR_EDGES = (6, 12, 18)
#: Cart-value tiers of the device × cart-value cross, coarser than the buckets above so that
#: each of its rows (device × tier) sees enough carts.
CROSS_VALUE_EDGES = (30.0, 70.0, 150.0, 330.0, 750.0)
#: The name of the cross slot (its rows are named ``device×cart_value=mobile|150-330``).
CROSS_SLOT = "device×cart_value"
#: The context key of the hours since the cart was abandoned, and its slot's bin edges: the
#: first hour, the first touches' usual delays (up to 6 h), the rest of the first day, the
#: second day, and later.
SINCE_KEY = "hours_since_abandonment"
SINCE_EDGES = (1.0, 6.0, 24.0, 48.0)

_CATEGORICAL: dict[str, tuple[str, ...]] = {
    "customer_type": ("new", "returning"),
    "device": ("mobile", "desktop", "tablet"),
    "checkout_stage": ("cart", "checkout", "payment"),
}


@dataclass(frozen=True)
class ContextFeatures:
    """Maps a context dict to the indices of its active rows.

    Args:
        max_touches: touches 1..max_touches each get their own row.
        extra_features: optional extra categorical keys and their known values; other keys of
            a context are ignored. Values not listed fall into the key's ``other`` row.
        cross: include the device × cart-value cross slot (see the module docstring).
        since: include the hours-since-abandonment slot (see the module docstring).
    """

    max_touches: int = 3
    extra_features: tuple[tuple[str, tuple[str, ...]], ...] = ()
    cross: bool = False
    since: bool = False

    @classmethod
    def build(
        cls,
        max_touches: int = 3,
        extra_features: Mapping[str, Sequence[str]] | None = None,
        *,
        cross: bool = False,
        since: bool = False,
    ) -> ContextFeatures:
        extra = tuple(
            (str(k), tuple(str(v) for v in values)) for k, values in (extra_features or {}).items()
        )
        for key, values in extra:
            if key in _SLOT_KEYS or key in (CROSS_SLOT, SINCE_KEY):
                raise ValueError(f"extra_features: {key!r} is already a built-in feature")
            if not values:
                raise ValueError(f"extra_features[{key!r}] must list at least one value")
        return cls(max_touches=max_touches, extra_features=extra, cross=cross, since=since)

    @property
    def names(self) -> list[str]:
        """Human-readable row names, in row order (row 0 is the intercept)."""
        names = ["intercept"]
        for key, labels in self._slots():
            names += [f"{key}={label}" for label in labels] + [f"{key}=other"]
        return names

    @property
    def n_rows(self) -> int:
        return 1 + sum(len(labels) + 1 for _, labels in self._slots())

    @property
    def n_slots(self) -> int:
        """Active rows per context, intercept included."""
        return 1 + len(self._slots())

    @property
    def cross_rows(self) -> range:
        """The rows of the device × cart-value cross slot (empty without it)."""
        return self._slot_rows(CROSS_SLOT)

    @property
    def since_rows(self) -> range:
        """The rows of the hours-since-abandonment slot (empty without it)."""
        return self._slot_rows(SINCE_KEY)

    def slot_rows(self) -> list[tuple[str, range]]:
        """Every slot's name and rows, in row order (the intercept, row 0, is no slot)."""
        out = []
        start = 1
        for key, labels in self._slots():
            out.append((key, range(start, start + len(labels) + 1)))
            start += len(labels) + 1
        return out

    def _slot_rows(self, slot: str) -> range:
        return next((rows for key, rows in self.slot_rows() if key == slot), range(0))

    def _slots(self) -> list[tuple[str, tuple[str, ...]]]:
        return _slots(self.max_touches, self.extra_features, self.cross, self.since)

    def rows(self, context: Mapping[str, Any]) -> list[int]:
        """Indices of the rows a context activates (length :attr:`n_slots`)."""
        return self.row_function()(context)

    def row_function(self) -> RowFunction:
        """A fast function mapping a context to :meth:`rows` (built once per configuration)."""
        return _rows_fn(self.max_touches, self.extra_features, self.cross, self.since)


_SLOT_KEYS = (
    "customer_type",
    "device",
    "checkout_stage",
    "cart_value",
    "previous_abandons",
    "touch",
    "local_hour",
)


def _value_labels(edges: Sequence[float]) -> list[str]:
    labels = [f"<{edges[0]:g}"]
    labels += [f"{a:g}-{b:g}" for a, b in itertools.pairwise(edges)]
    return [*labels, f">={edges[-1]:g}"]


def _slots(
    max_touches: int, extra: tuple[tuple[str, tuple[str, ...]], ...], cross: bool, since: bool
) -> list[tuple[str, tuple[str, ...]]]:
    value_labels = _value_labels(CART_VALUE_EDGES)
    slots: list[tuple[str, tuple[str, ...]]] = [
        ("customer_type", _CATEGORICAL["customer_type"]),
        ("device", _CATEGORICAL["device"]),
        ("checkout_stage", _CATEGORICAL["checkout_stage"]),
        ("cart_value", tuple(value_labels)),
        ("previous_abandons", ("0", "1", "2", "3+")),
        ("touch", tuple(str(t) for t in range(1, max_touches + 1))),
        ("local_hour", ("night", "morning", "afternoon", "evening")),
    ]
    if cross:
        tiers = _value_labels(CROSS_VALUE_EDGES)
        labels = tuple(f"{d}|{t}" for d in _CATEGORICAL["device"] for t in tiers)
        slots.append((CROSS_SLOT, labels))
    if since:
        slots.append((SINCE_KEY, tuple(_value_labels(SINCE_EDGES))))
    return slots + list(extra)


_ROW_FNS: dict[tuple[int, tuple[tuple[str, tuple[str, ...]], ...], bool, bool], RowFunction] = {}


def _rows_fn(
    max_touches: int, extra: tuple[tuple[str, tuple[str, ...]], ...], cross: bool, since: bool
) -> RowFunction:
    """Build (once per configuration) a fast closure mapping a context to its row indices."""
    key = (max_touches, extra, cross, since)
    fn = _ROW_FNS.get(key)
    if fn is not None:
        return fn
    slots = _slots(max_touches, extra, cross, since)
    offsets: dict[str, int] = {}
    lookups: dict[str, dict[str, int]] = {}
    start = 1
    for name, labels in slots:
        offsets[name] = start
        lookups[name] = {label: start + i for i, label in enumerate(labels)}
        start += len(labels) + 1
    ct, dev, st = lookups["customer_type"], lookups["device"], lookups["checkout_stage"]
    ct_o = offsets["customer_type"] + 2
    dev_o = offsets["device"] + 3
    st_o = offsets["checkout_stage"] + 3
    cv0 = offsets["cart_value"]
    cv_o = cv0 + len(CART_VALUE_EDGES) + 1
    pa0 = offsets["previous_abandons"]
    pa_o = pa0 + 4
    t0 = offsets["touch"]
    t_o = t0 + max_touches
    h0 = offsets["local_hour"]
    h_o = h0 + 4
    extras = [(name, lookups[name], offsets[name] + len(labels)) for name, labels in extra]
    edges = CART_VALUE_EDGES
    hour_edges = HOUR_EDGES
    # Cross rows: device d's tiers start at x0 + d * n_tiers; x_o is the slot's "other" row.
    x0 = offsets.get(CROSS_SLOT, 0)
    n_tiers = len(CROSS_VALUE_EDGES) + 1
    x_o = x0 + len(_CATEGORICAL["device"]) * n_tiers
    device_tier0 = {d: x0 + i * n_tiers for i, d in enumerate(_CATEGORICAL["device"])}
    tier_edges = CROSS_VALUE_EDGES
    s0 = offsets.get(SINCE_KEY, 0)
    s_o = s0 + len(SINCE_EDGES) + 1
    since_edges = SINCE_EDGES

    def rows(context: Mapping[str, Any]) -> list[int]:
        get: Callable[..., Any] = context.get
        out = [
            0,
            ct.get(get("customer_type"), ct_o),
            dev.get(get("device"), dev_o),
            st.get(get("checkout_stage"), st_o),
        ]
        value = get("cart_value")
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = math.nan
        finite = math.isfinite(v)
        out.append(cv0 + bisect.bisect_right(edges, v) if finite else cv_o)
        try:
            pa = int(get("previous_abandons", 0))
            out.append(pa0 + min(pa, 3) if pa >= 0 else pa_o)
        except (TypeError, ValueError):
            out.append(pa_o)
        try:
            touch = int(get("touch", 1))
            out.append(t0 + touch - 1 if 1 <= touch <= max_touches else t_o)
        except (TypeError, ValueError):
            out.append(t_o)
        try:
            hour = int(get("local_hour"))
            out.append(h0 + bisect.bisect_right(hour_edges, hour) if 0 <= hour <= 23 else h_o)
        except (TypeError, ValueError):
            out.append(h_o)
        if cross:
            tier0 = device_tier0.get(get("device"))
            if tier0 is None or not finite:
                out.append(x_o)
            else:
                out.append(tier0 + bisect.bisect_right(tier_edges, v))
        if since:
            try:
                hours = float(get(SINCE_KEY))
            except (TypeError, ValueError):
                hours = math.nan
            # Missing, negative or not finite: the slot's "other" row.
            ok = math.isfinite(hours) and hours >= 0.0
            out.append(s0 + bisect.bisect_right(since_edges, hours) if ok else s_o)
        for name, lookup, other in extras:
            raw = get(name)
            out.append(lookup.get(str(raw), other) if raw is not None else other)
        return out

    _ROW_FNS[key] = rows
    return rows


@dataclass(frozen=True)
class ArmDesign:
    """The design matrix of the arms: which columns each arm activates, and how much.

    Columns: 0 intercept, 1 holdout, then one per channel, delay and discount present among
    the arms, all 0/1; and, when some arm offers a discount, ``discount_per_10pct``, the
    discount itself (1.0 for 10 % off). The holdout arm activates columns 0 and 1 only.

    The discount column shares strength between discount levels: a segment that answers to
    15 % off probably answers to 10 % off too, and one effect per segment learns that from
    the plays of every level, three times the data of a level's own column (which then only
    carries the departure from a straight line, under a tight prior).
    """

    arms: tuple[Arm, ...]
    columns: tuple[str, ...]
    matrix: FloatArray  # (n_arms, n_cols)

    @classmethod
    def build(cls, arms: Sequence[Arm]) -> ArmDesign:
        sent = [a for a in arms if not a.is_holdout]
        channels = sorted({str(a.channel) for a in sent})
        delays = sorted({a.delay_minutes for a in sent})
        discounts = sorted({a.discount_pct for a in sent})
        columns = ["intercept", "holdout"]
        columns += [f"channel={c}" for c in channels]
        columns += [f"delay={d}m" for d in delays]
        columns += [f"discount={d:g}%" for d in discounts]
        if any(discounts):
            columns.append("discount_per_10pct")
        index = {c: i for i, c in enumerate(columns)}
        matrix = np.zeros((len(arms), len(columns)))
        for i, arm in enumerate(arms):
            matrix[i, 0] = 1.0
            if arm.is_holdout:
                matrix[i, 1] = 1.0
                continue
            matrix[i, index[f"channel={arm.channel}"]] = 1.0
            matrix[i, index[f"delay={arm.delay_minutes}m"]] = 1.0
            matrix[i, index[f"discount={arm.discount_pct:g}%"]] = 1.0
            if "discount_per_10pct" in index:
                matrix[i, index["discount_per_10pct"]] = arm.discount_pct / 10.0
        matrix.setflags(write=False)
        return cls(arms=tuple(arms), columns=tuple(columns), matrix=matrix)

    @property
    def n_cols(self) -> int:
        return len(self.columns)
