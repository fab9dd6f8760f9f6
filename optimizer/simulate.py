"""The offline simulator: run policies against a scenario's ground truth, in simulated time.

Carts are abandoned as a Poisson stream. Every ``tick_minutes`` the simulator hands the carts
due for a decision to the policy (``choose_many`` when it has one, as a worker sweeping due
carts would), schedules each message at its arm's delay, and resolves outcomes as simulated
time passes: a message is sent only if the cart has not been bought by then; an order happens
at the first of the organic purchase and the sent messages' responders; every decision is
recorded once, when its outcome is final (the order, or its attribution window closing). A
cart's journey ends at an order, at the holdout arm, or after ``max_touches`` messages.

Every policy of a comparison sees the same carts and the same random draws (organic purchase
and its time, each touch's response uniform and lag, discount use): common random numbers, so
differences between policies are differences in decisions, not luck.

The share of the achievable incremental profit a policy captures is
``(profit - holdout profit) / (oracle profit - holdout profit)``, where the oracle knows the
truth and follows the best sequence of arms for each cart (see :mod:`optimizer.scenario`).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from optimizer.arms import Arm, Decision
from optimizer.baselines import EpsilonGreedyPolicy, HoldoutPolicy, UniformRandomPolicy
from optimizer.policy import FixedSchedulePolicy, Policy
from optimizer.scenario import (
    Response,
    Scenario,
    all_paths,
    path_values,
    segment_labels,
    segments_of,
)
from optimizer.thompson import ThompsonPolicy

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Names accepted by :func:`make_policy` and ``nudge simulate --policy``.
POLICIES = (
    "thompson",
    "thompson-logistic",
    "thompson-cross",
    "thompson-since",
    "thompson-forget-prior",
    "thompson-relevance",
    "schedule",
    "random",
    "epsilon-greedy",
    "oracle",
    "holdout",
)
#: The simulated clock starts on a Monday at midnight UTC.
START = datetime(2025, 1, 6, tzinfo=UTC)

_DECIDE, _SEND, _FIRE, _CLOSE = 0, 1, 2, 3


@dataclass(frozen=True)
class Carts:
    """The world's random draws for ``n`` carts, shared by every policy of a comparison."""

    arrival_hours: FloatArray
    contexts: list[dict[str, Any]]
    segments: list[frozenset[str]]
    organic_u: FloatArray  # organic purchase iff organic_u < organic probability
    organic_e: FloatArray  # standard exponential, scaled by the organic mean time
    response_u: FloatArray  # (n, max_touches): message k responds iff u < its rate
    response_e: FloatArray  # (n, max_touches): standard exponential lags
    discount_u: FloatArray  # an offered discount is used iff u < discount_use

    def __len__(self) -> int:
        return len(self.contexts)


def draw_carts(scenario: Scenario, n: int, rng: np.random.Generator) -> Carts:
    """Draw ``n`` abandoned carts and every random outcome they may need.

    Args:
        scenario: the world.
        n: number of carts.
        rng: the source of randomness (use the same seed for every policy compared).
    """
    if n < 1:
        raise ValueError(f"n (carts) must be >= 1, not {n}")
    gaps = rng.exponential(24.0 / scenario.carts_per_day, size=n)
    arrival = np.cumsum(gaps)
    columns: dict[str, list[str]] = {}
    for key in ("customer_type", "device", "checkout_stage", "previous_abandons"):
        labels = list(scenario.mix[key])
        shares = np.array([scenario.mix[key][label] for label in labels])
        picks = rng.choice(len(labels), size=n, p=shares / shares.sum())
        columns[key] = [labels[i] for i in picks]
    draws = scenario.cart_value_median * np.exp(scenario.cart_value_sigma * rng.standard_normal(n))
    values = np.round(np.clip(draws, 1.0, None), 2)
    reach = {c: rng.random(n) < scenario.reachability[c] for c in scenario.channels}
    contexts: list[dict[str, Any]] = []
    segments: list[frozenset[str]] = []
    for i in range(n):
        previous = columns["previous_abandons"][i]
        context = {
            "cart_value": float(values[i]),
            "customer_type": columns["customer_type"][i],
            "device": columns["device"][i],
            "checkout_stage": columns["checkout_stage"][i],
            "previous_abandons": int(previous.rstrip("+")),
            "channels": [c for c in scenario.channels if reach[c][i]],
            "abandoned_day": float(arrival[i] / 24.0),
        }
        contexts.append(context)
        segments.append(segments_of(context, scenario.big_cart_value))
    touches = scenario.max_touches
    return Carts(
        arrival_hours=arrival,
        contexts=contexts,
        segments=segments,
        organic_u=rng.random(n),
        organic_e=rng.standard_exponential(n),
        response_u=rng.random((n, touches)),
        response_e=rng.standard_exponential((n, touches)),
        discount_u=rng.random(n),
    )


