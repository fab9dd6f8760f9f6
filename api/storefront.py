"""What the storefront integrations (webhooks, the JS snippet) share: reading and checking a
request, validating the events it maps to, and answering in the API's error format.

Every integration ends the same way: canonical :class:`store.schemas.EventIn` objects handed
to the :class:`api.ingest.GroupIngestor`, so idempotency on ``event_id``, cart upserts and
abandonment checks are the same whichever way an event came in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import Request
from pydantic import ValidationError

from api.errors import JSON, ApiError, describe_errors, refuse_nul, summarize_errors

# The shapes store.schemas accepts; reused so a mapped field is kept exactly when it is valid.
from store.schemas import _E164 as E164
from store.schemas import _EMAIL as EMAIL
from store.schemas import EventIn

_PHONE_PUNCTUATION = re.compile(r"[\s\-().]")
_FRACTION = re.compile(r"(\.\d{6})\d+")


def error(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSON:
    """An error answer in the API's format, with headers (``ApiError`` cannot carry them)."""
    return JSON({"error": code, "message": message, **extra}, status_code=status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body (signatures are over the exact bytes), refused over ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"body over {limit} bytes")
    body = await request.body()
    if len(body) > limit:
        raise ApiError(413, "too_large", f"body over {limit} bytes")
    return body


def parse_json(body: bytes) -> Any:
    if not body:
        raise ApiError(400, "empty_body", "the request body is empty; send JSON")
    refuse_nul(body)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "malformed_json", f"body is not valid JSON: {exc}") from None


def signature_matches(secret: str, body: bytes, signature: str) -> bool:
    """Whether ``signature`` is base64(HMAC-SHA256(secret, body)), compared in constant time."""
    expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
    return hmac.compare_digest(expected, signature.strip().encode())


def to_events(raw: list[dict[str, Any]], prefix: str = "") -> list[EventIn]:
    """Validate mapped events; all or nothing (one bad event refuses the request)."""
    events = []
    for i, item in enumerate(raw):
        try:
            events.append(EventIn.model_validate(item))
        except ValidationError as exc:
            problems = describe_errors(list(exc.errors()), f"{prefix}{i}." if prefix else "")
            raise ApiError(
                422, "invalid_event", summarize_errors(problems), errors=problems
            ) from None
    return events


# --- lenient field readers for platform payloads ------------------------------------------------


def text(value: Any, limit: int = 200) -> str | None:
    """A non-empty string (numbers become strings: platform ids are often integers)."""
    if value is None or isinstance(value, bool):
        return None
    out = str(value).strip()
    return out[:limit] if out else None


def money(value: Any) -> float | None:
    """``"199.00"`` or ``199`` → 199.0; anything else (missing, negative, garbage) → None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out >= 0 and out != float("inf") else None


def email(value: Any) -> str | None:
    out = text(value, 320)
    return out.lower() if out and EMAIL.match(out) else None


def phone(value: Any) -> str | None:
    """An E.164 number, or None: ``+1 (613) 555-1212`` is kept as ``+16135551212``; a number
    without its country code cannot be texted reliably and is dropped, not refused."""
    out = text(value, 64)
    if out is None:
        return None
    out = _PHONE_PUNCTUATION.sub("", out)
    return out if E164.match(out) else None


def timestamp(value: Any, *, naive_is_utc: bool = True) -> datetime | None:
    """An ISO 8601 time as an aware datetime (platforms send offsets, ``Z`` or naive GMT)."""
    raw = text(value, 64)
    if raw is None:
        return None
    raw = _FRACTION.sub(r"\1", raw)  # Shopify's headers carry nanoseconds
    try:
        out = datetime.fromisoformat(raw)
    except ValueError:
        return None
    if out.tzinfo is None:
        if not naive_is_utc:
            return None
        out = out.replace(tzinfo=UTC)
    return out
