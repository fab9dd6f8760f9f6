"""Coupons: a unique, single-use code per discounted decision, with an expiry.

Minted when the touch is claimed for sending (once: a retry finds the same code), matched
when an ``order.completed`` names it.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from settings import Settings
from store.db import insert
from store.models import Coupon

coupon_t: sa.Table = Coupon.__table__  # type: ignore[attr-defined]

# No 0/O, 1/I/L: codes are read off phones and typed by hand.
_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"


def new_code() -> str:
    # 10 characters of a 31-letter alphabet: ~49 bits, unguessable within a coupon's life.
    return "N-" + "".join(secrets.choice(_ALPHABET) for _ in range(10))


def mint(conn: sa.Connection, settings: Settings, decision: Any, now: datetime) -> str:
    """The decision's coupon code, created on first call."""
    existing = conn.execute(
        sa.select(coupon_t.c.code).where(coupon_t.c.decision_id == decision.id)
    ).scalar()
    if existing is not None:
        return str(existing)
    ttl = timedelta(seconds=settings.scaled(settings.coupon_valid_days * 86400.0))
    for _ in range(5):  # a clash in ~49 bits is astronomically rare; retry rather than assume
        code = new_code()
        inserted = conn.execute(
            insert(coupon_t, conn.dialect.name)
            .values(
                store_id=decision.store_id,
                decision_id=decision.id,
                code=code,
                discount_pct=decision.discount_pct,
                expires_at=now + ttl,
                created_at=now,
            )
            .on_conflict_do_nothing()
            .returning(coupon_t.c.code)
        ).scalar()
        if inserted is not None:
            return str(inserted)
    raise RuntimeError("could not mint a unique coupon code")