@dataclass
class RunResult:
    """What one policy earned on one set of carts."""

    policy: str
    profit: FloatArray  # per cart, in arrival order
    converted: npt.NDArray[np.bool_]
    messages: int
    discount_given: float
    decisions: int
    arm_counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return float(self.profit.sum())


class OraclePolicy:
    """Knows the scenario's truth; follows, for each cart, the best sequence of arms.

    The best adaptive policy is an open-loop sequence (the only news during a journey is "not
    bought yet"), so for each segment and set of reachable channels it scores every sequence
    of up to ``max_touches`` arms in closed form (:func:`optimizer.scenario.path_values`),
    keeps those best for some cart value, and picks the best for the cart's value.
    """

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.max_touches = scenario.max_touches
        self.arms = [a for a in scenario.arms if not a.is_holdout]
        self._cache: dict[tuple[Any, ...], tuple[IntArray, FloatArray, FloatArray]] = {}
        self._paths: dict[int, IntArray] = {}

    def choose(self, context: Mapping[str, Any], *, now: datetime) -> Decision:
        del now
        path = self.best_path(context)
        touch = int(context.get("touch", 1))
        index = int(path[touch - 1]) if touch <= path.size else -1
        arm = Arm.holdout() if index < 0 else self.arms[index]
        return Decision(arm=arm, propensity=1.0, context=dict(context))

    def record(
        self,
        decision: Decision,
        *,
        converted: bool,
        order_value: float,
        message_sent: bool,
        at: datetime,
    ) -> None:
        """Needs no learning."""
        del decision, converted, order_value, message_sent, at

    def best_path(self, context: Mapping[str, Any]) -> IntArray:
        """The best arm sequence (indices into :attr:`arms`, ``-1`` = stop) for a cart."""
        response = self.scenario.response_at(float(context.get("abandoned_day", 0.0)))
        segments = segments_of(context, self.scenario.big_cart_value)
        channels = tuple(sorted(set(context.get("channels") or ()) & set(self.scenario.channels)))
        key = (id(response), segments, channels)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._candidates(response, segments, channels)
            self._cache[key] = cached
        paths, coef, const = cached
        value = float(context["cart_value"])
        best: IntArray = paths[int(np.argmax(value * coef - const))]
        return best

    def _candidates(
        self, response: Response, segments: frozenset[str], channels: tuple[str, ...]
    ) -> tuple[IntArray, FloatArray, FloatArray]:
        feasible = np.array([i for i, a in enumerate(self.arms) if a.channel in channels])
        if feasible.size == 0:
            empty = np.full((1, self.max_touches), -1, dtype=np.int64)
            return empty, np.zeros(1), np.zeros(1)
        local = self._paths.get(feasible.size)
        if local is None:
            local = all_paths(feasible.size, self.max_touches)
            self._paths[feasible.size] = local
        paths = np.where(local >= 0, feasible[np.maximum(local, 0)], -1)
        coef, const = path_values(self.scenario, response, segments, self.arms, paths)
        # Keep the paths that are best for some cart value on a log grid from 1 to 20,000
        # (points 17 % apart): the upper envelope of the lines value -> value * coef - const.
        # A path best only between two grid points is missed; its edge over the neighbours'
        # paths is then tiny (they tie at the crossing points).
        grid = np.geomspace(1.0, 20000.0, 64)
        best = np.unique(np.argmax(grid[:, None] * coef[None, :] - const[None, :], axis=1))
        return paths[best], coef[best], const[best]


