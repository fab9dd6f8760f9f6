"""Scenarios: a ground-truth model of how abandoned carts answer, for the offline simulator.

A scenario file (JSON, see ``optimizer/scenarios/``) describes:

* the **context mix**: shares of customer types, devices, checkout stages, previous abandons,
  the cart-value distribution (log-normal) and which channels are reachable (independently);
* **organic purchases**: the probability a cart is bought anyway and how long that takes
  (exponential), both scaled by segment multipliers;
* **response to a message**: the probability that a sent message brings the order, by channel,
  scaled by segment multipliers, by how close the delay is to the segment's preferred delay
  (a log-normal bump), by the discount (linear lift per 10 % off, segment-specific), and by a
  decay per touch; and the time from send to that order (exponential, per channel);
* **economics**, the arm grid, the attribution window, the number of touches, the share of
  buyers who use an offered discount, and an optional **shift** of any of these response
  parameters from a given simulated day on.

Segments are named ``key=value`` for ``customer_type``, ``device`` and ``checkout_stage``, plus
``big_cart`` (cart value at or above ``big_cart_value``) and ``discount_seeker`` (two or more
previous abandons).

Everything the simulator and the oracle need follows from independent sources of an order: the
organic purchase, and one "responder" per sent message. An order happens at the first source
to fire; messages due after it are not sent. Because sources are independent, the expected
profit of a sequence of arms has a closed form (:func:`path_values`), and because the only
thing a policy learns about a cart during its journey is "not bought yet", the best adaptive
policy is the best such sequence: that is the oracle.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from optimizer.arms import Arm, Economics

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

SCENARIO_DIR = Path(__file__).parent / "scenarios"

_SEGMENT_KEYS = ("customer_type", "device", "checkout_stage")
_SPECIAL_SEGMENTS = ("big_cart", "discount_seeker")


@dataclass(frozen=True)
class Response:
    """How carts answer (one regime of a scenario). See the module docstring."""

    organic_rate: float
    organic_mean_hours: float
    organic_multipliers: Mapping[str, float]
    base: Mapping[str, float]
    multipliers: Mapping[str, float]
    best_delay_minutes: float
    delay_width: float
    best_delay_by_segment: Mapping[str, float]
    discount_lift_per_10pct: float
    discount_lift_by_segment: Mapping[str, float]
    touch_decay: float
    lag_hours: Mapping[str, float]
    max_rate: float = 0.6

    def __post_init__(self) -> None:
        _check(0 <= self.organic_rate < 1, "organic.rate", self.organic_rate, "in [0, 1)")
        _check(self.organic_mean_hours > 0, "organic.mean_hours", self.organic_mean_hours, "> 0")
        _check(self.delay_width > 0, "response.delay_width", self.delay_width, "> 0")
        _check(self.best_delay_minutes > 0, "response.best_delay_minutes", 0, "> 0")
        _check(0 < self.touch_decay <= 1, "response.touch_decay", self.touch_decay, "in (0, 1]")
        _check(0 < self.max_rate < 1, "response.max_rate", self.max_rate, "in (0, 1)")
        for name, mapping in (
            ("organic.multipliers", self.organic_multipliers),
            ("response.multipliers", self.multipliers),
            ("response.best_delay_by_segment", self.best_delay_by_segment),
        ):
            for key, value in mapping.items():
                _check_segment(f"{name}[{key!r}]", key)
                _check(value > 0, f"{name}[{key!r}]", value, "> 0")
        for key in self.discount_lift_by_segment:
            _check_segment(f"response.discount_lift_by_segment[{key!r}]", key)
        for channel, rate in self.base.items():
            _check(0 <= rate < 1, f"response.base[{channel!r}]", rate, "in [0, 1)")
            _check(
                self.lag_hours.get(channel, 0) > 0,
                f"response.lag_hours[{channel!r}]",
                self.lag_hours.get(channel),
                "> 0",
            )

    def organic(self, segments: frozenset[str]) -> float:
        """Probability the cart is bought without any message."""
        rate = self.organic_rate * _product(self.organic_multipliers, segments)
        return min(rate, 0.95)

    def rates(self, segments: frozenset[str], arms: Sequence[Arm], touch: int) -> FloatArray:
        """Probability that each arm's message brings the order (0 for the holdout arm)."""
        scale = _product(self.multipliers, segments) * self.touch_decay ** (touch - 1)
        best = next(
            (m for s, m in self.best_delay_by_segment.items() if s in segments),
            self.best_delay_minutes,
        )
        lift = next(
            (v for s, v in self.discount_lift_by_segment.items() if s in segments),
            self.discount_lift_per_10pct,
        )
        out = np.zeros(len(arms))
        for i, arm in enumerate(arms):
            if arm.channel is None:
                continue
            base = self.base.get(arm.channel, 0.0)
            delay = max(arm.delay_minutes, 1.0)
            timing = math.exp(-(math.log(delay / best) ** 2) / (2 * self.delay_width**2))
            discount = 1.0 + lift * arm.discount_pct / 10.0
            out[i] = min(base * scale * timing * discount, self.max_rate)
        return out


