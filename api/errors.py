"""How the API answers errors: ``{"error": code, "message": text, ...}`` with a 4xx/5xx."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import HTTPException
from fastapi.responses import Response

from store.schemas import MESSAGES


class JSON(Response):
    """JSON rendered by orjson: ingest answers many small bodies."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ApiError(HTTPException):
    """An error answered as ``{"error": code, "message": text, ...}``."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(status_code=status, detail=message)
        self.code = code
        self.extra = extra


def refuse_nul(body: bytes) -> None:
    """Refuse JSON whose text holds a NUL character (``\\u0000``), with a 422 naming it.

    PostgreSQL cannot store NUL in text or JSON, and no storefront field needs one. JSON can
    only carry it escaped, so a byte search finds every candidate; a literal backslash-u0000
    in some text matches too, and is told apart by decoding.
    """
    if b"\\u0000" not in body:
        return
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return  # the caller's parser says what is wrong with it
    if _holds_nul(decoded):
        raise ApiError(422, "invalid_text", "text must not contain NUL characters (\\u0000)")


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def describe_errors(errors: list[Any], prefix: str = "") -> list[dict[str, str]]:
    """Pydantic errors as ``{"field": "cart.value", "message": "..."}`` a person can read."""
    out = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        field = prefix + ".".join(loc)
        message = (
            MESSAGES.get(str((err.get("ctx") or {}).get("pattern")))
            or MESSAGES.get(str(err.get("type")))
            or str(err.get("msg", "invalid")).removeprefix("Value error, ")
        )
        out.append({"field": field or "(body)", "message": message})
    return out


def summarize_errors(problems: list[dict[str, str]]) -> str:
    first = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return first + more
