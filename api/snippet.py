"""The one-line JS snippet: ``GET /v1/snippet.js`` and the endpoint it posts to.

The snippet authenticates with the store's **publishable** key (``pk_…``), which is public by
design, so what it can do is narrow:

* only ``cart.updated``, ``checkout.started`` and ``contact.captured`` — an order from a
  browser is refused, or anyone could fake recoveries; orders come from the platform's
  webhook or the secret-key API;
* only from the store's allowed origins (the ``Origin`` header, which browsers set and page
  scripts cannot change), with CORS headers for those origins alone;
* at most ``burst`` requests at once and ``rate`` a second afterwards per key and client
  address (a token bucket in this process: with N API replicas the limit is N times looser);
* event ids are namespaced (``web:…``) so a page cannot claim an id the shop's backend or a
  webhook will use, and times are clamped to the server's clock, so a browser whose clock
  runs ahead cannot freeze a cart.

``navigator.sendBeacon`` cannot set headers, so the key travels in the body (or the query
string) and the body may be ``text/plain`` (which also spares the CORS preflight).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy.engine import Engine

from api import storefront as sf
from api.errors import JSON, ApiError
from api.ingest import GroupIngestor
from settings import Settings
from store.models import Store
from store.stores import normalize_origin

logger = logging.getLogger(__name__)
store_t: sa.Table = Store.__table__  # type: ignore[attr-defined]

SNIPPET_JS = Path(__file__).parent / "static" / "snippet.js"
BROWSER_TYPES = frozenset({"cart.updated", "checkout.started", "contact.captured"})
#: Most events in one snippet request, and its largest body (a beacon carries ~64 KB).
MAX_EVENTS = 50
MAX_BYTES = 64 * 1024
#: Browser clocks are not trusted further back than this.
MAX_AGE = timedelta(hours=24)


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Token buckets per key: ``burst`` requests at once, then ``rate`` per second."""

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def take(self, key: tuple[str, str]) -> float:
        """0 if the request may go ahead, else the seconds until it could."""
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                # Full buckets carry no state worth keeping; dropping them bounds the memory.
                self._prune(now)
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _prune(self, now: float) -> None:
        full = [
            k for k, b in self._buckets.items() if b.tokens + (now - b.at) * self.rate >= self.burst
        ]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self.max_keys:
            self._buckets.clear()


@dataclass(frozen=True)
class _Keyed:
    store_id: str
    origins: frozenset[str]


class _PublishableKeys:
    """Publishable key → store and origins, remembered briefly (misses for less long)."""

    def __init__(self, engine: Engine, ttl: float = 30.0, miss_ttl: float = 3.0) -> None:
        self.engine = engine
        self.ttl = ttl
        self.miss_ttl = miss_ttl
        self._entries: dict[str, tuple[_Keyed | None, float]] = {}

    def get(self, key: str) -> _Keyed | None:
        now = time.monotonic()
        hit = self._entries.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(store_t.c.id, store_t.c.allowed_origins).where(
                    store_t.c.publishable_key == key
                )
            ).first()
        found = None if row is None else _Keyed(row.id, frozenset(row.allowed_origins or ()))
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[key] = (found, now + (self.ttl if found else self.miss_ttl))
        return found


