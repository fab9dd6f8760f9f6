"""Suppressions: addresses that must not be contacted on a channel.

Written by an unsubscribe, an SMS STOP, a hard bounce or a gone push subscription; checked at
schedule time and again right before every hand-off. Only new, explicit consent (a
``contact.captured`` event granting the channel, after the suppression) lifts one.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from store.db import insert
from store.models import Suppression

suppression_t: sa.Table = Suppression.__table__  # type: ignore[attr-defined]


def normalise(channel: str, address: str) -> str:
    return address.strip().lower() if channel == "email" else address.strip()


def suppress(
    conn: sa.Connection, *, store_id: str, channel: str, address: str, reason: str, at: datetime
) -> None:
    """Suppress ``address`` on ``channel`` (idempotent: the first reason is kept)."""
    conn.execute(
        insert(suppression_t, conn.dialect.name)
        .values(
            store_id=store_id,
            channel=channel,
            address=normalise(channel, address),
            reason=reason,
            created_at=at,
        )
        .on_conflict_do_nothing(index_elements=["store_id", "channel", "address"])
    )


def is_suppressed(conn: sa.Connection, *, store_id: str, channel: str, address: str) -> bool:
    return (
        conn.execute(
            sa.select(suppression_t.c.id).where(
                suppression_t.c.store_id == store_id,
                suppression_t.c.channel == channel,
                suppression_t.c.address == normalise(channel, address),
            )
        ).first()
        is not None
    )


def lift(
    conn: sa.Connection, *, store_id: str, channel: str, address: str, consented_at: datetime
) -> bool:
    """Lift a suppression older than a new explicit consent. Returns whether one was lifted."""
    result = conn.execute(
        sa.delete(suppression_t).where(
            suppression_t.c.store_id == store_id,
            suppression_t.c.channel == channel,
            suppression_t.c.address == normalise(channel, address),
            suppression_t.c.created_at < consented_at,
        )
    )
    return bool(result.rowcount)
