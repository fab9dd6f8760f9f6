"""Stores and their keys. The secret API key is shown once; only its SHA-256 is kept. The
webhook secret (shared with Shopify/WooCommerce, needed to verify their signatures) and the
snippet's publishable key (public by design) are kept as they are, and so is the credential
of the store's discount API (Nudge must present it to create coupon codes)."""

from __future__ import annotations

import hashlib
import re
import secrets
from urllib.parse import urlsplit

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


# --- storefront integrations: webhook secrets and publishable keys ----------------------------


def _store_id(conn: sa.Connection, name: str) -> str:
    store_id = conn.execute(sa.select(store_t.c.id).where(store_t.c.name == name)).scalar()
    if store_id is None:
        raise LookupError(f"no store named {name!r}")
    return str(store_id)


def set_webhook_secret(
    conn: sa.Connection, *, name: str, secret: str | None = None
) -> tuple[str, str]:
    """Set the secret that signs the named store's Shopify/WooCommerce webhooks.

    ``secret`` is the platform's signing key when the platform chooses it (Shopify); ``None``
    generates one to paste into the platform (WooCommerce). Returns ``(store_id, secret)``.
    """
    store_id = _store_id(conn, name)
    if secret is None:
        secret = "whsec_" + secrets.token_urlsafe(32)
    secret = secret.strip()
    if len(secret) < 16 or len(secret) > 200:
        raise ValueError("a webhook secret has 16 to 200 characters")
    conn.execute(sa.update(store_t).where(store_t.c.id == store_id).values(webhook_secret=secret))
    return store_id, secret


def set_coupon_push(
    conn: sa.Connection, *, name: str, platform: str | None, url: str | None, token: str | None
) -> str:
    """Where the named store's coupon codes are created before a message offers them:
    ``platform`` "shopify" or "woocommerce" with the shop's base URL and API credential
    (WooCommerce: "consumer_key:consumer_secret"), or ``None`` to stop pushing. Returns the
    store id."""
    store_id = _store_id(conn, name)
    if platform is None:
        values: dict[str, str | None] = dict.fromkeys(
            ("coupon_platform", "coupon_api_url", "coupon_api_token")
        )
    else:
        if platform not in ("shopify", "woocommerce"):
            raise ValueError(f"platform must be shopify, woocommerce or none, not {platform!r}")
        parts = urlsplit((url or "").strip())
        loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if not parts.hostname or not (
            parts.scheme == "https" or (parts.scheme == "http" and loopback)
        ):
            raise ValueError(
                "the store URL must be https://… (e.g. https://my-shop.myshopify.com); "
                "plain http only on this machine"
            )
        token = (token or "").strip()
        if platform == "woocommerce" and not re.fullmatch(r"ck_\w+:cs_\w+", token):
            raise ValueError("a WooCommerce credential is consumer_key:consumer_secret (ck_…:cs_…)")
        if not 8 <= len(token) <= 500 or any(c.isspace() for c in token):
            raise ValueError("the API credential has 8 to 500 characters and no spaces")
        base = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        values = {"coupon_platform": platform, "coupon_api_url": base, "coupon_api_token": token}
    conn.execute(sa.update(store_t).where(store_t.c.id == store_id).values(values))
    return store_id


def normalize_origin(value: str) -> str:
    """``https://Shop.Example:443/`` → ``https://shop.example``: what browsers send as Origin."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an origin like https://shop.example")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{value!r} is not an origin: give scheme://host[:port] only")
    default = {"http": 80, "https": 443}[parts.scheme]
    port = f":{parts.port}" if parts.port and parts.port != default else ""
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host  # IPv6 literal
    return f"{parts.scheme}://{host}{port}"


def new_publishable_key() -> str:
    return "pk_" + secrets.token_urlsafe(18)


def publishable_key(
    conn: sa.Connection, *, name: str, origins: list[str] | None = None, rotate: bool = False
) -> tuple[str, str, list[str]]:
    """The named store's snippet key, created if it has none (or ``rotate``); ``origins``, if
    given, replace the allowed origins. Returns ``(store_id, key, allowed_origins)``."""
    store_id = _store_id(conn, name)
    row = conn.execute(
        sa.select(store_t.c.publishable_key, store_t.c.allowed_origins).where(
            store_t.c.id == store_id
        )
    ).one()
    key = row.publishable_key if row.publishable_key and not rotate else new_publishable_key()
    allowed = list(row.allowed_origins or [])
    if origins is not None:
        allowed = sorted({normalize_origin(o) for o in origins})
    conn.execute(
        sa.update(store_t)
        .where(store_t.c.id == store_id)
        .values(publishable_key=key, allowed_origins=allowed)
    )
    return store_id, key, allowed