@dataclass(frozen=True)
class Scenario:
    """A ground-truth world for the simulator (load with :func:`load_scenario`)."""

    name: str
    description: str
    carts_per_day: float
    economics: Economics
    attribution_window_hours: float
    max_touches: int
    channels: tuple[str, ...]
    delays_minutes: tuple[int, ...]
    discounts_pct: tuple[float, ...]
    mix: Mapping[str, Mapping[str, float]]
    cart_value_median: float
    cart_value_sigma: float
    reachability: Mapping[str, float]
    big_cart_value: float
    discount_use: float
    response: Response
    shift_day: float | None = None
    shifted: Response | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def arms(self) -> list[Arm]:
        """The arm grid: every channel × delay × discount, then the holdout arm."""
        grid = [
            Arm(delay_minutes=d, channel=c, discount_pct=float(x))
            for c in self.channels
            for d in self.delays_minutes
            for x in self.discounts_pct
        ]
        return [*grid, Arm.holdout()]

    def response_at(self, day: float) -> Response:
        """The regime in force for a cart abandoned on simulated ``day``."""
        if self.shifted is not None and self.shift_day is not None and day >= self.shift_day:
            return self.shifted
        return self.response


def load_scenario(source: str | Path | Mapping[str, Any]) -> Scenario:
    """Load a scenario from a path, a shipped scenario's name, or a parsed dict.

    Example:
        >>> load_scenario("apparel").name
        'apparel'
    """
    if isinstance(source, Mapping):
        raw = dict(source)
    else:
        path = Path(source)
        if not path.exists() and (SCENARIO_DIR / f"{source}.json").exists():
            path = SCENARIO_DIR / f"{source}.json"
        if not path.exists():
            raise ValueError(f"scenario: no such file or shipped scenario: {source!s}")
        raw = json.loads(path.read_text())
    try:
        return _parse(raw)
    except KeyError as exc:
        raise ValueError(f"scenario is missing the field {exc.args[0]!r}") from exc


def shipped_scenarios() -> list[Path]:
    """Paths of the scenarios shipped with Nudge."""
    return sorted(SCENARIO_DIR.glob("*.json"))


