"""Coupons: a unique, single-use code per discounted decision, with an expiry.

Minted when the touch is claimed for sending (once: a retry finds the same code), matched
when an ``order.completed`` names it.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from senders.sql import among
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
    return mint_many(conn, settings, [decision], now)[decision.id]


def mint_many(
    conn: sa.Connection, settings: Settings, decisions: Sequence[Any], now: datetime
) -> dict[str, str]:
    """Each decision's coupon code (decision id -> code), created where there is none yet."""
    if not decisions:
        return {}
    codes: dict[str, str] = {
        row.decision_id: row.code
        for row in conn.execute(
            sa.select(coupon_t.c.decision_id, coupon_t.c.code).where(
                among(conn, coupon_t.c.decision_id, [d.id for d in decisions])
            )
        )
    }
    ttl = timedelta(seconds=settings.scaled(settings.coupon_valid_days * 86400.0))
    missing = [d for d in decisions if d.id not in codes]
    for _ in range(5):  # a clash in ~49 bits is astronomically rare; retry rather than assume
        if not missing:
            return codes
        inserted = conn.execute(
            insert(coupon_t, conn.dialect.name)
            .on_conflict_do_nothing()
            .returning(coupon_t.c.decision_id, coupon_t.c.code),
            [
                {
                    "store_id": d.store_id,
                    "decision_id": d.id,
                    "code": new_code(),
                    "discount_pct": d.discount_pct,
                    "expires_at": now + ttl,
                    "created_at": now,
                }
                for d in missing
            ],
        ).all()
        codes.update({row.decision_id: row.code for row in inserted})
        missing = [d for d in missing if d.id not in codes]
    raise RuntimeError("could not mint a unique coupon code")
