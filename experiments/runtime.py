"""Experiments in production: which policy decides a store's touch, and how bandits learn.

Workers ask :class:`StorePolicies` for a store's policy. A running experiment decides the
touches it covers: customers in its persistent holdout (a stable hash of experiment and
customer, never adapted) get nothing; the others get the bandit's choice (or the A/B
weights'). Everything else follows the store's promoted default arm, or the common
1 h / 24 h / 72 h email schedule.

The bandit's posterior lives in the database (:class:`store.models.PolicyState`). Decisions
read a copy refreshed every few seconds; :func:`fold` folds new outcomes into it by
compare-and-swap, so any number of workers on any number of machines learn together and two
folding at once lose nothing.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from experiments.lifecycle import experiment_t, state_t, store_t
from optimizer import Arm, Decision, FixedSchedulePolicy, Policy, ThompsonPolicy
from store.db import read_only
from store.models import Decision as DecisionRow
from store.models import ExperimentStatus, Outcome

logger = logging.getLogger(__name__)
decision_t: sa.Table = DecisionRow.__table__  # type: ignore[attr-defined]
outcome_t: sa.Table = Outcome.__table__  # type: ignore[attr-defined]

#: Context keys that route a decision but are not features of the model.
_ROUTING = ("customer_key", "experiment", "holdout", "attribution_window_days")


def in_holdout(experiment_id: str, customer_key: str, share: float) -> bool:
    """A stable, uniform assignment: the same customer is always in (or out of) the holdout."""
    digest = hashlib.sha256(f"{experiment_id}:{customer_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def features(context: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in context.items() if k not in _ROUTING}


class ExperimentPolicy:
    """One running experiment as a :class:`optimizer.Policy`."""

    def __init__(
        self,
        row: Any,
        bandit: ThompsonPolicy | None,
        *,
        rng: np.random.Generator,
        sms_used: Callable[[datetime], int] | None = None,
    ) -> None:
        self.row = row
        # Guardrail: SMS (and KakaoTalk) touches per UTC day of the decisions' own clock.
        # ``sms_used(since)`` counts those already decided; the count is taken once per day
        # and kept up to date here, so a cached policy does not query per decision.
        budget = (row.guardrails or {}).get("daily_sms_budget")
        self.sms_budget = None if budget is None else int(budget)
        self._sms_used = sms_used
        self._sms_day: date | None = None
        self.sms_left = 0
        self.experiment_id: str = row.id
        self.bandit = bandit
        self.arms = [Arm.from_key(k) for k in row.arms]
        self.max_touches = int((row.guardrails or {}).get("max_touches") or 3)
        self._rng = rng
        self._lock = threading.Lock()

    def choose(self, context: Mapping[str, Any], *, now: datetime) -> Decision:
        key = str(context.get("customer_key", ""))
        routed = {
            **context,
            "experiment": self.experiment_id,
            # The experiment's own window decides which orders its decisions earn.
            "attribution_window_days": float(self.row.attribution_window_days),
        }
        if in_holdout(self.experiment_id, key, self.row.holdout_share):
            # Deterministic given the customer: probability 1, never adapted.
            return Decision(
                arm=Arm.holdout(),
                propensity=1.0,
                context={**routed, "holdout": True},
                decided_at=now,
            )
        routed["holdout"] = False
        with self._lock:  # a policy's random stream is not thread-safe
            if not self._sms_allowed(now):
                routed["channels"] = [
                    c for c in context.get("channels", ()) if c not in ("sms", "kakao")
                ]
            if self.bandit is not None:
                d = self.bandit.choose(features(routed), now=now)
                decision = Decision(d.arm, d.propensity, routed, now, d.id)
            else:
                decision = self._ab(routed, now)
            if self.sms_budget is not None and decision.arm.channel in ("sms", "kakao"):
                self.sms_left -= 1
            return decision

    def _sms_allowed(self, now: datetime) -> bool:
        """Whether the daily SMS budget (if any) leaves room on ``now``'s UTC day."""
        if self.sms_budget is None:
            return True
        day = now.astimezone(UTC).date()
        if day != self._sms_day:
            since = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
            used = self._sms_used(since) if self._sms_used is not None else 0
            self._sms_day, self.sms_left = day, self.sms_budget - used
        return self.sms_left > 0

    def _ab(self, context: dict[str, Any], now: datetime) -> Decision:
        channels = set(context.get("channels", ()))
        weights = self.row.weights or {a.key: 1.0 for a in self.arms if not a.is_holdout}
        feasible = [
            (a, float(weights.get(a.key, 0.0)))
            for a in self.arms
            if (a.is_holdout or a.channel in channels) and weights.get(a.key, 0.0) > 0
        ]
        if not feasible:
            return Decision(Arm.holdout(), 1.0, context, now)
        total = sum(w for _, w in feasible)
        i = int(self._rng.choice(len(feasible), p=[w / total for _, w in feasible]))
        arm, weight = feasible[i]
        return Decision(arm, weight / total, context, now)

    def record(self, decision: Decision, **_: Any) -> None:
        """Learning happens in the database (:func:`fold`), shared by every worker."""
        del decision


