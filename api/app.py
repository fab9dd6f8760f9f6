"""The HTTP API: events in, tracked links out.

``create_app(settings)`` builds the FastAPI app; ``nudge api`` serves it with uvicorn.
"""

from __future__ import annotations

import logging

import dramatiq
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.types import Receive, Scope, Send

from api.errors import JSON, ApiError, describe_errors, summarize_errors
from api.events import EventEndpoints, StoreKeys
from api.experiments import experiments_router
from api.ingest import GroupIngestor
from api.providers import providers_router
from api.snippet import snippet_router
from api.tracking import tracking_router
from api.webhooks import webhooks_router
from senders.broker import setup_broker
from settings import Settings
from store.db import get_engine
from store.schemas import BatchIn, BatchResult, EventIn, EventResult

logger = logging.getLogger(__name__)

# What the event endpoints refuse, as {"error": code, "message": what is wrong, ...}.
_REFUSALS: dict[int | str, dict[str, object]] = {
    400: {"description": "empty body, or not JSON"},
    401: {"description": "missing or unknown API key"},
    413: {"description": "body over the size limit, or a batch over the event limit"},
    422: {"description": "an event is invalid; the message names the field and the problem"},
}


class NudgeAPI(FastAPI):
    """FastAPI, with the event endpoints served ahead of its middleware (see api.events)."""

    events: EventEndpoints | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        events = self.events
        if (
            events is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in events.paths
        ):
            await events(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class _Delegated(Response):
    """A response that lets the event endpoints answer on the request's own ASGI channel."""

    def __init__(self, events: EventEndpoints) -> None:
        super().__init__()
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.events(scope, receive, send)


def create_app(settings: Settings, *, broker: dramatiq.Broker | None = None) -> NudgeAPI:
    """The API for ``settings``, queueing on ``broker`` (default: the one settings name)."""
    engine = get_engine(settings.sqlalchemy_url)
    if broker is None:
        setup_broker(settings)
    keys = StoreKeys(engine)
    app = NudgeAPI(
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
        return await keys.store_for(request.headers.get("authorization", ""))

    ingestor = GroupIngestor(engine)
    app.events = events = EventEndpoints(settings, keys, ingestor)

    # Documented here; served by app.events, ahead of FastAPI (these would answer the same).
    async def delegate(_request: Request) -> Response:
        return _Delegated(events)

    accepted = (
        "Accepted: stored once, applied to carts and customers moments later by the worker. "
        "A repeated event_id is answered duplicate and not applied again."
    )
    for name, path, model, result, summary in (
        ("post_event", "/v1/events", EventIn, EventResult, "Send one storefront event"),
        (
            "post_batch",
            "/v1/events/batch",
            BatchIn,
            BatchResult,
            f"Send up to {settings.max_batch_events} events at once; one bad event refuses all",
        ),
    ):
        app.add_api_route(
            path,
            delegate,
            name=name,
            methods=["POST"],
            status_code=202,
            response_model=result,
            summary=summary,
            response_description=accepted,
            responses=_REFUSALS,
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": model.model_json_schema()}},
                }
            },
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