def _parse(raw: Mapping[str, Any]) -> Scenario:
    arms = raw["arms"]
    ctx = raw["contexts"]
    econ = raw["economics"]
    response = _parse_response(raw["organic"], raw["response"])
    shift = raw.get("shift")
    shifted = None
    shift_day = None
    if shift is not None:
        shift_day = float(shift["at_day"])
        _check(shift_day >= 0, "shift.at_day", shift_day, ">= 0")
        organic = {**raw["organic"], **shift.get("organic", {})}
        resp = {**raw["response"], **shift.get("response", {})}
        shifted = _parse_response(organic, resp)
    mix = {key: dict(ctx[key]) for key in (*_SEGMENT_KEYS, "previous_abandons")}
    for key, shares in mix.items():
        total = sum(shares.values())
        _check(abs(total - 1.0) < 1e-6, f"contexts.{key}", total, "shares summing to 1")
    scenario = Scenario(
        name=str(raw["name"]),
        description=str(raw.get("description", "")),
        carts_per_day=float(raw["carts_per_day"]),
        economics=Economics(
            margin_rate=float(econ["margin_rate"]), message_cost=dict(econ["message_cost"])
        ),
        attribution_window_hours=float(raw.get("attribution_window_hours", 168)),
        max_touches=int(raw.get("max_touches", 3)),
        channels=tuple(arms["channels"]),
        delays_minutes=tuple(int(d) for d in arms["delays_minutes"]),
        discounts_pct=tuple(float(x) for x in arms["discounts_pct"]),
        mix=mix,
        cart_value_median=float(ctx["cart_value"]["median"]),
        cart_value_sigma=float(ctx["cart_value"]["sigma"]),
        reachability=dict(ctx["reachability"]),
        big_cart_value=float(raw.get("big_cart_value", 150.0)),
        discount_use=float(raw.get("discount_use", 1.0)),
        response=response,
        shift_day=shift_day,
        shifted=shifted,
        raw=raw,
    )
    _check(scenario.carts_per_day > 0, "carts_per_day", scenario.carts_per_day, "> 0")
    _check(scenario.max_touches >= 1, "max_touches", scenario.max_touches, ">= 1")
    _check(0 <= scenario.discount_use <= 1, "discount_use", scenario.discount_use, "in [0, 1]")
    for channel in scenario.channels:
        _check(channel in response.base, f"response.base[{channel!r}]", None, "present")
        _check(channel in scenario.reachability, f"reachability[{channel!r}]", None, "present")
    return scenario


def _parse_response(organic: Mapping[str, Any], resp: Mapping[str, Any]) -> Response:
    return Response(
        organic_rate=float(organic["rate"]),
        organic_mean_hours=float(organic["mean_hours"]),
        organic_multipliers=dict(organic.get("multipliers", {})),
        base=dict(resp["base"]),
        multipliers=dict(resp.get("multipliers", {})),
        best_delay_minutes=float(resp["best_delay_minutes"]),
        delay_width=float(resp.get("delay_width", 1.0)),
        best_delay_by_segment=dict(resp.get("best_delay_by_segment", {})),
        discount_lift_per_10pct=float(resp.get("discount_lift_per_10pct", 0.0)),
        discount_lift_by_segment=dict(resp.get("discount_lift_by_segment", {})),
        touch_decay=float(resp.get("touch_decay", 0.6)),
        lag_hours=dict(resp["lag_hours"]),
        max_rate=float(resp.get("max_rate", 0.6)),
    )


def segments_of(context: Mapping[str, Any], big_cart_value: float) -> frozenset[str]:
    """The segments a context belongs to (see the module docstring)."""
    names = {f"{key}={context.get(key)}" for key in _SEGMENT_KEYS}
    if float(context.get("cart_value", 0.0)) >= big_cart_value:
        names.add("big_cart")
    if int(context.get("previous_abandons", 0)) >= 2:
        names.add("discount_seeker")
    return frozenset(names)


def segment_labels(segments: frozenset[str]) -> list[str]:
    """A cart's label along each segment dimension, in a fixed order: customer type, device,
    checkout stage, ``big_cart=yes/no``, ``discount_seeker=yes/no``.

    Example:
        >>> segment_labels(frozenset({"customer_type=new", "device=mobile", "big_cart"}))[1:]
        ['device=mobile', 'checkout_stage=None', 'big_cart=yes', 'discount_seeker=no']
    """
    labels = []
    for key in _SEGMENT_KEYS:
        labels.append(next((s for s in segments if s.startswith(f"{key}=")), f"{key}=None"))
    for special in _SPECIAL_SEGMENTS:
        labels.append(f"{special}={'yes' if special in segments else 'no'}")
    return labels


