"""Experiments as a store runs them: create, start, pause, stop, promote the winner.

``draft → running ⇄ paused → stopped``; promoting stops the experiment and makes its best
arm the store's default. Only one experiment runs per store and touch.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from optimizer import Arm, Economics, ThompsonPolicy
from store.models import Experiment, ExperimentStatus, PolicyState, Store

experiment_t: sa.Table = Experiment.__table__  # type: ignore[attr-defined]
state_t: sa.Table = PolicyState.__table__  # type: ignore[attr-defined]
store_t: sa.Table = Store.__table__  # type: ignore[attr-defined]

MODES = ("bandit", "ab")
_NEXT = {
    "start": ({ExperimentStatus.DRAFT, ExperimentStatus.PAUSED}, ExperimentStatus.RUNNING),
    "pause": ({ExperimentStatus.RUNNING}, ExperimentStatus.PAUSED),
    "stop": (
        {ExperimentStatus.DRAFT, ExperimentStatus.RUNNING, ExperimentStatus.PAUSED},
        ExperimentStatus.STOPPED,
    ),
}


class ExperimentError(ValueError):
    """An experiment request that cannot be carried out; the message says why."""


class ExperimentConflict(ExperimentError):
    """The request clashes with the experiment's (or the store's) current state."""


class ExperimentNotFound(ExperimentError):
    """No such experiment in this store."""


@dataclass(frozen=True)
class Spec:
    """What ``nudge experiment create`` (or the API, or the dashboard) asks for."""

    name: str
    arms: Sequence[str]
    mode: str = "bandit"
    holdout_share: float = 0.10
    attribution_window_days: float = 7.0
    touch: int | None = None
    weights: dict[str, float] | None = None
    max_discount_pct: float | None = None
    max_touches: int = 3
    daily_sms_budget: int | None = None
    margin_rate: float = 0.35
    seed: int | None = None
    # What a message costs per channel, as the senders record it (Settings.message_costs());
    # None: optimizer.Economics' defaults.
    message_cost: Mapping[str, float] | None = None


def _validate(spec: Spec) -> list[Arm]:
    if not spec.name.strip():
        raise ExperimentError("an experiment needs a name")
    if spec.mode not in MODES:
        raise ExperimentError(f"mode must be one of {MODES}, not {spec.mode!r}")
    if not 0.0 <= spec.holdout_share < 0.5:
        raise ExperimentError(f"holdout share must be in [0, 0.5), not {spec.holdout_share}")
    if spec.attribution_window_days <= 0:
        raise ExperimentError("the attribution window must be positive")
    if spec.touch is not None and spec.touch < 1:
        raise ExperimentError(f"touch must be 1 or more, not {spec.touch}")
    try:
        arms = [Arm.from_key(k) for k in spec.arms]
    except ValueError as exc:
        raise ExperimentError(str(exc)) from None
    if Arm.holdout() not in arms:
        arms.append(Arm.holdout())  # "send nothing" is always an arm
    if len(arms) < 2:
        raise ExperimentError("an experiment needs at least one arm besides sending nothing")
    if len(set(arms)) != len(arms):
        raise ExperimentError("arms must be unique")
    if spec.max_discount_pct is not None:
        over = [a.key for a in arms if a.discount_pct > spec.max_discount_pct]
        if over:
            raise ExperimentError(
                f"arms {over} offer more than the {spec.max_discount_pct:g}% discount guardrail"
            )
    if spec.mode == "ab":
        weights = spec.weights or {a.key: 1.0 for a in arms if not a.is_holdout}
        unknown = set(weights) - {a.key for a in arms}
        if unknown:
            raise ExperimentError(f"weights name arms that are not in the experiment: {unknown}")
        if any(w < 0 for w in weights.values()) or not any(weights.values()):
            raise ExperimentError("weights must be >= 0 and not all zero")
    return arms


def create(conn: sa.Connection, *, store_id: str, spec: Spec, now: datetime) -> dict[str, Any]:
    """Create a draft experiment; for a bandit, its prior posterior too."""
    arms = _validate(spec)
    exists = conn.execute(
        sa.select(experiment_t.c.id).where(
            experiment_t.c.store_id == store_id, experiment_t.c.name == spec.name
        )
    ).first()
    if exists is not None:
        raise ExperimentConflict(f"this store already has an experiment named {spec.name!r}")
    economics = (
        Economics(margin_rate=spec.margin_rate, message_cost=dict(spec.message_cost))
        if spec.message_cost is not None
        else Economics(margin_rate=spec.margin_rate)
    )
    row = {
        "id": secrets.token_hex(16),
        "store_id": store_id,
        "name": spec.name,
        "mode": spec.mode,
        "status": ExperimentStatus.DRAFT,
        "arms": [a.key for a in arms],
        "weights": dict(spec.weights or {}) if spec.mode == "ab" else {},
        "holdout_share": spec.holdout_share,
        "attribution_window_days": spec.attribution_window_days,
        "guardrails": {
            "max_discount_pct": spec.max_discount_pct,
            "max_touches": spec.max_touches,
            "daily_sms_budget": spec.daily_sms_budget,
        },
        "economics": {
            "margin_rate": economics.margin_rate,
            "message_cost": dict(economics.message_cost),
        },
        "touch": spec.touch,
        "seed": spec.seed if spec.seed is not None else secrets.randbelow(2**31),
        "created_at": now,
    }
    conn.execute(sa.insert(experiment_t).values(**row))
    if spec.mode == "bandit":
        policy = bandit_policy(row)
        conn.execute(
            sa.insert(state_t).values(
                experiment_id=row["id"],
                version=0,
                state=policy.state(),
                last_outcome_id=0,
                updated_at=now,
            )
        )
    return row


def spec_of(row: Any) -> Spec:
    """The :class:`Spec` an experiment row was created from (to edit it)."""
    guardrails = row.guardrails or {}
    economics = row.economics or {}
    return Spec(
        name=row.name,
        arms=[a for a in row.arms if a != Arm.holdout().key],
        mode=row.mode,
        holdout_share=float(row.holdout_share),
        attribution_window_days=float(row.attribution_window_days),
        touch=row.touch,
        weights=dict(row.weights) if row.weights else None,
        max_discount_pct=guardrails.get("max_discount_pct"),
        max_touches=int(guardrails.get("max_touches") or 3),
        daily_sms_budget=guardrails.get("daily_sms_budget"),
        margin_rate=float(economics.get("margin_rate", 0.35)),
        seed=int(row.seed),
    )


#: What may change once an experiment has run: its guardrails only. Arms, split, holdout and
#: window define what is being measured; changing them mid-flight mixes two experiments.
GUARDRAILS = ("max_discount_pct", "max_touches", "daily_sms_budget")


def update(
    conn: sa.Connection, *, store_id: str, name: str, spec: Spec, now: datetime
) -> dict[str, Any]:
    """Edit an experiment: everything while it is a draft, only its guardrails once it has
    started (running or paused); a stopped one is final.

    The same validation as :func:`create`. A draft bandit's prior is re-made for its new arms.
    """
    row = get(conn, store_id=store_id, name=name)
    if row.status == ExperimentStatus.STOPPED:
        raise ExperimentConflict(f"experiment {name!r} is stopped: create a new one instead")
    if spec.seed is None:
        spec = replace(spec, seed=int(row.seed))
    arms = _validate(spec)
    guardrails = {
        "max_discount_pct": spec.max_discount_pct,
        "max_touches": spec.max_touches,
        "daily_sms_budget": spec.daily_sms_budget,
    }
    if row.status != ExperimentStatus.DRAFT:
        before = spec_of(row)
        changed = [
            f.name
            for f in fields(Spec)
            if f.name not in GUARDRAILS
            and f.name != "seed"
            and _normal(getattr(spec, f.name)) != _normal(getattr(before, f.name))
        ]
        if changed:
            raise ExperimentConflict(
                f"experiment {name!r} is {row.status}: only its guardrails can change, not "
                f"{', '.join(changed)} (stop it and create a new experiment for that)"
            )
        conn.execute(
            sa.update(experiment_t).where(experiment_t.c.id == row.id).values(guardrails=guardrails)
        )
        return {**row._asdict(), "guardrails": guardrails}
    if spec.name != name:
        clash = conn.execute(
            sa.select(experiment_t.c.id).where(
                experiment_t.c.store_id == store_id, experiment_t.c.name == spec.name
            )
        ).first()
        if clash is not None:
            raise ExperimentConflict(f"this store already has an experiment named {spec.name!r}")
    economics = Economics(margin_rate=spec.margin_rate)
    values: dict[str, Any] = {
        "name": spec.name,
        "mode": spec.mode,
        "arms": [a.key for a in arms],
        "weights": dict(spec.weights or {}) if spec.mode == "ab" else {},
        "holdout_share": spec.holdout_share,
        "attribution_window_days": spec.attribution_window_days,
        "guardrails": guardrails,
        "economics": {
            "margin_rate": economics.margin_rate,
            "message_cost": dict(economics.message_cost),
        },
        "touch": spec.touch,
        "seed": spec.seed,
    }
    conn.execute(sa.update(experiment_t).where(experiment_t.c.id == row.id).values(**values))
    # A draft has learned nothing yet: its prior is re-made for the arms it has now.
    conn.execute(sa.delete(state_t).where(state_t.c.experiment_id == row.id))
    updated = {**row._asdict(), **values}
    if spec.mode == "bandit":
        conn.execute(
            sa.insert(state_t).values(
                experiment_id=row.id,
                version=0,
                state=bandit_policy(updated).state(),
                last_outcome_id=0,
                updated_at=now,
            )
        )
    return updated


def _normal(value: Any) -> Any:
    """Compare specs as stored: arms as a set without send-nothing (always an arm), numbers
    as floats."""
    if isinstance(value, list | tuple):
        return tuple(sorted({str(v) for v in value} - {Arm.holdout().key}))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def list_experiments(conn: sa.Connection, *, store_id: str) -> list[Any]:
    """The store's experiments, newest first."""
    return list(
        conn.execute(
            sa.select(experiment_t)
            .where(experiment_t.c.store_id == store_id)
            .order_by(experiment_t.c.created_at.desc(), experiment_t.c.name)
        ).all()
    )