def make_policy(name: str, scenario: Scenario, seed: int) -> Policy:
    """Build one of the simulator's policies by name (see :data:`POLICIES`)."""
    rng = np.random.default_rng(seed)
    arms = scenario.arms
    touches = scenario.max_touches
    if name in POLICIES and name.startswith("thompson"):
        return ThompsonPolicy(
            arms,
            scenario.economics,
            seed=rng,
            max_touches=touches,
            attribution_window=timedelta(hours=scenario.attribution_window_hours),
            model="logistic" if name == "thompson-logistic" else "noisy_or",
            cross_features=name == "thompson-cross",
            since_abandonment=name == "thompson-since",
            forgetting="prior" if name == "thompson-forget-prior" else "mean",
            relevance=name == "thompson-relevance",
        )
    if name == "schedule":
        offsets = (60, 24 * 60, 72 * 60)[:touches]
        return FixedSchedulePolicy(offsets_minutes=offsets)
    if name == "random":
        return UniformRandomPolicy(arms, rng=rng, max_touches=touches)
    if name == "epsilon-greedy":
        return EpsilonGreedyPolicy(arms, scenario.economics, rng=rng, max_touches=touches)
    if name == "oracle":
        return OraclePolicy(scenario)
    if name == "holdout":
        return HoldoutPolicy(max_touches=touches)
    raise ValueError(f"policy must be one of {POLICIES}, not {name!r}")


