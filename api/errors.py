"""How the API answers errors: ``{"error": code, "message": text, ...}`` with a 4xx/5xx."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import HTTPException
from fastapi.responses import Response


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
