"""Logging for Nudge's entry points. Personal data never reaches a log line.

Nudge's own messages name carts and messages by id, never by address; the filter below is the
second line of defence for what libraries log (an SMTP error quoting a recipient, say).
"""

from __future__ import annotations

import logging
import re

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"\+?\d[\d ()-]{7,}\d")


def redact(text: str) -> str:
    return _PHONE.sub("<phone>", _EMAIL.sub("<email>", text))


class RedactPersonalData(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def configure(level: str = "INFO", component: str = "nudge") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RedactPersonalData())
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s {component:<8} %(levelname)-5s %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries that narrate every request or message at INFO.
    for noisy in ("dramatiq", "uvicorn.access", "httpx", "alembic", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
