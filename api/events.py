"""The event endpoints, ``POST /v1/events`` and ``POST /v1/events/batch``, as plain ASGI.

They carry nearly all of the API's traffic, so they skip what the rest of the API goes
through: FastAPI's middleware stack, request objects and dependency solving cost more per
request than validating and storing an event. :class:`EventEndpoints` reads the scope and
the body itself, answers errors in the API's format (``{"error", "message", ...}``), and
hands valid events to the :class:`api.ingest.GroupIngestor`. ``api.app`` routes the two
paths here before FastAPI and documents them at ``/docs`` with the same handlers.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa
from pydantic import BaseModel, ValidationError
from sqlalchemy.engine import Engine
from starlette.types import Receive, Scope, Send

from api.errors import ApiError, describe_errors, refuse_nul, summarize_errors
from api.ingest import GroupIngestor
from settings import Settings
from store.db import read_only
from store.models import Store
from store.schemas import BatchIn, EventIn
from store.stores import hash_key

store_t: sa.Table = Store.__table__  # type: ignore[attr-defined]

_ACCEPTED = b'{"accepted":true,"duplicate":false}'
_DUPLICATE = b'{"accepted":true,"duplicate":true}'
_JSON = (b"content-type", b"application/json")


class StoreKeys:
    """Which store an ``Authorization: Bearer <key>`` header speaks for.

    Key hash → store id is remembered briefly, so ingest does not look it up per request.
    Unknown keys are remembered too (for less time), so a client retrying with a wrong key
    costs one query per few seconds, not one per request. The query runs in a thread: a
    database waiting on another writer must not stall the event loop.
    """

    def __init__(self, engine: Engine, ttl: float = 30.0, miss_ttl: float = 3.0) -> None:
        self.engine = engine
        self.ttl = ttl
        self.miss_ttl = miss_ttl
        self._entries: dict[str, tuple[str | None, float]] = {}

    async def store_for(self, header: str) -> str:
        """The store id for an Authorization header; :class:`ApiError` 401 otherwise."""
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError(
                401, "unauthorized", "send the store's API key as 'Authorization: Bearer <key>'"
            )
        key_hash = hash_key(key)
        hit = self._entries.get(key_hash)
        if hit is not None and hit[1] > time.monotonic():
            found = hit[0]
        else:
            found = await asyncio.to_thread(self._lookup, key_hash)
            if len(self._entries) > 10_000:  # bounded: random wrong keys cannot grow it
                self._entries.clear()
            expires = time.monotonic() + (self.ttl if found else self.miss_ttl)
            self._entries[key_hash] = (found, expires)
        if found is None:
            raise ApiError(401, "unauthorized", "unknown API key")
        return found

    def _lookup(self, key_hash: str) -> str | None:
        with read_only(self.engine) as conn:
            return conn.execute(
                sa.select(store_t.c.id).where(store_t.c.api_key_hash == key_hash)
            ).scalar()


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], body: bytes) -> M:
    """``body`` validated as ``model``; :class:`ApiError` 400/422 naming what is wrong."""
    refuse_nul(body)
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = list(exc.errors())
        invalid_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
        if invalid_json is not None:
            raise ApiError(
                400, "malformed_json", f"body is not valid JSON: {invalid_json.get('msg')}"
            ) from None
        problems = describe_errors(errors)
        raise ApiError(422, "invalid_event", summarize_errors(problems), errors=problems) from None


class EventEndpoints:
    """The ASGI app serving ``POST /v1/events`` and ``POST /v1/events/batch``."""

    def __init__(self, settings: Settings, keys: StoreKeys, ingestor: GroupIngestor) -> None:
        self.settings = settings
        self.keys = keys
        self.ingestor = ingestor
        self.paths = {"/v1/events": self._single, "/v1/events/batch": self._batch}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.paths[scope["path"]]
        authorization, length = "", None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-length":
                length = value
        try:
            store = await self.keys.store_for(authorization)
            status, body = await handler(store, length, receive)
        except ApiError as exc:
            status = exc.status_code
            body = orjson.dumps({"error": exc.code, "message": exc.detail, **exc.extra})
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [_JSON, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _single(
        self, store: str, length: bytes | None, receive: Receive
    ) -> tuple[int, bytes]:
        body = await _read(receive, length, self.settings.max_event_bytes)
        event = parse(EventIn, body)
        duplicate = (await self.ingestor.submit(store, [event]))[0]
        return 202, _DUPLICATE if duplicate else _ACCEPTED

    async def _batch(self, store: str, length: bytes | None, receive: Receive) -> tuple[int, bytes]:
        body = await _read(receive, length, self.settings.max_batch_bytes)
        events = parse(BatchIn, body).events
        limit = self.settings.max_batch_events
        if len(events) > limit:
            raise ApiError(
                413, "too_many_events", f"a batch holds at most {limit} events, not {len(events)}"
            )
        duplicates = await self.ingestor.submit(store, events)
        answer: dict[str, Any] = {
            "accepted": len(duplicates) - sum(duplicates),
            "duplicates": sum(duplicates),
            "results": [{"accepted": True, "duplicate": d} for d in duplicates],
        }
        return 202, orjson.dumps(answer)


async def _read(receive: Receive, length: bytes | None, limit: int) -> bytes:
    """The request body, refused over ``limit`` bytes (before reading it when declared)."""
    if length is not None and length.isdigit() and int(length) > limit:
        raise ApiError(413, "too_large", f"body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "disconnected", "the client went away before the body arrived")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"body over {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if not body:
        raise ApiError(400, "empty_body", "the request body is empty; send JSON")
    return body
