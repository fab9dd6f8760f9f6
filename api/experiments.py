"""Experiments over HTTP, for dashboards and scripts: the same lifecycle and report as the CLI.

Authenticated with the store's secret key, like ``/v1/events``; a store sees only its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine

from api.errors import ApiError
from experiments import lifecycle
from experiments.report import best_arm, report
from store.models import Experiment

experiment_t: sa.Table = Experiment.__table__  # type: ignore[attr-defined]


class ExperimentIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    arms: list[str] = Field(min_length=1, description="channel/delay/discount, e.g. email/60m/0%")
    mode: str = Field(default="bandit", pattern="^(bandit|ab)$")
    holdout_share: float = Field(default=0.10, ge=0, lt=0.5)
    attribution_window_days: float = Field(default=7.0, gt=0)
    touch: int | None = Field(default=None, ge=1)
    weights: dict[str, float] | None = None
    max_discount_pct: float | None = Field(default=None, ge=0, lt=100)
    max_touches: int = Field(default=3, ge=1, le=10)
    daily_sms_budget: int | None = Field(default=None, ge=0)
    margin_rate: float = Field(default=0.35, gt=0, le=1)


class PromoteIn(BaseModel):
    arm: str | None = None


def experiments_router(
    engine: Engine,
    store_id: Callable[..., Awaitable[str]],
    message_cost: Mapping[str, float] | None = None,
) -> APIRouter:
    """``message_cost``: what the senders record per message and channel, for new bandits."""
    router = APIRouter(prefix="/v1/experiments", tags=["experiments"])

    def _call(fn: Callable[[sa.Connection], Any]) -> Any:
        try:
            with engine.begin() as conn:
                return fn(conn)
        except lifecycle.ExperimentNotFound as exc:
            raise ApiError(404, "not_found", str(exc)) from None
        except lifecycle.ExperimentConflict as exc:
            raise ApiError(409, "conflict", str(exc)) from None
        except lifecycle.ExperimentError as exc:  # the request itself is wrong
            raise ApiError(422, "invalid_experiment", str(exc)) from None

    @router.get("", summary="The store's experiments")
    async def list_experiments(store: str = Depends(store_id)) -> list[dict[str, Any]]:
        def q(conn: sa.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                sa.select(experiment_t)
                .where(experiment_t.c.store_id == store)
                .order_by(experiment_t.c.created_at)
            ).all()
            return [_public(r._asdict()) for r in rows]

        return await run_in_threadpool(_call, q)

    @router.post("", status_code=201, summary="Create a draft experiment")
    async def create(body: ExperimentIn, store: str = Depends(store_id)) -> dict[str, Any]:
        spec = lifecycle.Spec(**body.model_dump(), message_cost=message_cost)
        row = await run_in_threadpool(
            _call,
            lambda conn: lifecycle.create(conn, store_id=store, spec=spec, now=_now()),
        )
        return _public(row)

    @router.patch(
        "/{name}", summary="Edit an experiment (a draft entirely; a started one: guardrails)"
    )
    async def edit(name: str, body: ExperimentIn, store: str = Depends(store_id)) -> dict[str, Any]:
        spec = lifecycle.Spec(**body.model_dump())
        row = await run_in_threadpool(
            _call,
            lambda conn: lifecycle.update(conn, store_id=store, name=name, spec=spec, now=_now()),
        )
        return _public(row)

    for action in ("start", "pause", "stop"):

        def make(action: str = action) -> Any:
            async def act(name: str, store: str = Depends(store_id)) -> dict[str, Any]:
                row = await run_in_threadpool(
                    _call,
                    lambda conn: lifecycle.transition(
                        conn, store_id=store, name=name, action=action, now=_now()
                    ),
                )
                return _public(row)

            return act

        router.post(f"/{{name}}/{action}", summary=f"{action.capitalize()} an experiment")(make())

    @router.post("/{name}/promote", summary="End it and make the winner the store's default")
    async def promote(
        name: str, body: PromoteIn | None = None, store: str = Depends(store_id)
    ) -> dict[str, Any]:
        def go(conn: sa.Connection) -> dict[str, Any]:
            arm = (body.arm if body else None) or best_arm(report(conn, store_id=store, name=name))
            if arm is None:
                raise lifecycle.ExperimentError("no outcomes yet to pick a winner from")
            return lifecycle.promote(conn, store_id=store, name=name, arm_key=arm, now=_now())

        return _public(await run_in_threadpool(_call, go))

    @router.get("/{name}/report", summary="Arms, lift vs holdout, SRM and ROI")
    async def get_report(name: str, store: str = Depends(store_id)) -> dict[str, Any]:
        return await run_in_threadpool(_call, lambda conn: report(conn, store_id=store, name=name))

    return router


def _now() -> datetime:
    return datetime.now(UTC)


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (v.isoformat() if isinstance(v, datetime) else v)
        for k, v in row.items()
        if k not in ("store_id", "seed")
    }
