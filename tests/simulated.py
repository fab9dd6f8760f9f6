"""A store whose running bandit experiment the offline simulator played out.

The simulator (``optimizer.simulate``) draws a scenario's carts and shoppers; the production
experiment policy (``experiments.runtime.ExperimentPolicy`` around the experiment's own
Thompson bandit, with its persistent holdout) decides every touch and learns from every
outcome. What it decided and what came of it is written as the workers would have written it:
carts, decisions (arm, propensity, context), messages, opens and clicks, outcomes. Outcomes
whose attribution window has not closed by now stay pending, as they would in production.
"""

from __future__ import annotations

import hashlib
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa

from experiments import lifecycle
from experiments.runtime import ExperimentPolicy, features
from optimizer import Decision, ThompsonPolicy
from optimizer.scenario import load_scenario
from optimizer.simulate import START, draw_carts, run_policy
from settings import Settings
from store.db import get_engine
from store.models import Cart, Click, Message, Open, Outcome
from store.models import Decision as DecisionRow
from store.stores import create_store

cart_t: sa.Table = Cart.__table__  # type: ignore[attr-defined]
decision_t: sa.Table = DecisionRow.__table__  # type: ignore[attr-defined]
message_t: sa.Table = Message.__table__  # type: ignore[attr-defined]
open_t: sa.Table = Open.__table__  # type: ignore[attr-defined]
click_t: sa.Table = Click.__table__  # type: ignore[attr-defined]
outcome_t: sa.Table = Outcome.__table__  # type: ignore[attr-defined]

SIM_STORE = "Simulated Outfitters"
EXPERIMENT = "autumn-timing"
ARMS = ["email/30m/0%", "email/1440m/0%", "sms/30m/10%", "push/120m/0%"]
DAYS = 14


@dataclass
class SimSeeded:
    store_id: str
    store_name: str
    experiment: str
    experiment_id: str
    carts: int
    decisions: int
    resolved: int
    holdout_decisions: int
    sent: int


class Recorder:
    """The experiment policy, logging every decision and outcome, and teaching the bandit
    (which the workers' ``fold`` does in production)."""

    def __init__(self, policy: ExperimentPolicy) -> None:
        self.policy = policy
        self.max_touches = policy.max_touches
        self.decisions: list[Decision] = []
        self.outcomes: dict[str, tuple[bool, float, bool, datetime]] = {}

    def choose(self, context: dict[str, Any], *, now: datetime) -> Decision:
        # One customer per cart: the cart's abandonment time tells carts apart.
        key = hashlib.sha256(f"{context['abandoned_day']:.9f}".encode()).hexdigest()[:16]
        decision = self.policy.choose({**context, "customer_key": key}, now=now)
        self.decisions.append(decision)
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
        self.outcomes[decision.id] = (converted, order_value, message_sent, at)
        bandit = self.policy.bandit
        if bandit is not None and not decision.context.get("holdout"):
            bandit.record(
                replace(decision, context=features(decision.context)),
                converted=converted,
                order_value=order_value,
                message_sent=message_sent,
                at=at,
            )