def bandit_policy(experiment: Mapping[str, Any]) -> ThompsonPolicy:
    """A fresh bandit for an experiment row (its prior; the learned state lives in the DB)."""
    economics = experiment.get("economics") or {}
    guardrails = experiment.get("guardrails") or {}
    return ThompsonPolicy(
        [Arm.from_key(k) for k in experiment["arms"]],
        Economics(
            margin_rate=economics.get("margin_rate", 0.35),
            message_cost=economics.get("message_cost") or Economics().message_cost,
        ),
        seed=int(experiment["seed"]),
        max_touches=int(guardrails.get("max_touches") or 3),
        # The experiment's persistent holdout does the measuring; the bandit's own
        # send-nothing arm competes like any other (and is learned like any other).
        holdout_share=0.0,
    )


def transition(
    conn: sa.Connection, *, store_id: str, name: str, action: str, now: datetime
) -> dict[str, Any]:
    """start / pause / stop an experiment, checking where it may go from where it is."""
    row = get(conn, store_id=store_id, name=name)
    allowed, target = _NEXT[action]
    if row.status not in allowed:
        raise ExperimentConflict(f"cannot {action} experiment {name!r}: it is {row.status}")
    if target == ExperimentStatus.RUNNING:
        clash = conn.execute(
            sa.select(experiment_t.c.name).where(
                experiment_t.c.store_id == store_id,
                experiment_t.c.status == ExperimentStatus.RUNNING,
                experiment_t.c.id != row.id,
                # An experiment on every touch clashes with any other on this store.
                sa.true()
                if row.touch is None
                else sa.or_(experiment_t.c.touch.is_(None), experiment_t.c.touch == row.touch),
            )
        ).first()
        if clash is not None:
            raise ExperimentConflict(
                f"experiment {clash.name!r} is already running for this store and touch"
            )
    values: dict[str, Any] = {"status": target}
    if target == ExperimentStatus.RUNNING and row.started_at is None:
        values["started_at"] = now
    if target == ExperimentStatus.STOPPED:
        values["stopped_at"] = now
    conn.execute(sa.update(experiment_t).where(experiment_t.c.id == row.id).values(**values))
    return {**row._asdict(), **values}


