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