def _one_blas_thread() -> AbstractContextManager[object]:
    """The bandit's small linear algebra on one BLAS thread: on a busy machine, BLAS threads
    spinning for a share of two cores made each refit 40x slower (82 ms instead of 2 ms)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # not installed: BLAS keeps its own threads
        return nullcontext()
    return threadpool_limits(limits=1, user_api="blas")  # type: ignore[no-any-return]


def seed_experiment(settings: Settings, *, carts: int = 600, seed: int = 11) -> SimSeeded:
    """A store with a bandit experiment running for the last ``DAYS`` days on ``carts`` carts
    of the apparel scenario."""
    world = replace(load_scenario("apparel"), carts_per_day=carts / DAYS, max_touches=2)
    engine = get_engine(settings.sqlalchemy_url)
    now = datetime.now(UTC).replace(microsecond=0)
    began = now - timedelta(days=DAYS + 1)
    with engine.begin() as conn:
        store_id, _ = create_store(conn, name=SIM_STORE)
        spec = lifecycle.Spec(
            name=EXPERIMENT,
            arms=ARMS,
            holdout_share=0.15,
            attribution_window_days=world.attribution_window_hours / 24,
            max_touches=2,
            margin_rate=world.economics.margin_rate,
            seed=seed,
        )
        created = lifecycle.create(conn, store_id=store_id, spec=spec, now=began)
        lifecycle.transition(conn, store_id=store_id, name=EXPERIMENT, action="start", now=began)
        row = conn.execute(
            sa.select(lifecycle.experiment_t).where(lifecycle.experiment_t.c.id == created["id"])
        ).one()
    # The experiment's own bandit, refitting once a simulated day rather than hourly (each
    # refit is a Laplace fit; hourly ones would make this seed take minutes).
    prior = lifecycle.bandit_policy(created)
    bandit = ThompsonPolicy(
        prior.arms,
        prior.economics,
        seed=seed,
        max_touches=spec.max_touches,
        holdout_share=0.0,
        refit_interval=timedelta(days=1),
    )
    recorder = Recorder(ExperimentPolicy(row, bandit, rng=np.random.default_rng(seed)))
    drawn = draw_carts(world, carts, np.random.default_rng(seed))
    with _one_blas_thread():
        run_policy(world, recorder, drawn)

    # Simulated time starts at START; move it so the first cart was abandoned at `began`.
    shift = began - START

    def at(t: datetime) -> datetime:
        return t + shift

    cart_of = {f"{c['abandoned_day']:.9f}": i for i, c in enumerate(drawn.contexts)}
    rng = np.random.default_rng(seed + 1)
    window = timedelta(days=spec.attribution_window_days)
    cart_rows: dict[int, dict[str, Any]] = {}
    decisions, messages, opens, clicks, outcomes = [], [], [], [], []
    for d in recorder.decisions:
        i = cart_of[f"{d.context['abandoned_day']:.9f}"]
        ctx = drawn.contexts[i]
        abandoned = at(START + timedelta(hours=float(drawn.arrival_hours[i])))
        assert d.decided_at is not None
        decided = at(d.decided_at)
        if decided > now:  # the simulation ran on past today: not decided yet
            continue
        cart = cart_rows.setdefault(
            i,
            {
                "store_id": store_id,
                "external_id": f"sim-{i:05d}",
                "currency": "USD",
                "value": ctx["cart_value"],
                "status": "abandoned",
                "checkout_stage": ctx["checkout_stage"],
                "device": ctx["device"],
                "last_event_at": abandoned,
                "last_activity_at": abandoned,
                "journey": 1,
                "abandoned_at": abandoned,
                "created_at": abandoned,
            },
        )
        arm = d.arm
        result = recorder.outcomes.get(d.id)
        converted, value, sent, resolved = result if result else (False, 0.0, False, None)
        resolved = at(resolved) if resolved is not None else None
        sent_at = decided + timedelta(minutes=arm.delay_minutes)
        went_out = sent and sent_at <= now
        decision_id = d.id if len(d.id) == 32 else hashlib.md5(d.id.encode()).hexdigest()
        state = (
            "skipped"
            if arm.is_holdout
            else "sent"
            if went_out
            else "void"
            if converted or (resolved is not None and resolved <= now)
            else "scheduled"
        )
        decisions.append(
            {
                "id": decision_id,
                "store_id": store_id,
                "cart_id": i,  # replaced by the cart's row id below
                "journey": 1,
                "touch": int(d.context["touch"]),
                "policy": "holdout" if d.context.get("holdout") else "experiment",
                "experiment_id": created["id"],
                "arm_key": arm.key,
                "channel": arm.channel,
                "delay_minutes": arm.delay_minutes,
                "discount_pct": arm.discount_pct,
                "propensity": d.propensity,
                "context": {k: v for k, v in d.context.items() if k != "abandoned_day"},
                "decided_at": decided,
                "scheduled_for": sent_at,
                "state": state,
                "state_reason": "holdout" if arm.is_holdout else None,
                "window_ends_at": decided + window,
                "updated_at": decided,
            }
        )
        cost = world.economics.cost_of(arm) if went_out else 0.0
        if went_out:
            message_id = hashlib.md5(f"m-{decision_id}".encode()).hexdigest()
            messages.append(
                {
                    "id": message_id,
                    "decision_id": decision_id,
                    "store_id": store_id,
                    "channel": arm.channel,
                    "recipient": f"shopper-{i}@example.com"
                    if arm.channel == "email"
                    else f"+1555{i:07d}",
                    "status": "sent",
                    "provider_id": f"sim-{message_id[:12]}",
                    "cost": cost,
                    "created_at": sent_at,
                    "lease_until": sent_at + timedelta(minutes=5),
                    "sent_at": sent_at,
                }
            )
            if arm.channel == "email" and (converted or rng.random() < 0.3):
                opens.append({"message_id": message_id, "opened_at": sent_at + timedelta(hours=1)})
                if converted or rng.random() < 0.3:
                    clicks.append(
                        {"message_id": message_id, "clicked_at": sent_at + timedelta(hours=1)}
                    )
        if resolved is not None and resolved <= now:
            discount = value * arm.discount_pct / 100.0 if converted and went_out else 0.0
            outcomes.append(
                {
                    "decision_id": decision_id,
                    "store_id": store_id,
                    "converted": converted,
                    "order_id": f"sim-o-{i:05d}" if converted else None,
                    "revenue": value if converted else 0.0,
                    "discount_amount": discount,
                    "message_sent": went_out,
                    "message_cost": cost,
                    "resolved_at": resolved,
                }
            )
            if converted:
                cart.update(
                    status="converted",
                    converted_at=resolved,
                    order_id=f"sim-o-{i:05d}",
                    order_value=value,
                )

    with engine.begin() as conn:
        ids = {}
        for i, cart in cart_rows.items():
            ids[i] = conn.execute(sa.insert(cart_t).values(**cart).returning(cart_t.c.id)).scalar()
        for row_ in decisions:
            row_["cart_id"] = ids[row_["cart_id"]]
        conn.execute(sa.insert(decision_t), decisions)
        for table, rows in ((message_t, messages), (open_t, opens), (click_t, clicks)):
            if rows:
                conn.execute(sa.insert(table), rows)
        conn.execute(sa.insert(outcome_t), outcomes)
    return SimSeeded(
        store_id=store_id,
        store_name=SIM_STORE,
        experiment=EXPERIMENT,
        experiment_id=created["id"],
        carts=len(cart_rows),
        decisions=len(decisions),
        resolved=len(outcomes),
        holdout_decisions=sum(1 for d in decisions if d["policy"] == "holdout"),
        sent=len(messages),
    )