def promote(
    conn: sa.Connection, *, store_id: str, name: str, arm_key: str, now: datetime
) -> dict[str, Any]:
    """Stop the experiment and make ``arm_key`` (its winner) the store's default."""
    row = get(conn, store_id=store_id, name=name)
    if arm_key not in row.arms:
        raise ExperimentError(f"{arm_key!r} is not an arm of experiment {name!r}")
    if row.status == ExperimentStatus.STOPPED and row.winner:
        raise ExperimentConflict(f"experiment {name!r} was promoted already ({row.winner})")
    conn.execute(
        sa.update(experiment_t)
        .where(experiment_t.c.id == row.id)
        .values(status=ExperimentStatus.STOPPED, stopped_at=now, winner=arm_key)
    )
    conn.execute(sa.update(store_t).where(store_t.c.id == store_id).values(default_arm=arm_key))
    return {**row._asdict(), "status": ExperimentStatus.STOPPED, "winner": arm_key}


def get(conn: sa.Connection, *, store_id: str, name: str) -> Any:
    """The store's experiment row named ``name``; :class:`ExperimentNotFound` if none."""
    row = conn.execute(
        sa.select(experiment_t).where(
            experiment_t.c.store_id == store_id, experiment_t.c.name == name
        )
    ).first()
    if row is None:
        raise ExperimentNotFound(f"no experiment named {name!r} in this store")
    return row