def run_policy(
    scenario: Scenario,
    policy: Policy,
    carts: Carts,
    *,
    name: str = "",
    tick_minutes: float = 10.0,
    on_progress: Callable[[int], None] | None = None,
) -> RunResult:
    """Run one policy over the carts in simulated time and return what it earned.

    Args:
        scenario: the ground truth.
        policy: anything with ``choose``/``record`` (and optionally ``choose_many``).
        carts: the world's draws (:func:`draw_carts`).
        name: label of the result.
        tick_minutes: how often due carts are swept and decided.
        on_progress: called with the number of carts abandoned so far, once per tick.
    """
    if tick_minutes <= 0:
        raise ValueError(f"tick_minutes must be > 0, not {tick_minutes}")
    n = len(carts)
    touches = min(scenario.max_touches, policy.max_touches)
    window = scenario.attribution_window_hours
    margin = scenario.economics.margin_rate
    tick = tick_minutes / 60.0
    many = getattr(policy, "choose_many", None)

    profit = np.zeros(n)
    converted = np.zeros(n, dtype=bool)
    conv_time = np.full(n, math.inf)
    sends: list[list[tuple[float, float]]] = [[] for _ in range(n)]
    # Per cart: [decision, decided_at_hours, recorded, message_sent]
    decisions: list[list[list[Any]]] = [[] for _ in range(n)]
    arm_counts: dict[str, int] = {}
    rate_cache: dict[tuple[Any, ...], float] = {}
    messages = 0
    discount_given = 0.0
    n_decisions = 0

    heap: list[tuple[float, int, int, int, int]] = []
    seq = 0
    for i in range(n):
        heap.append((float(carts.arrival_hours[i]), seq, _DECIDE, i, 1))
        seq += 1
        response = scenario.response_at(carts.contexts[i]["abandoned_day"])
        if carts.organic_u[i] < response.organic(carts.segments[i]):
            fire = carts.arrival_hours[i] + carts.organic_e[i] * response.organic_mean_hours
            conv_time[i] = fire
            heap.append((float(fire), seq, _FIRE, i, 0))
            seq += 1
    heapq.heapify(heap)

    def when(hours: float) -> datetime:
        return START + timedelta(hours=hours)

    def rate(i: int, arm: Arm, touch: int) -> float:
        response = scenario.response_at(carts.contexts[i]["abandoned_day"])
        key = (id(response), carts.segments[i], arm, touch)
        value = rate_cache.get(key)
        if value is None:
            value = float(response.rates(carts.segments[i], [arm], touch)[0])
            rate_cache[key] = value
        return value

    now_h = 0.0
    arrived = 0
    while heap:
        end = now_h + tick
        if heap[0][0] >= end:  # skip empty ticks
            end = (math.floor(heap[0][0] / tick) + 1) * tick
        due: list[tuple[int, int]] = []
        while heap and heap[0][0] < end:
            t, _, kind, i, k = heapq.heappop(heap)
            if kind == _DECIDE:
                due.append((i, k))
            elif kind == _SEND:
                record_row = decisions[i][k]
                if converted[i]:
                    continue
                arm = record_row[0].arm
                record_row[3] = True
                messages += 1
                profit[i] -= scenario.economics.cost_of(arm)
                sends[i].append((t, arm.discount_pct))
                touch = k + 1
                if carts.response_u[i, touch - 1] < rate(i, arm, touch):
                    lag = scenario.response_at(carts.contexts[i]["abandoned_day"]).lag_hours
                    fire = t + carts.response_e[i, touch - 1] * lag.get(str(arm.channel), 1.0)
                    if fire < conv_time[i]:
                        conv_time[i] = fire
                        heapq.heappush(heap, (fire, seq, _FIRE, i, 0))
                        seq += 1
                if touch < touches:
                    heapq.heappush(heap, (t, seq, _DECIDE, i, touch + 1))
                    seq += 1
            elif kind == _FIRE:
                if converted[i] or t != conv_time[i]:
                    continue
                converted[i] = True
                value = carts.contexts[i]["cart_value"]
                offered = max((d for s, d in sends[i] if s < t), default=0.0)
                used = offered if carts.discount_u[i] < scenario.discount_use else 0.0
                discount_given += value * used / 100.0
                profit[i] += value * margin - value * used / 100.0
                for row in decisions[i]:
                    if not row[2] and row[1] <= t <= row[1] + window:
                        row[2] = True
                        policy.record(
                            row[0],
                            converted=True,
                            order_value=value,
                            message_sent=row[3],
                            at=when(t),
                        )
            else:  # _CLOSE
                row = decisions[i][k]
                if not row[2]:
                    row[2] = True
                    policy.record(
                        row[0], converted=False, order_value=0.0, message_sent=row[3], at=when(t)
                    )
        due = [(i, k) for i, k in due if not converted[i]]
        if due:
            hour = int(end % 24.0)
            contexts = [
                {
                    **carts.contexts[i],
                    "touch": k,
                    "local_hour": hour,
                    "hours_since_abandonment": end - float(carts.arrival_hours[i]),
                }
                for i, k in due
            ]
            now = when(end)
            if many is not None:
                chosen: Sequence[Decision] = many(contexts, now=now)
            else:
                chosen = [policy.choose(c, now=now) for c in contexts]
            for (i, _k), decision in zip(due, chosen, strict=True):
                index = len(decisions[i])
                decisions[i].append([decision, end, False, False])
                n_decisions += 1
                arm_counts[decision.arm.key] = arm_counts.get(decision.arm.key, 0) + 1
                heapq.heappush(heap, (end + window, seq, _CLOSE, i, index))
                seq += 1
                if not decision.arm.is_holdout:
                    send_at = end + decision.arm.delay_minutes / 60.0
                    heapq.heappush(heap, (send_at, seq, _SEND, i, index))
                    seq += 1
        now_h = end
        if on_progress is not None:
            reached = int(np.searchsorted(carts.arrival_hours, now_h))
            if reached > arrived:
                on_progress(reached - arrived)
                arrived = reached
    return RunResult(
        policy=name or type(policy).__name__,
        profit=profit,
        converted=converted,
        messages=messages,
        discount_given=discount_given,
        decisions=n_decisions,
        arm_counts=arm_counts,
    )


