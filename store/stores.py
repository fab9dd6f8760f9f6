"""Stores and their API keys. A key is shown once; only its SHA-256 is kept."""

from __future__ import annotations

import hashlib
import secrets

import sqlalchemy as sa

from store.models import Store, new_id
from store.types import utcnow

store_t: sa.Table = Store.__table__  # type: ignore[attr-defined]


def hash_key(key: str) -> str:
    # Keys are 192 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return "sk_" + secrets.token_urlsafe(24)


class StoreExists(ValueError):
    pass


def create_store(conn: sa.Connection, *, name: str) -> tuple[str, str]:
    """Create a store. Returns ``(store_id, api_key)``; the key cannot be recovered later."""
    name = name.strip()
    if not name:
        raise ValueError("a store needs a name")
    exists = conn.execute(sa.select(store_t.c.id).where(store_t.c.name == name)).first()
    if exists is not None:
        raise StoreExists(f"a store named {name!r} exists already")
    key, store_id = new_key(), new_id()
    conn.execute(
        sa.insert(store_t).values(
            id=store_id, name=name, api_key_hash=hash_key(key), created_at=utcnow()
        )
    )
    return store_id, key


def rotate_key(conn: sa.Connection, *, name: str) -> tuple[str, str]:
    """Give the named store a new key (the old one stops working). Returns ``(id, key)``."""
    store_id = conn.execute(sa.select(store_t.c.id).where(store_t.c.name == name)).scalar()
    if store_id is None:
        raise LookupError(f"no store named {name!r}")
    key = new_key()
    conn.execute(
        sa.update(store_t).where(store_t.c.id == store_id).values(api_key_hash=hash_key(key))
    )
    return store_id, key
