"""The HTTP API: events in, tracked links out.

``create_app(settings)`` builds the FastAPI app; ``nudge api`` serves it with uvicorn.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import dramatiq
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from starlette.routing import Route

from api.errors import JSON, ApiError, describe_errors, summarize_errors
from api.experiments import experiments_router
from api.ingest import GroupIngestor
from api.providers import providers_router
from api.snippet import snippet_router
from api.storefront import read_body as read_limited
from api.tracking import tracking_router
from api.webhooks import webhooks_router
from senders.broker import setup_broker
from settings import Settings
from store.db import get_engine, read_only
from store.models import Click, Store
from store.schemas import BatchIn, BatchResult, EventIn, EventResult
from store.stores import hash_key

logger = logging.getLogger(__name__)
_JSON_TYPE = "application/json"
_ACCEPTED = b'{"accepted":true,"duplicate":false}'
_DUPLICATE = b'{"accepted":true,"duplicate":true}'
store_t: sa.Table = Store.__table__  # type: ignore[attr-defined]
click_t: sa.Table = Click.__table__  # type: ignore[attr-defined]


class _KeyCache:
    """API key hash → store id, remembered briefly so ingest does not look it up per event.

    Unknown keys are remembered too (for less time), so a client retrying with a wrong key
    costs one query per few seconds, not one per request. The query runs in a thread: a
    database waiting on another writer must not stall the event loop.
    """

    def __init__(self, engine: Engine, ttl: float = 30.0, miss_ttl: float = 3.0) -> None:
        self.engine = engine
        self.ttl = ttl
        self.miss_ttl = miss_ttl
        self._entries: dict[str, tuple[str | None, float]] = {}

    async def get(self, key_hash: str) -> str | None:
        hit = self._entries.get(key_hash)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        store_id = await asyncio.to_thread(self._lookup, key_hash)
        if len(self._entries) > 10_000:  # bounded: random wrong keys cannot grow it forever
            self._entries.clear()
        expires = time.monotonic() + (self.ttl if store_id else self.miss_ttl)
        self._entries[key_hash] = (store_id, expires)
        return store_id

    def _lookup(self, key_hash: str) -> str | None:
        with read_only(self.engine) as conn:
            return conn.execute(
                sa.select(store_t.c.id).where(store_t.c.api_key_hash == key_hash)
            ).scalar()


def create_app(settings: Settings, *, broker: dramatiq.Broker | None = None) -> FastAPI:
    """The API for ``settings``, queueing on ``broker`` (default: the one settings name)."""
    engine = get_engine(settings.sqlalchemy_url)
    if broker is None:
        setup_broker(settings)
    keys = _KeyCache(engine)
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
        found = await keys.get(hash_key(key.strip()))
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

    ingestor = GroupIngestor(engine)

    # The two event endpoints take most of the traffic, so they are plain Starlette routes:
    # FastAPI's per-request machinery (dependency solving, response models) cost more than
    # the rest of accepting an event. They are placed first, so they serve the requests;
    # FastAPI routes to the same functions sit behind them only to document them at /docs.
    async def post_event(request: Request) -> Response:
        store = await store_id(request)
        event = parse(EventIn, await read_body(request, settings.max_event_bytes))
        duplicate = (await ingestor.submit(store, [event]))[0]
        return Response(_DUPLICATE if duplicate else _ACCEPTED, 202, media_type=_JSON_TYPE)

    async def post_batch(request: Request) -> Response:
        store = await store_id(request)
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

    app.router.routes[:0] = [
        Route("/v1/events", post_event, methods=["POST"]),
        Route("/v1/events/batch", post_batch, methods=["POST"]),
    ]
    accepted = (
        "Accepted: stored once, applied to carts and customers moments later by the worker. "
        "A repeated event_id is answered duplicate and not applied again."
    )
    app.add_api_route(
        "/v1/events",
        post_event,
        methods=["POST"],
        status_code=202,
        response_model=EventResult,
        summary="Send one storefront event",
        response_description=accepted,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": EventIn.model_json_schema()}},
            }
        },
    )
    app.add_api_route(
        "/v1/events/batch",
        post_batch,
        methods=["POST"],
        status_code=202,
        response_model=BatchResult,
        summary=f"Send up to {settings.max_batch_events} events at once",
        response_description=accepted + " One bad event refuses the whole batch.",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": BatchIn.model_json_schema()}},
            }
        },
    )

    app.include_router(tracking_router(settings, engine))
    app.include_router(providers_router(settings, engine, store_id))
    app.include_router(experiments_router(engine, store_id))
    app.include_router(webhooks_router(settings, engine, ingestor))
    app.include_router(snippet_router(settings, engine, ingestor))

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