@dataclass
class Comparison:
    """Several policies run on the same carts, with the oracle and holdout as references."""

    scenario: str
    n_carts: int
    seed: int
    runs: dict[str, RunResult]
    tail: float = 0.2
    segments: Sequence[frozenset[str]] = ()

    def captured_share(self, policy: str, *, last: float | None = None) -> float:
        """``(profit - holdout) / (oracle - holdout)``, over all carts or the last share."""
        start = 0 if last is None else int(self.n_carts * (1.0 - last))
        profit = self.runs[policy].profit[start:].sum()
        holdout = self.runs["holdout"].profit[start:].sum()
        oracle = self.runs["oracle"].profit[start:].sum()
        if oracle - holdout <= 0:
            return math.nan
        return float((profit - holdout) / (oracle - holdout))

    def segment_rows(self, *, last: float | None = None) -> list[dict[str, Any]]:
        """Where the uplift is, and how much of it each policy captures, segment by segment.

        One row per value of each segment dimension (customer type, device, checkout stage,
        big cart, discount seeker; see :func:`optimizer.scenario.segment_labels`), so every
        cart counts once per dimension. A row holds its ``segment``, ``carts``, the achievable
        ``uplift/cart`` (oracle minus holdout profit) and ``share <policy>`` for each policy
        other than the references, NaN where the achievable uplift is not positive. A
        dimension's rows, weighted by their uplift, average to :meth:`captured_share`.

        Args:
            last: only the last share of the carts (e.g. 0.2), as in :meth:`captured_share`.
        """
        if len(self.segments) != self.n_carts:
            raise ValueError("this comparison holds no per-cart segments (see compare())")
        start = 0 if last is None else int(self.n_carts * (1.0 - last))
        labels = np.array([segment_labels(s) for s in self.segments[start:]])  # (carts, dims)
        holdout = self.runs["holdout"].profit[start:]
        uplift = self.runs["oracle"].profit[start:] - holdout
        policies = [name for name in self.runs if name not in ("holdout", "oracle")]
        out: list[dict[str, Any]] = []
        for dim in range(labels.shape[1]):
            for label in sorted(set(labels[:, dim])):
                mine = labels[:, dim] == label
                achievable = float(uplift[mine].sum())
                row: dict[str, Any] = {
                    "segment": str(label),
                    "carts": int(mine.sum()),
                    "uplift/cart": achievable / int(mine.sum()),
                }
                for name in policies:
                    gained = float((self.runs[name].profit[start:][mine] - holdout[mine]).sum())
                    row[f"share {name}"] = gained / achievable if achievable > 0 else math.nan
                out.append(row)
        return out

    def rows(self) -> list[dict[str, Any]]:
        """One summary dict per policy."""
        oracle = self.runs["oracle"].profit
        out = []
        for name, run in self.runs.items():
            out.append(
                {
                    "scenario": self.scenario,
                    "policy": name,
                    "carts": self.n_carts,
                    "profit/cart": run.total / self.n_carts,
                    "conversion": float(run.converted.mean()),
                    "msgs/cart": run.messages / self.n_carts,
                    "discount/cart": run.discount_given / self.n_carts,
                    "share": self.captured_share(name),
                    f"share_last{int(self.tail * 100)}": self.captured_share(name, last=self.tail),
                    "regret/cart": float((oracle.sum() - run.total) / self.n_carts),
                }
            )
        return out