class DefaultArmPolicy:
    """After an experiment is promoted: its winner for touch 1, the schedule after that."""

    def __init__(self, arm_key: str) -> None:
        self.arm = Arm.from_key(arm_key)
        self.schedule = FixedSchedulePolicy()
        self.max_touches = 1 if self.arm.is_holdout else self.schedule.max_touches

    def choose(self, context: Mapping[str, Any], *, now: datetime) -> Decision:
        if int(context.get("touch", 1)) > 1:
            return self.schedule.choose(context, now=now)
        arm = self.arm
        if not arm.is_holdout and arm.channel not in context.get("channels", ()):
            arm = Arm.holdout()
        return Decision(arm, 1.0, dict(context), now)

    def record(self, decision: Decision, **_: Any) -> None:
        del decision


class StoreRouter:
    """A store's policy: experiments by touch, the default for the rest."""

    def __init__(self, experiments: Sequence[ExperimentPolicy], default: Policy) -> None:
        self.experiments = list(experiments)
        self.default = default
        every_touch = [e for e in self.experiments if e.row.touch is None]
        # An experiment over every touch owns the journey's length (its max_touches guardrail);
        # otherwise the longest of the default and the per-touch experiments.
        self.max_touches = (
            every_touch[0].max_touches
            if every_touch
            else max([default.max_touches, *(e.max_touches for e in self.experiments)])
        )

    def choose(self, context: Mapping[str, Any], *, now: datetime) -> Decision:
        touch = int(context.get("touch", 1))
        for e in self.experiments:
            if e.row.touch in (None, touch) and touch <= e.max_touches:
                return e.choose(context, now=now)
        if touch > self.default.max_touches:
            return Decision(Arm.holdout(), 1.0, dict(context), now)
        return self.default.choose(features(context), now=now)

    def record(self, decision: Decision, **_: Any) -> None:
        del decision