def path_values(
    scenario: Scenario,
    response: Response,
    segments: frozenset[str],
    arms: Sequence[Arm],
    paths: IntArray,
) -> tuple[FloatArray, FloatArray]:
    """Expected profit of arm sequences, as ``value * coef - const`` for a cart of ``value``.

    Args:
        scenario: the world (economics, discount use).
        response: the regime.
        segments: the cart's segments.
        arms: the arms the paths index (no holdout among the indexed ones).
        paths: shape ``(n_paths, n_touches)``, arm indices, ``-1`` once the journey stops.

    Returns:
        ``(coef, const)``: expected profit of path ``i`` for a cart of value ``v`` is
        ``v * coef[i] - const[i]``.

    With ``S(t)`` the probability that nothing has fired by time ``t`` (organic survival times
    each sent message's responder survival), message ``k`` is sent with probability
    ``S(s_k)``, the order happens with probability ``1 - (1 - o) prod (1 - r_k)``, and an order
    between sends ``k`` and ``k + 1`` carries the largest discount offered so far.
    """
    n_paths, n_touches = paths.shape
    margin = scenario.economics.margin_rate
    organic = response.organic(segments)
    tau = response.organic_mean_hours
    delay_h = np.array([a.delay_minutes / 60.0 for a in arms] + [0.0])
    discount = np.array([a.discount_pct / 100.0 for a in arms] + [0.0]) * scenario.discount_use
    cost = np.array([scenario.economics.cost_of(a) for a in arms] + [0.0])
    lag = np.array([response.lag_hours.get(str(a.channel), 1.0) for a in arms] + [1.0])
    idx = np.where(paths < 0, len(arms), paths)  # the extra index is "stopped"
    active = paths >= 0
    rates = np.stack(
        [
            np.append(response.rates(segments, arms, k + 1), 0.0)[idx[:, k]]
            for k in range(n_touches)
        ],
        axis=1,
    )
    rates = np.where(active, rates, 0.0)
    send_times = np.cumsum(delay_h[idx], axis=1)

    def survival(t: FloatArray, upto: int) -> FloatArray:
        s = 1.0 - organic * (1.0 - np.exp(-t / tau))
        for j in range(upto):
            fired = 1.0 - np.exp(-np.maximum(t - send_times[:, j], 0.0) / lag[idx[:, j]])
            s = s * (1.0 - rates[:, j] * fired)
        return s

    sent = np.stack([survival(send_times[:, k], k) for k in range(n_touches)], axis=1)
    sent = np.where(active, sent, 0.0)
    never = (1.0 - organic) * np.prod(1.0 - rates, axis=1)
    converted = 1.0 - never
    # Probability the order happens between send k and send k+1 (or after the last send).
    after = np.concatenate([sent[:, 1:], np.zeros((n_paths, 1))], axis=1)
    after = np.where(
        np.concatenate([active[:, 1:], np.zeros((n_paths, 1), bool)], axis=1), after, never[:, None]
    )
    between = np.where(active, sent - after, 0.0)
    offered = np.maximum.accumulate(np.where(active, discount[idx], 0.0), axis=1)
    coef = margin * converted - (between * offered).sum(axis=1)
    const = (sent * cost[idx]).sum(axis=1)
    return coef, const


def all_paths(n_arms: int, max_touches: int) -> IntArray:
    """Every sequence of up to ``max_touches`` arm indices (``-1`` pads stopped journeys)."""
    paths = [np.full((1, max_touches), -1, dtype=np.int64)]
    for length in range(1, max_touches + 1):
        grids = np.meshgrid(*[np.arange(n_arms)] * length, indexing="ij")
        block = np.stack([g.ravel() for g in grids], axis=1)
        pad = np.full((block.shape[0], max_touches - length), -1, dtype=np.int64)
        paths.append(np.concatenate([block, pad], axis=1).astype(np.int64))
    return np.concatenate(paths)


def _product(multipliers: Mapping[str, float], segments: frozenset[str]) -> float:
    out = 1.0
    for segment, factor in multipliers.items():
        if segment in segments:
            out *= factor
    return out


def _check_segment(name: str, segment: str) -> None:
    key, _, _ = segment.partition("=")
    if segment not in _SPECIAL_SEGMENTS and key not in _SEGMENT_KEYS:
        raise ValueError(f"{name}: unknown segment {segment!r}")


def _check(ok: bool, name: str, value: object, expected: str) -> None:
    if not ok:
        raise ValueError(f"scenario field {name} must be {expected}, not {value!r}")


def with_response(scenario: Scenario, **changes: Any) -> Scenario:
    """A copy of ``scenario`` with some response parameters changed (for experiments/tests)."""
    return replace(scenario, response=replace(scenario.response, **changes))
