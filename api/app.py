"""The HTTP API: events in, tracked links out.

``create_app(settings)`` builds the FastAPI app; ``nudge api`` serves it with uvicorn.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import dramatiq
import sqlalchemy as sa
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.engine import Engine

from api.errors import JSON, ApiError, describe_errors, summarize_errors
from api.experiments import experiments_router
from api.ingest import GroupIngestor
from api.providers import providers_router
from api.snippet import snippet_router
from api.storefront import read_body as read_limited
from api.tracking import tracking_router
from api.webhooks import webhooks_router
from senders import actors
from senders.broker import setup_broker
from settings import Settings
from store.db import get_engine
from store.events import Applied
from store.models import Click, Store
from store.schemas import BatchIn, BatchResult, EventIn, EventResult
from store.stores import hash_key

logger = logging.getLogger(__name__)
store_t: sa.Table = Store.__table__  # type: ignore[attr-defined]
click_t: sa.Table = Click.__table__  # type: ignore[attr-defined]


class _KeyCache:
    """API key hash → store id, remembered briefly so ingest does not look it up per event.

    Unknown keys are remembered too (for less time), so a client retrying with a wrong key
    costs one query per few seconds, not one per request.
    """

    def __init__(self, ttl: float = 30.0, miss_ttl: float = 3.0) -> None:
        self.ttl = ttl
        self.miss_ttl = miss_ttl
        self._entries: dict[str, tuple[str | None, float]] = {}

    def get(self, engine: Engine, key_hash: str) -> str | None:
        hit = self._entries.get(key_hash)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            return hit[0]
        with engine.connect() as conn:
            store_id = conn.execute(
                sa.select(store_t.c.id).where(store_t.c.api_key_hash == key_hash)
            ).scalar()
        if len(self._entries) > 10_000:  # bounded: random wrong keys cannot grow it forever
            self._entries.clear()
        self._entries[key_hash] = (store_id, now + (self.ttl if store_id else self.miss_ttl))
        return store_id


def create_app(settings: Settings, *, broker: dramatiq.Broker | None = None) -> FastAPI:
    """The API for ``settings``, queueing on ``broker`` (default: the one settings name)."""
    engine = get_engine(settings.sqlalchemy_url)
    if broker is None:
        setup_broker(settings)
    keys = _KeyCache()
    app = FastAPI(
        title="Nudge",
        version="0.1.0",
        summary="Abandoned-cart recovery that learns, and proves it against a holdout.",
    )

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> Response:
        return JSON(
            {"error": exc.code, "message": exc.detail, **exc.extra}, status_code=exc.status_code
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> Response:
        problems = describe_errors(list(exc.errors()))
        return JSON(
            {"error": "invalid_request", "message": summarize_errors(problems), "errors": problems},
            status_code=422,
        )

    async def store_id(request: Request) -> str:
        # Async on purpose: a sync dependency costs a thread hop per request, and the lookup
        # is a dictionary hit except once per key per TTL.
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(
                401, "unauthorized", "send the store's API key as 'Authorization: Bearer <key>'"
            )
        found = keys.get(engine, hash_key(key.strip()))
        if found is None:
            raise ApiError(401, "unauthorized", "unknown API key")
        return found

    async def read_body(request: Request, limit: int) -> bytes:
        body = await read_limited(request, limit)
        if not body:
            raise ApiError(400, "empty_body", "the request body is empty; send JSON")
        return body

    def parse(model: Any, body: bytes, prefix: str = "") -> Any:
        try:
            return model.model_validate_json(body)
        except ValidationError as exc:
            errors = list(exc.errors())
            if any(e.get("type") == "json_invalid" for e in errors):
                detail = next(e for e in errors if e.get("type") == "json_invalid")
                raise ApiError(
                    400, "malformed_json", f"body is not valid JSON: {detail.get('msg')}"
                ) from None
            problems = describe_errors(errors, prefix)
            raise ApiError(
                422, "invalid_event", summarize_errors(problems), errors=problems
            ) from None

    def after_commit(results: list[Applied]) -> None:
        """Queue the abandonment checks of a committed group: one message per due time."""
        now = datetime.now(UTC)
        wait = settings.scaled(settings.abandon_after_seconds)
        due: dict[int, list[int]] = {}
        for applied in results:
            for cart_id, activity in applied.checks.items():
                # Rounded to the second: carts idle since about the same time share a message.
                delay = max(0.0, wait - (now - activity).total_seconds())
                due.setdefault(int(delay * 1000) // 1000 * 1000, []).append(cart_id)
        for delay_ms, cart_ids in due.items():
            actors.schedule_checks(cart_ids, delay_ms)

    ingestor = GroupIngestor(engine, after_commit)

    @app.post(
        "/v1/events",
        status_code=202,
        response_model=EventResult,
        summary="Send one storefront event",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": EventIn.model_json_schema()}},
            }
        },
    )
    async def post_event(request: Request, store: str = Depends(store_id)) -> Any:
        event = parse(EventIn, await read_body(request, settings.max_event_bytes))
        duplicate = (await ingestor.submit(store, [event]))[0]
        return JSON({"accepted": True, "duplicate": duplicate}, status_code=202)

    @app.post(
        "/v1/events/batch",
        status_code=202,
        response_model=BatchResult,
        summary=f"Send up to {settings.max_batch_events} events at once",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": BatchIn.model_json_schema()}},
            }
        },
    )
    async def post_batch(request: Request, store: str = Depends(store_id)) -> Any:
        batch = parse(BatchIn, await read_body(request, settings.max_batch_bytes))
        if len(batch.events) > settings.max_batch_events:
            raise ApiError(
                413,
                "too_many_events",
                f"a batch holds at most {settings.max_batch_events} events, "
                f"not {len(batch.events)}",
            )
        duplicates = await ingestor.submit(store, batch.events)
        results = [{"accepted": True, "duplicate": d} for d in duplicates]
        return JSON(
            {
                "accepted": len(results) - sum(duplicates),
                "duplicates": sum(duplicates),
                "results": results,
            },
            status_code=202,
        )

    app.include_router(tracking_router(settings, engine))
    app.include_router(providers_router(settings, engine, store_id))
    app.include_router(experiments_router(engine, store_id, settings.message_costs()))
    app.include_router(webhooks_router(settings, engine, ingestor))
    app.include_router(snippet_router(settings, engine, ingestor))

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