class StorePolicies:
    """``policy_for(store_id)`` for the workers, with a short-lived cache per store and a
    shared, version-checked cache of each bandit's posterior."""

    def __init__(self, engine: Engine, *, refresh_seconds: float = 5.0) -> None:
        self.engine = engine
        self.refresh_seconds = refresh_seconds
        self._stores: dict[str, tuple[float, StoreRouter]] = {}
        self._bandits: dict[str, tuple[int, ThompsonPolicy]] = {}
        self._lock = threading.Lock()
        # One stream per process, from fresh entropy: a seed stored with the experiment would
        # make every worker (and every reload) repeat the same draws, correlating the
        # randomisation that the propensities and the off-policy estimates rely on.
        self._rng = np.random.default_rng()

    def policy_for(self, store_id: str) -> Policy:
        now = time.monotonic()
        with self._lock:
            hit = self._stores.get(store_id)
            if hit is not None and now - hit[0] < self.refresh_seconds:
                return hit[1]
            router = self._load(store_id)
            self._stores[store_id] = (now, router)
            return router

    def _sms_counter(self, experiment_id: str) -> Callable[[datetime], int]:
        """Counts the experiment's SMS/KakaoTalk decisions since a time (for the budget)."""

        def used(since: datetime) -> int:
            with read_only(self.engine) as conn:
                return int(
                    conn.execute(
                        sa.select(sa.func.count()).where(
                            decision_t.c.experiment_id == experiment_id,
                            decision_t.c.channel.in_(["sms", "kakao"]),
                            decision_t.c.decided_at >= since,
                        )
                    ).scalar_one()
                )

        return used

    def _load(self, store_id: str) -> StoreRouter:
        # Read-only: workers call this while holding a write transaction of their own.
        with read_only(self.engine) as conn:
            rows = conn.execute(
                sa.select(experiment_t).where(
                    experiment_t.c.store_id == store_id,
                    experiment_t.c.status == ExperimentStatus.RUNNING,
                )
            ).all()
            default_arm = conn.execute(
                sa.select(store_t.c.default_arm).where(store_t.c.id == store_id)
            ).scalar()
            experiments = [
                ExperimentPolicy(
                    r, self._bandit(conn, r), rng=self._rng, sms_used=self._sms_counter(r.id)
                )
                for r in rows
            ]
        default: Policy = DefaultArmPolicy(default_arm) if default_arm else FixedSchedulePolicy()
        return StoreRouter(experiments, default)

    def _bandit(self, conn: sa.Connection, row: Any) -> ThompsonPolicy | None:
        if row.mode != "bandit":
            return None
        version = conn.execute(
            sa.select(state_t.c.version).where(state_t.c.experiment_id == row.id)
        ).scalar_one()
        cached = self._bandits.get(row.id)
        if cached is not None and cached[0] == version:
            return cached[1]
        state = conn.execute(
            sa.select(state_t.c.state).where(state_t.c.experiment_id == row.id)
        ).scalar_one()
        policy = ThompsonPolicy.from_state(state)
        policy.rng = self._rng  # see __init__: this process's own draws, not the stored ones
        self._bandits[row.id] = (version, policy)
        return policy


def fold(engine: Engine, experiment_id: str, *, limit: int = 5000, attempts: int = 8) -> int:
    """Fold the experiment's new outcomes into its shared posterior. Returns how many.

    Compare-and-swap on the state's version: if another worker wrote first, this one reads
    the new state and tries again, so every outcome is folded exactly once.
    """
    for _ in range(attempts):
        with engine.begin() as conn:
            row = conn.execute(
                sa.select(state_t).where(state_t.c.experiment_id == experiment_id)
            ).one()
            outcomes = conn.execute(
                sa.select(
                    outcome_t.c.id.label("outcome_id"),
                    outcome_t.c.converted,
                    outcome_t.c.revenue,
                    outcome_t.c.message_sent,
                    outcome_t.c.resolved_at,
                    decision_t.c.id,
                    decision_t.c.arm_key,
                    decision_t.c.propensity,
                    decision_t.c.context,
                    decision_t.c.decided_at,
                )
                .select_from(outcome_t.join(decision_t, decision_t.c.id == outcome_t.c.decision_id))
                .where(
                    decision_t.c.experiment_id == experiment_id,
                    outcome_t.c.id > row.last_outcome_id,
                )
                .order_by(outcome_t.c.id)
                .limit(limit)
            ).all()
            if not outcomes:
                return 0
            policy = ThompsonPolicy.from_state(row.state)
            for o in outcomes:
                decision = Decision(
                    arm=Arm.from_key(o.arm_key),
                    propensity=o.propensity,
                    context=features(o.context),
                    decided_at=o.decided_at,
                    id=o.id,
                )
                policy.record(
                    decision,
                    converted=o.converted,
                    order_value=float(o.revenue or 0.0),
                    message_sent=o.message_sent,
                    at=o.resolved_at,
                )
            policy.update()
            written = conn.execute(
                sa.update(state_t)
                .where(state_t.c.experiment_id == experiment_id, state_t.c.version == row.version)
                .values(
                    version=row.version + 1,
                    state=policy.state(),
                    last_outcome_id=outcomes[-1].outcome_id,
                    updated_at=outcomes[-1].resolved_at,
                )
            )
            if written.rowcount == 1:
                return len(outcomes)
        logger.info("Posterior of %s changed under us; folding again", experiment_id)
    raise RuntimeError(f"could not fold outcomes of {experiment_id} after {attempts} tries")


def running_bandits(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(experiment_t.c.id).where(
                    experiment_t.c.mode == "bandit",
                    experiment_t.c.status == ExperimentStatus.RUNNING,
                )
            ).scalars()
        )
