"""The second half of ingestion: applying the events the API accepted.

The API answers 202 once an event is stored (``api.ingest``); the worker's applier thread
applies what is pending to carts and customers, in the order it was accepted, and queues the
abandonment checks that follow. A crash anywhere leaves events pending, never lost: the next
drain applies them (a worker drains once before it starts its actors, so no send goes out on
a cart whose order is still waiting to be applied). Checks lost between a drain's commit and
the broker are caught by the sweep's overdue-cart scan.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from senders.actors import schedule_checks
from settings import Settings
from store.db import read_only
from store.events import Applied, apply_pending, event_t
from store.types import utcnow

logger = logging.getLogger(__name__)

#: Most events applied in one transaction.
DRAIN_BATCH = 2000


def queue_checks(settings: Settings, results: Iterable[Applied], now: datetime) -> None:
    """Queue the abandonment checks of committed results: one message per due time."""
    wait = settings.scaled(settings.abandon_after_seconds)
    due: dict[int, list[int]] = {}
    for applied in results:
        for cart_id, activity in applied.checks.items():
            # Rounded to the second: carts idle since about the same time share a message.
            delay = max(0.0, wait - (now - activity).total_seconds())
            due.setdefault(int(delay * 1000) // 1000 * 1000, []).append(cart_id)
    for delay_ms, cart_ids in due.items():
        schedule_checks(cart_ids, delay_ms)


def pending(engine: Engine) -> bool:
    """Whether any accepted event waits to be applied (a read; takes no write lock)."""
    with read_only(engine) as conn:
        query = sa.select(event_t.c.id).where(event_t.c.applied_at.is_(None)).limit(1)
        return conn.execute(query).first() is not None


def drain(settings: Settings, engine: Engine, *, batch: int = DRAIN_BATCH) -> int:
    """Apply every pending event, ``batch`` per transaction; return how many were applied.

    Returns early (0 more) if another applier holds the lock: it is draining already.
    Tests call this to wait until what they posted is applied.
    """
    total = 0
    while True:
        with engine.begin() as conn:
            drained = apply_pending(conn, now=utcnow(), limit=batch)
        if drained is None:
            return total
        queue_checks(settings, drained.applied, utcnow())
        total += drained.events
        if drained.events < batch:
            return total


class Applier(threading.Thread):
    """Drains accepted events as they come: looks every ``apply_interval_seconds`` when idle."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        super().__init__(name="nudge-applier", daemon=True)
        self.settings = settings
        self.engine = engine
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                # Keep draining while there is work; drain() returns 0 when another applier
                # holds the lock, and then this one waits like an idle one.
                if pending(self.engine) and drain(self.settings, self.engine):
                    continue
            except Exception:
                logger.exception("Applying accepted events failed; trying again shortly")
            self.stopping.wait(self.settings.apply_interval_seconds)