def snippet_router(
    settings: Settings,
    engine: Engine,
    ingestor: GroupIngestor,
    *,
    rate: float = 0.5,
    burst: int = 30,
) -> APIRouter:
    """The snippet's routes. ``rate``/``burst``: requests per second and at once, per key and
    client address (a shopper's page sends a request every few cart changes)."""
    del settings
    router = APIRouter(tags=["snippet"])
    keys = _PublishableKeys(engine)
    limiter = RateLimiter(rate, burst)
    script = SNIPPET_JS.read_bytes()

    def cors(origin: str) -> dict[str, str]:
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type",
            "Access-Control-Max-Age": "600",
            "Vary": "Origin",
        }

    async def authorize(request: Request, key: str | None) -> tuple[_Keyed, str]:
        """The store of ``key`` and the request's allowed origin; raises 401/403 otherwise."""
        if not key or not key.startswith("pk_") or len(key) > 64:
            raise ApiError(401, "unauthorized", "send the store's publishable key (pk_…) as 'key'")
        keyed = await run_in_threadpool(keys.get, key)
        if keyed is None:
            raise ApiError(401, "unauthorized", "unknown publishable key")
        origin = request.headers.get("origin")
        try:
            allowed = origin is not None and normalize_origin(origin) in keyed.origins
        except ValueError:
            allowed = False
        if not allowed:
            raise ApiError(
                403,
                "origin_not_allowed",
                f"origin {origin!r} may not use this key; add it with "
                "'nudge store publishable-key NAME --origin ORIGIN'",
            )
        assert origin is not None
        return keyed, origin

    @router.get("/v1/snippet.js", include_in_schema=False)
    async def snippet_js() -> Response:
        return Response(
            script,
            media_type="application/javascript; charset=utf-8",
            headers={"Cache-Control": "public, max-age=300"},
        )

    @router.options("/v1/snippet/events", include_in_schema=False)
    async def preflight(request: Request, key: str | None = None) -> Response:
        # The snippet posts text/plain (no preflight); this serves pages that post JSON,
        # with the key in the query string since a preflight has no body.
        _, origin = await authorize(request, key)
        return Response(status_code=204, headers=cors(origin))

    @router.post("/v1/snippet/events", status_code=202, summary="Events from the JS snippet")
    async def snippet_events(request: Request, key: str | None = None) -> Response:
        body = await sf.read_body(request, MAX_BYTES)
        payload = sf.parse_json(body)
        if not isinstance(payload, dict):
            raise ApiError(400, "invalid_request", 'send {"key": "pk_…", "events": [...]}')
        keyed, origin = await authorize(request, key or sf.text(payload.get("key"), 100))
        client = request.client.host if request.client else "unknown"
        wait = limiter.take((keyed.store_id, client))
        if wait > 0:
            return sf.error(
                429,
                "rate_limited",
                "too many requests from this browser; retry later",
                headers={**cors(origin), "Retry-After": str(max(1, int(wait + 0.999)))},
            )
        try:
            events = _events(payload.get("events"), keyed.origins)
        except ApiError as exc:
            return sf.error(
                exc.status_code, exc.code, str(exc.detail), headers=cors(origin), **exc.extra
            )
        duplicates = await ingestor.submit(keyed.store_id, events)
        return JSON(
            {"accepted": len(events) - sum(duplicates), "duplicates": sum(duplicates)},
            status_code=202,
            headers=cors(origin),
        )

    return router


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    try:
        return normalize_origin(f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}")
    except ValueError:
        return None


def _events(raw: Any, origins: frozenset[str]) -> list[Any]:
    if not isinstance(raw, list) or not raw:
        raise ApiError(422, "invalid_event", "events: a list of 1 or more events")
    if len(raw) > MAX_EVENTS:
        raise ApiError(413, "too_many_events", f"at most {MAX_EVENTS} events per request")
    mapped: list[dict[str, Any]] = []
    for i, event in enumerate(raw):
        if not isinstance(event, dict):
            raise ApiError(422, "invalid_event", f"events.{i}: an event is a JSON object")
        if event.get("type") not in BROWSER_TYPES:
            raise ApiError(
                403,
                "event_type_not_allowed",
                f"events.{i}.type: a browser may send only "
                f"{', '.join(sorted(BROWSER_TYPES))}; orders come from the shop's server",
            )
        event_id = event.get("event_id")
        mapped.append({**event, "event_id": f"web:{event_id}" if event_id else None})
    events = sf.to_events(mapped, prefix="events.")
    for i, e in enumerate(events):
        # The restore link is where Nudge's tracked links redirect: from a browser (a key
        # anyone can read), only to the store's own origins, or it is an open redirect.
        url = e.cart.restore_url if e.cart is not None else None
        if url is not None and _origin(url) not in origins:
            raise ApiError(
                422,
                "invalid_event",
                f"events.{i}.cart.restore_url: must be on one of the store's origins",
            )
    now = datetime.now(UTC)
    # A time ahead of ours, or from long ago, is a wrong clock: the event happened just now.
    return [
        e if now - MAX_AGE <= e.occurred_at <= now else e.model_copy(update={"occurred_at": now})
        for e in events
    ]