def compare(
    scenario: Scenario,
    policies: Mapping[str, Callable[[], Policy]] | Sequence[str],
    *,
    n_carts: int,
    seed: int,
    tick_minutes: float = 10.0,
    on_progress: Callable[[int], None] | None = None,
) -> Comparison:
    """Run policies on the same carts; the oracle and the holdout are always included.

    Args:
        scenario: the ground truth.
        policies: names from :data:`POLICIES`, or a mapping of name to policy factory.
        n_carts: carts per policy.
        seed: seeds the carts and every named policy.
        tick_minutes: decision sweep interval.
        on_progress: called with the number of newly abandoned carts, across all runs.
    """
    factories: dict[str, Callable[[], Policy]] = {}
    if isinstance(policies, Mapping):
        factories.update(policies)
    else:
        for name in policies:
            factories[name] = _factory(name, scenario, seed)
    for name in ("holdout", "oracle"):
        factories.setdefault(name, _factory(name, scenario, seed))
    carts = draw_carts(scenario, n_carts, np.random.default_rng(seed))
    runs = {
        name: run_policy(
            scenario,
            factory(),
            carts,
            name=name,
            tick_minutes=tick_minutes,
            on_progress=on_progress,
        )
        for name, factory in factories.items()
    }
    return Comparison(
        scenario=scenario.name, n_carts=n_carts, seed=seed, runs=runs, segments=carts.segments
    )


def _factory(name: str, scenario: Scenario, seed: int) -> Callable[[], Policy]:
    if name not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, not {name!r}")
    return lambda: make_policy(name, scenario, seed)


def seed_rows(comparisons: Sequence[Comparison]) -> list[dict[str, Any]]:
    """Each policy's captured share over several seeds, one summary dict per policy.

    One run of a learning policy is one draw from a wide spread (grocery's share over 50,000
    carts ranged from 0.29 to 0.59 over ten seeds), so policies are compared over several.
    A row holds the ``policy``, the number of ``seeds``, the mean ``share`` over all carts,
    its standard error (``share se``, across seeds) and worst seed (``share min``), the mean
    share over the last 20 % (``share_last20``) with its standard error, and, for every
    policy after the first, ``vs first``: its mean per-seed difference from the first policy
    over all carts (paired by seed, so the same carts), with its standard error.

    Args:
        comparisons: :func:`compare` results for the same policies, one per seed.
    """
    if len(comparisons) < 2:
        raise ValueError("seed_rows needs the comparisons of at least two seeds")
    names = [n for n in comparisons[0].runs if n not in ("holdout", "oracle")]
    if any(list(c.runs) != list(comparisons[0].runs) for c in comparisons):
        raise ValueError("every comparison must hold the same policies")
    tail = comparisons[0].tail
    last = f"share_last{int(tail * 100)}"
    shares = {
        name: np.array(
            [[c.captured_share(name), c.captured_share(name, last=tail)] for c in comparisons]
        )
        for name in names
    }

    def se(values: FloatArray) -> float:
        return float(values.std(ddof=1) / math.sqrt(values.size))

    out: list[dict[str, Any]] = []
    for name in names:
        mine = shares[name]
        row: dict[str, Any] = {
            "policy": name,
            "seeds": len(comparisons),
            "share": float(mine[:, 0].mean()),
            "share se": se(mine[:, 0]),
            "share min": float(mine[:, 0].min()),
            last: float(mine[:, 1].mean()),
            f"{last} se": se(mine[:, 1]),
            "vs first": math.nan,
            "vs first se": math.nan,
        }
        if name != names[0]:
            paired = mine[:, 0] - shares[names[0]][:, 0]
            row["vs first"], row["vs first se"] = float(paired.mean()), se(paired)
        out.append(row)
    return out


def write_regret_png(comparison: Comparison, path: Path, *, title: str | None = None) -> Path:
    """Plot each policy's cumulative regret against the oracle over carts, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    oracle = np.cumsum(comparison.runs["oracle"].profit)
    fig, ax = plt.subplots(figsize=(8, 5))
    carts = np.arange(1, comparison.n_carts + 1)
    for name, run in comparison.runs.items():
        if name == "oracle":
            continue
        ax.plot(carts, oracle - np.cumsum(run.profit), label=name, linewidth=1.2)
    ax.set_xlabel("carts")
    ax.set_ylabel("cumulative regret vs oracle (profit)")
    ax.set_title(title or f"{comparison.scenario}: cumulative regret")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
