"""Optimizer benchmark: captured share vs peers, decision speed, and the Lai-Robbins check.

``python -m benchmarks optimizer`` (or ``make bench``) writes ``results/optimizer.json`` and
``results/optimizer-<scenario>.png`` (cumulative regret).

1. Every shipped scenario, 50,000 carts, one seed, all policies on the same carts and arms:
   ours (``thompson``), the 1 h / 24 h / 72 h email schedule, uniform random, epsilon-greedy,
   MABWiser's Thompson sampling (Beta-Bernoulli on conversions, one bandit per touch, with the
   same profit argmax on top so it is not handed a conversion-maximiser's handicap), MABWiser's
   LinTS (contextual, on the profit of each decision), and Vowpal Wabbit ``--cb_explore_adf``
   (context x action quadratic features, cost = -profit). Reports the share of the achievable
   incremental profit captured over all carts and over the last 20 %.
2. Decision speed of ``ThompsonPolicy`` after learning on a scenario: ``choose`` p50/p99 in
   microseconds and decisions/s, ``choose_many`` decisions/s, ``record`` records/s (including
   the refits it triggers) and the time of one refit.
2b. Every shipped scenario again over :data:`SEEDS` (50,000 carts each, two processes): ours,
   ours with the logistic model (``thompson-logistic``) and the schedule, summarised by
   :func:`optimizer.simulate.seed_rows` (mean share, its standard error, the worst seed, and
   the difference from ours paired by seed). One seed is one draw from a wide spread, so the
   share targets are also judged on these means.
3. Chapelle & Li's Bernoulli bandits (K = 10, best arm 0.5, gaps 0.1 and 0.02), T = 10^6,
   regret of the Beta-Bernoulli special case of our sampler against the Lai-Robbins bound.

BLAS is limited to one thread throughout (the targets are "on one core", and the machine is
shared).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from optimizer import Arm, Decision, Economics, ThompsonPolicy
from optimizer.bernoulli import lai_robbins_bound, thompson_bernoulli_regret
from optimizer.features import CART_VALUE_EDGES
from optimizer.policy import Policy
from optimizer.scenario import Scenario, load_scenario, shipped_scenarios
from optimizer.simulate import (
    START,
    Comparison,
    compare,
    draw_carts,
    make_policy,
    seed_rows,
    write_regret_png,
)

RESULTS = Path(__file__).parent / "results"
CARTS = 50_000
SEED = 2025
POLICIES = ("thompson", "schedule", "random", "epsilon-greedy")
#: Seeds of the multi-seed part, and the policies it runs on each.
SEEDS = (1, 2, 3, 4)
SEED_POLICIES = ("thompson", "thompson-logistic", "schedule")


# ---------------------------------------------------------------- peers


def _profit_argmax(
    arms: Sequence[Arm],
    economics: Economics,
    context: Mapping[str, Any],
    conversion: Mapping[Arm, float],
) -> Arm:
    value = float(context["cart_value"])
    channels = set(context.get("channels") or ())
    best, best_profit = Arm.holdout(), -np.inf
    for arm in arms:
        if not (arm.is_holdout or arm.channel in channels):
            continue
        profit = conversion[arm] * value * (economics.margin_rate - arm.discount_pct / 100)
        profit -= economics.cost_of(arm)
        if profit > best_profit:
            best, best_profit = arm, profit
    return best


class MabwiserTS:
    """MABWiser ``LearningPolicy.ThompsonSampling`` on conversions, one bandit per touch.

    The bandit samples a conversion probability per arm; we choose the feasible arm with the
    highest sampled profit (the same objective as ours). Records are fed in batches, at the
    next decision, because ``partial_fit`` costs ~0.3 ms per call.
    """

    def __init__(self, scenario: Scenario, seed: int) -> None:
        from mabwiser.mab import MAB, LearningPolicy

        self.arms = scenario.arms
        self.keys = [a.key for a in self.arms]
        self.economics = scenario.economics
        self.max_touches = scenario.max_touches
        self.bandits = [
            MAB(self.keys, LearningPolicy.ThompsonSampling(), seed=seed + t)
            for t in range(self.max_touches)
        ]
        self.fitted = [False] * self.max_touches
        self.pending: list[tuple[list[str], list[int]]] = [([], []) for _ in self.bandits]

    def _flush(self) -> None:
        for t, (decisions, rewards) in enumerate(self.pending):
            if not decisions:
                continue
            if self.fitted[t]:
                self.bandits[t].partial_fit(decisions, rewards)
            else:
                self.bandits[t].fit(decisions, rewards)
                self.fitted[t] = True
            self.pending[t] = ([], [])

    def choose(self, context: Mapping[str, Any], *, now: datetime) -> Decision:
        self._flush()
        t = int(context.get("touch", 1)) - 1
        if self.fitted[t]:
            sampled = self.bandits[t].predict_expectations()
            conversion = {a: float(sampled[a.key]) for a in self.arms}
        else:
            rng = np.random.default_rng(len(self.pending[t][0]))
            conversion = {a: float(rng.random()) for a in self.arms}
        arm = _profit_argmax(self.arms, self.economics, context, conversion)
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
        del order_value, message_sent, at
        t = int(decision.context.get("touch", 1)) - 1
        self.pending[t][0].append(decision.arm.key)
        self.pending[t][1].append(int(converted))


def _one_hot(context: Mapping[str, Any], max_touches: int) -> list[float]:
    features = []
    for key, values in (
        ("customer_type", ("new", "returning")),
        ("device", ("mobile", "desktop", "tablet")),
        ("checkout_stage", ("cart", "checkout", "payment")),
    ):
        features += [float(context.get(key) == v) for v in values]
    bucket = int(np.searchsorted(CART_VALUE_EDGES, float(context["cart_value"]), side="right"))
    features += [float(bucket == b) for b in range(len(CART_VALUE_EDGES) + 1)]
    previous = min(int(context.get("previous_abandons", 0)), 3)
    features += [float(previous == p) for p in range(4)]
    touch = int(context.get("touch", 1))
    features += [float(touch == t) for t in range(1, max_touches + 1)]
    return features


class MabwiserLinTS:
    """MABWiser ``LearningPolicy.LinTS`` on the profit of each decision, one-hot context.

    Decisions are made in batches (``choose_many``) and records fed in batches, as the library
    is built for; infeasible arms are masked out of the sampled expectations.
    """

    def __init__(self, scenario: Scenario, seed: int) -> None:
        from mabwiser.mab import MAB, LearningPolicy

        self.arms = scenario.arms
        self.index = {a.key: a for a in self.arms}
        self.economics = scenario.economics
        self.max_touches = scenario.max_touches
        self.bandit = MAB([a.key for a in self.arms], LearningPolicy.LinTS(alpha=1.0), seed=seed)
        self.fitted = False
        self.rng = np.random.default_rng(seed)
        self.pending: tuple[list[str], list[float], list[list[float]]] = ([], [], [])

    def choose(self, context: Mapping[str, Any], *, now: datetime) -> Decision:
        return self.choose_many([context], now=now)[0]

    def choose_many(
        self, contexts: Sequence[Mapping[str, Any]], *, now: datetime
    ) -> list[Decision]:
        arms_, rewards, features = self.pending
        if arms_:
            if self.fitted:
                self.bandit.partial_fit(arms_, rewards, np.array(features))
            else:
                self.bandit.fit(arms_, rewards, np.array(features))
                self.fitted = True
            self.pending = ([], [], [])
        out = []
        if self.fitted:
            x = np.array([_one_hot(c, self.max_touches) for c in contexts])
            sampled = self.bandit.predict_expectations(x)
            if isinstance(sampled, dict):
                sampled = [sampled]
        else:
            sampled = [{a.key: float(self.rng.random()) for a in self.arms} for _ in contexts]
        for context, expectation in zip(contexts, sampled, strict=True):
            channels = set(context.get("channels") or ())
            feasible = [a for a in self.arms if a.is_holdout or a.channel in channels]
            arm = max(feasible, key=lambda a: expectation[a.key])
            out.append(Decision(arm=arm, propensity=1.0, context=dict(context), decided_at=now))
        return out

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
        profit = self.economics.profit(
            decision.arm, converted=converted, order_value=order_value, message_sent=message_sent
        )
        self.pending[0].append(decision.arm.key)
        self.pending[1].append(profit)
        self.pending[2].append(_one_hot(decision.context, self.max_touches))


class VowpalCB:
    """Vowpal Wabbit ``--cb_explore_adf`` (epsilon-greedy 0.05, the default) with ``-q sa``.

    Only feasible arms are offered as actions; the cost is minus the decision's profit.
    """

    def __init__(self, scenario: Scenario, seed: int) -> None:
        import vowpalwabbit

        self.vw = vowpalwabbit.Workspace(
            f"--cb_explore_adf -q sa --epsilon 0.05 --quiet --random_seed {seed}"
        )
        self.arms = scenario.arms
        self.economics = scenario.economics
        self.max_touches = scenario.max_touches
        self.rng = np.random.default_rng(seed)
        self.actions = {
            a: (
                "|a holdout"
                if a.is_holdout
                else f"|a ch={a.channel} d={a.delay_minutes} x={a.discount_pct:g} "
                f"chd={a.channel}{a.delay_minutes} chx={a.channel}{a.discount_pct:g}"
            )
            for a in self.arms
        }
        self.examples: dict[str, tuple[list[str], list[Arm], int, float]] = {}

    def _shared(self, context: Mapping[str, Any]) -> str:
        bucket = int(np.searchsorted(CART_VALUE_EDGES, float(context["cart_value"]), side="right"))
        return (
            f"shared |s ct={context.get('customer_type')} dev={context.get('device')} "
            f"st={context.get('checkout_stage')} v={bucket} "
            f"pa={min(int(context.get('previous_abandons', 0)), 3)} t={context.get('touch', 1)}"
        )

    def choose(self, context: Mapping[str, Any], *, now: datetime) -> Decision:
        channels = set(context.get("channels") or ())
        feasible = [a for a in self.arms if a.is_holdout or a.channel in channels]
        lines = [self._shared(context)] + [self.actions[a] for a in feasible]
        pmf = np.asarray(self.vw.predict("\n".join(lines)), dtype=np.float64)
        pmf = pmf / pmf.sum()
        index = int(self.rng.choice(len(feasible), p=pmf))
        decision = Decision(
            arm=feasible[index],
            propensity=max(float(pmf[index]), 1e-9),
            context=dict(context),
            decided_at=now,
        )
        self.examples[decision.id] = (lines, feasible, index, decision.propensity)
        return decision

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
        lines, _, index, prob = self.examples.pop(decision.id)
        profit = self.economics.profit(
            decision.arm, converted=converted, order_value=order_value, message_sent=message_sent
        )
        labelled = list(lines)
        labelled[index + 1] = f"0:{-profit}:{prob} {labelled[index + 1]}"
        self.vw.learn("\n".join(labelled))


# ---------------------------------------------------------------- parts


def _single_thread() -> contextlib.AbstractContextManager[Any]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    limits: contextlib.AbstractContextManager[Any] = threadpool_limits(limits=1)
    return limits


def _scenario_rows(scenario: Scenario, carts: int, seed: int) -> tuple[list[dict[str, Any]], Any]:
    def named(name: str) -> Callable[[], Policy]:
        return lambda: make_policy(name, scenario, seed)

    factories: dict[str, Callable[[], Policy]] = {name: named(name) for name in POLICIES}
    factories["mabwiser-ts"] = lambda: MabwiserTS(scenario, seed)
    factories["mabwiser-lints"] = lambda: MabwiserLinTS(scenario, seed)
    factories["vw-cb-adf"] = lambda: VowpalCB(scenario, seed)
    timings: dict[str, float] = {}

    def timed(name: str, factory: Callable[[], Policy]) -> Callable[[], Policy]:
        def build() -> Policy:
            timings[name] = time.perf_counter()
            return factory()

        return build

    result = compare(
        scenario,
        {name: timed(name, f) for name, f in factories.items()},
        n_carts=carts,
        seed=seed,
    )
    rows = result.rows()
    for row in rows:
        row["part"] = "share"
    write_regret_png(result, RESULTS / f"optimizer-{scenario.name}.png")
    return rows, result


def _speed(scenario: Scenario, seed: int) -> dict[str, Any]:
    """Decision speed of a policy that has learned on 20,000 carts of the scenario.

    ``choose`` and ``choose_many`` are timed at a fixed clock (no refit falls inside). Records
    are timed twice: as ``record`` alone (buffering; the refit deferred by a batch size above
    the count, and no time-triggered refit) and at the defaults, refits included.
    In-simulation figures are the mean time per call during the 20,000-cart run, refits
    included.
    """
    from optimizer.simulate import run_policy

    policy = make_policy("thompson", scenario, seed)
    assert isinstance(policy, ThompsonPolicy)
    timed = _Timed(policy)
    world = draw_carts(scenario, 20_000, np.random.default_rng(seed))
    run_policy(scenario, timed, world)
    now = START + timedelta(days=30)
    contexts = [
        {**c, "touch": 1 + i % scenario.max_touches, "local_hour": i % 24}
        for i, c in enumerate(world.contexts)
    ]
    policy.choose(contexts[0], now=now)  # the refit due at the new clock happens here
    times = np.empty(len(contexts))
    decisions = []
    started = time.perf_counter()
    for i, context in enumerate(contexts):
        t0 = time.perf_counter_ns()
        decisions.append(policy.choose(context, now=now))
        times[i] = time.perf_counter_ns() - t0
    single = len(contexts) / (time.perf_counter() - started)
    started = time.perf_counter()
    for start in range(0, len(contexts), 1000):
        decisions += policy.choose_many(contexts[start : start + 1000], now=now)
    many = len(contexts) / (time.perf_counter() - started)
    rng = np.random.default_rng(seed)
    outcomes = rng.random(len(decisions)) < 0.08
    lags = rng.exponential(6.0, len(decisions))
    half = len(decisions) // 2
    rates = []
    defaults = (policy.batch_size, policy.refit_interval)
    for batch, part in ((10**9, decisions[:half]), (policy.batch_size, decisions[half:])):
        policy.batch_size = batch
        policy.refit_interval = timedelta(days=10**4) if batch == 10**9 else defaults[1]
        started = time.perf_counter()
        for decision, converted, lag in zip(part, outcomes, lags, strict=False):
            policy.record(
                decision,
                converted=bool(converted),
                order_value=float(decision.context["cart_value"]),
                message_sent=not decision.arm.is_holdout,
                at=now + timedelta(hours=float(lag) if converted else 168.0),
            )
        rates.append(len(part) / (time.perf_counter() - started))
        if batch == 10**9:
            started = time.perf_counter()
            policy.update()
            refit_ms = (time.perf_counter() - started) * 1e3
    return {
        "part": "speed",
        "scenario": scenario.name,
        "choose_p50_us": float(np.percentile(times, 50) / 1e3),
        "choose_p99_us": float(np.percentile(times, 99) / 1e3),
        "choose_per_s": single,
        "choose_many_per_s": many,
        "record_buffer_per_s": rates[0],
        "record_per_s": rates[1],
        "refit_ms": refit_ms,
        "refit_rows": half,
        "sim_choose_us": timed.choose_s / max(timed.decisions, 1) * 1e6,
        "sim_record_us": timed.record_s / max(timed.records, 1) * 1e6,
        "sim_refits": policy.refits,
    }


class _Timed:
    """Wraps a policy and accumulates the time spent in its methods."""

    def __init__(self, policy: ThompsonPolicy) -> None:
        self.policy = policy
        self.max_touches = policy.max_touches
        self.choose_s = self.record_s = 0.0
        self.decisions = self.records = 0

    def choose(self, context: Mapping[str, Any], *, now: datetime) -> Decision:
        return self.choose_many([context], now=now)[0]

    def choose_many(
        self, contexts: Sequence[Mapping[str, Any]], *, now: datetime
    ) -> list[Decision]:
        started = time.perf_counter()
        out = self.policy.choose_many(contexts, now=now)
        self.choose_s += time.perf_counter() - started
        self.decisions += len(out)
        return out

    def record(self, decision: Decision, **kwargs: Any) -> None:
        started = time.perf_counter()
        self.policy.record(decision, **kwargs)
        self.record_s += time.perf_counter() - started
        self.records += 1


def _bernoulli(horizon: int = 1_000_000, runs: int = 8, seed: int = 11) -> list[dict[str, Any]]:
    rows = []
    for gap in (0.1, 0.02):
        means = [0.5] + [0.5 - gap] * 9
        checkpoints = [10**k for k in range(2, 7) if 10**k <= horizon]
        regret = thompson_bernoulli_regret(
            means, horizon, n_runs=runs, rng=np.random.default_rng(seed), checkpoints=checkpoints
        )
        for t, r in zip(checkpoints, regret, strict=True):
            bound = lai_robbins_bound(means, t)
            rows.append(
                {
                    "part": "bernoulli",
                    "gap": gap,
                    "T": t,
                    "runs": runs,
                    "regret": float(r),
                    "lai_robbins": bound,
                    "ratio": float(r / bound),
                }
            )
    return rows


def _seeded(scenario_path: Path, seed: int) -> Comparison:
    with _single_thread():
        return compare(load_scenario(scenario_path), SEED_POLICIES, n_carts=CARTS, seed=seed)


def _seed_part() -> list[dict[str, Any]]:
    """:data:`SEED_POLICIES` on every shipped scenario and :data:`SEEDS`, two at a time."""
    paths = shipped_scenarios()
    tasks = [(path, seed) for path in paths for seed in SEEDS]
    with ProcessPoolExecutor(max_workers=2) as pool:
        done = list(pool.map(_seeded, *zip(*tasks, strict=True)))
    rows: list[dict[str, Any]] = []
    for i in range(len(paths)):
        comparisons = done[i * len(SEEDS) : (i + 1) * len(SEEDS)]
        name = comparisons[0].scenario
        rows += [{"part": "seeds", "scenario": name, **row} for row in seed_rows(comparisons)]
    return rows


def run() -> dict[str, Any]:
    """Run every part; returns ``{"rows": [...], ...detail}`` for ``python -m benchmarks``.

    Rows: one per scenario and policy (``part = share``), then one per speed and Bernoulli
    measurement and per target (``part = speed | bernoulli | target``, with ``metric``,
    ``value``, ``target`` and ``met``).
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    share_rows: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    with _single_thread():
        for path in shipped_scenarios():
            scenario = load_scenario(path)
            started = time.perf_counter()
            rows, _ = _scenario_rows(scenario, CARTS, SEED)
            share_rows += rows
            timings[scenario.name] = round(time.perf_counter() - started, 1)
            print(f"  {scenario.name}: {timings[scenario.name]} s", flush=True)
        started = time.perf_counter()
        seeds = _seed_part()
        timings["seeds"] = round(time.perf_counter() - started, 1)
        print(f"  {len(SEEDS)} seeds: {timings['seeds']} s", flush=True)
        started = time.perf_counter()
        speed = _speed(load_scenario("apparel"), SEED)
        timings["speed"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        bernoulli = _bernoulli()
        timings["bernoulli"] = round(time.perf_counter() - started, 1)
    keep = (
        "scenario",
        "policy",
        "profit/cart",
        "msgs/cart",
        "discount/cart",
        "share",
        "share_last20",
        "regret/cart",
    )
    rows_out: list[dict[str, Any]] = [
        {"part": "share", **{k: r[k] for k in keep}} for r in share_rows
    ]
    rows_out += seeds
    rows_out += _metric_rows(share_rows, speed, bernoulli, seeds)
    return {
        "rows": rows_out,
        "carts": CARTS,
        "seed": SEED,
        "seeds": list(SEEDS),
        "timings_s": timings,
        "shares": share_rows,
        "speed": speed,
        "bernoulli": bernoulli,
    }


def _metric_rows(
    shares: list[dict[str, Any]],
    speed: dict[str, Any],
    bernoulli: list[dict[str, Any]],
    seeds: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    def row(part: str, metric: str, value: float, target: str, met: bool | str) -> dict[str, Any]:
        return {"part": part, "metric": metric, "value": value, "target": target, "met": met}

    out = [
        row("speed", "choose p50 us", speed["choose_p50_us"], "", ""),
        row(
            "speed",
            "choose p99 us",
            speed["choose_p99_us"],
            "<= 1000",
            speed["choose_p99_us"] <= 1000,
        ),
        row(
            "speed",
            "choose decisions/s",
            speed["choose_per_s"],
            ">= 20000",
            speed["choose_per_s"] >= 20_000,
        ),
        row("speed", "choose_many decisions/s", speed["choose_many_per_s"], "", ""),
        row(
            "speed",
            "record/s (buffer only)",
            speed["record_buffer_per_s"],
            ">= 100000",
            speed["record_buffer_per_s"] >= 100_000,
        ),
        row(
            "speed",
            "record/s (incl. refits)",
            speed["record_per_s"],
            ">= 100000",
            speed["record_per_s"] >= 100_000,
        ),
        row("speed", "refit ms", speed["refit_ms"], "", ""),
        row("speed", "in-sim choose us/decision", speed["sim_choose_us"], "", ""),
        row("speed", "in-sim record us/record", speed["sim_record_us"], "", ""),
    ]
    for r in bernoulli:
        if r["T"] == max(b["T"] for b in bernoulli):
            out.append(
                row(
                    "bernoulli",
                    f"regret / Lai-Robbins, gap {r['gap']}, T={r['T']:.0e}",
                    r["ratio"],
                    "<= 1.5",
                    r["ratio"] <= 1.5,
                )
            )
    for scenario in dict.fromkeys(r["scenario"] for r in shares):
        by = {r["policy"]: r for r in shares if r["scenario"] == scenario}
        for column in ("share", "share_last20"):
            ours = by["thompson"][column]
            peers = {
                p: by[p][column] for p in ("schedule", "mabwiser-ts", "mabwiser-lints", "vw-cb-adf")
            }
            best = max(peers, key=lambda p: peers[p])
            label = "all carts" if column == "share" else "last 20% of carts"
            out.append(row("target", f"{scenario}: share, {label}", ours, ">= 0.85", ours >= 0.85))
            out.append(
                row(
                    "target",
                    f"{scenario}: share minus best of schedule/peers ({best}), {label}",
                    ours - peers[best],
                    ">= 0.15",
                    ours - peers[best] >= 0.15,
                )
            )
    for scenario in dict.fromkeys(r["scenario"] for r in seeds):
        by = {r["policy"]: r for r in seeds if r["scenario"] == scenario}
        n = by["thompson"]["seeds"]
        for column in ("share", "share_last20"):
            ours, schedule = by["thompson"][column], by["schedule"][column]
            label = "all carts" if column == "share" else "last 20% of carts"
            out.append(
                row(
                    "target",
                    f"{scenario}: mean share over {n} seeds, {label}",
                    ours,
                    ">= 0.85",
                    ours >= 0.85,
                )
            )
            out.append(
                row(
                    "target",
                    f"{scenario}: mean share minus schedule's over {n} seeds, {label}",
                    ours - schedule,
                    ">= 0.15",
                    ours - schedule >= 0.15,
                )
            )
    return out
