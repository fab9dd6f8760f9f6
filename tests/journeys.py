"""What the journey tests share: a controllable clock, posting events, reading tables back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import SQLModel

from senders import journey
from store.events import apply_events
from store.schemas import EventIn


class Clock:
    """The journey's clock: starts at ``start`` (default: now, whole seconds), moves on
    only when told."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def post(rt: journey.Runtime, store_id: str, *events: dict[str, Any]) -> Any:
    """Apply storefront events at the journey's clock, as the API would."""
    with rt.engine.begin() as conn:
        return apply_events(
            conn,
            store_id=store_id,
            events=[EventIn.model_validate(e) for e in events],
            now=rt.clock(),
        )


def rows(rt: journey.Runtime, table: str) -> list[Any]:
    """Every row of a table, typed (aware datetimes, JSON decoded) on both databases."""
    t = SQLModel.metadata.tables[table]
    with rt.engine.connect() as conn:
        return list(conn.execute(sa.select(t).order_by(*t.primary_key.columns)))


def abandon(rt: journey.Runtime, store_id: str, *events: dict[str, Any]) -> list[journey.FollowUp]:
    """Post the carts, let them be abandoned, and sweep when their first touch is due (the
    journey's clock must be a :class:`Clock`)."""
    clock = rt.clock
    assert isinstance(clock, Clock)
    applied = post(rt, store_id, *events)
    clock.advance(minutes=31)
    for cart_id in applied.checks:
        journey.check_cart(rt, cart_id)
    clock.advance(minutes=60)
    return list(journey.sweep(rt).follow_ups)
