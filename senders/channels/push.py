"""Web Push (RFC 8030) with VAPID (RFC 8292) through ``pywebpush``.

The recipient is a browser's subscription as JSON: ``{"endpoint": …, "keys": {"p256dh": …,
"auth": …}}``. ``prepare`` checks it, signs the VAPID header and encrypts the payload
(aes128gcm, RFC 8291) without touching the network; ``deliver`` is the one POST to the push
service. The payload the service worker receives is JSON: ``{"title", "body", "url",
"message_id"}``.

Errors, by what the push service answered:

=====================================  =============================================
404, 410 (subscription expired/gone)   PermanentSendError(reason="subscription_gone", suppress)
invalid subscription keys (prepare)    PermanentSendError(reason="invalid_subscription", suppress)
401, 403 (VAPID refused)               PermanentSendError(reason="provider_auth")
413 (payload too large)                PermanentSendError(reason="too_large")
other 4xx                              PermanentSendError(reason="rejected")
429                                    TransientSendError(retry_after=Retry-After)
5xx                                    TransientSendError (the service kept nothing)
connection lost, timeout in deliver    ConnectionError (outcome unknown)
=====================================  =============================================

Each notification carries ``Topic: <message id>``: should an ambiguous send be repeated, a
push service still holding the first copy replaces it instead of showing two. A push costs
``NUDGE_PUSH_PRICE`` (0: push services charge nothing).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import requests
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid, VapidException
from pywebpush import WebPusher, WebPushException

from senders.channels.base import Outgoing, SendResult
from senders.channels.sms import retry_after
from senders.errors import PermanentSendError, TransientSendError
from settings import Settings
from store.models import PushSubscription

logger = logging.getLogger(__name__)

push_t: sa.Table = PushSubscription.__table__  # type: ignore[attr-defined]

#: Push services must accept 4,096-byte payloads (RFC 8030 §7.2); ours stay under it.
MAX_PAYLOAD_BYTES = 3000


class WebPush:
    """Web Push with VAPID. ``prepare`` encrypts and signs; ``deliver`` POSTs. One instance
    sends any number of notifications in turn over one HTTP session (keep-alive)."""

    name = "push"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pusher: WebPusher | None = None
        self._payload: bytes | None = None
        self._headers: dict[str, str] = {}
        self._session: requests.Session | None = None
        self._vapid: Vapid | None = None
        self._message_id = ""

    def __enter__(self) -> WebPush:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def prepare(self, message: Outgoing) -> None:
        """Check the subscription, sign VAPID and build the notification. No network."""
        s = self.settings
        if self._vapid is None:
            self._vapid = load_vapid(s.vapid_private_key)
        vapid = self._vapid
        subscription = parse_subscription(message.recipient)
        if self._session is None:
            self._session = requests.Session()
        session = self._session
        self._pusher = None
        try:
            pusher = WebPusher(subscription, requests_session=session)
        except (WebPushException, binascii.Error, ValueError) as exc:
            raise PermanentSendError(
                "push subscription keys are invalid", reason="invalid_subscription", suppress=True
            ) from exc
        endpoint = urlsplit(subscription["endpoint"])
        claims = {
            "sub": s.vapid_subject,
            "aud": f"{endpoint.scheme}://{endpoint.netloc}",
            # RFC 8292: at most 24 h ahead; 12 h leaves room for clock skew.
            "exp": int(time.time()) + 12 * 3600,
        }
        try:
            headers = dict(vapid.sign(claims))
        except VapidException as exc:
            raise PermanentSendError(
                f"VAPID signing failed: {exc} (check NUDGE_VAPID_SUBJECT)",
                reason="not_configured",
            ) from exc
        payload = json.dumps(
            {
                "title": message.subject or "",
                "body": message.text,
                "url": message.url,
                "message_id": message.message_id,
            },
            ensure_ascii=False,
        ).encode()
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise PermanentSendError(
                f"push payload of {len(payload)} bytes is over {MAX_PAYLOAD_BYTES}",
                reason="too_large",
            )
        headers["Urgency"] = "normal"
        headers["Topic"] = _topic(message.message_id)
        self._pusher = pusher
        self._payload = payload
        self._headers = headers
        self._message_id = message.message_id

    def deliver(self) -> SendResult:
        """POST the encrypted notification. The provider id is the service's message URL."""
        assert self._pusher is not None and self._payload is not None, "prepare() first"
        pusher, self._pusher = self._pusher, None
        try:
            response = pusher.send(
                self._payload,
                dict(self._headers),
                ttl=self.settings.push_ttl_seconds,
                timeout=self.settings.push_timeout_seconds,
            )
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise ConnectionError(
                f"push service: connection lost during send ({type(exc).__name__})"
            ) from exc
        assert isinstance(response, requests.Response)
        if response.status_code in (200, 201, 202):
            location = response.headers.get("Location")
            return SendResult(
                provider_id=location or f"push:{self._message_id}",
                cost=self.settings.push_price,
                status="accepted",
            )
        raise classify(response.status_code, response.headers.get("Retry-After"))

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
        self._pusher = None


def classify(status: int, retry_after_header: str | None = None) -> Exception:
    """The send error for a push service's HTTP ``status``."""
    what = f"push service refused the notification: HTTP {status}"
    if status in (404, 410):
        return PermanentSendError(what, reason="subscription_gone", suppress=True)
    if status == 429:
        return TransientSendError(what, retry_after=retry_after(retry_after_header))
    if status in (401, 403):
        logger.error("A push service refused Nudge's VAPID signature (HTTP %d)", status)
        return PermanentSendError(what, reason="provider_auth")
    if status == 413:
        return PermanentSendError(what, reason="too_large")
    if status >= 500:
        return TransientSendError(what)
    return PermanentSendError(what, reason="rejected")


def load_vapid(private_key: str | None) -> Vapid:
    """The VAPID signer for a PEM, or a base64url raw (32-byte) or DER private key."""
    if not private_key:
        raise PermanentSendError(
            "Web Push is not configured (NUDGE_VAPID_PRIVATE_KEY)", reason="not_configured"
        )
    try:
        if private_key.lstrip().startswith("-----BEGIN"):
            return Vapid.from_pem(private_key.encode())
        return Vapid.from_string(private_key)
    except (VapidException, ValueError, TypeError, binascii.Error) as exc:
        raise PermanentSendError(
            "NUDGE_VAPID_PRIVATE_KEY is not a readable EC private key", reason="not_configured"
        ) from exc


def parse_subscription(raw: str) -> dict[str, Any]:
    """A subscription's JSON as the dict pywebpush takes; PermanentSendError if malformed."""
    try:
        sub = json.loads(raw)
        endpoint = sub["endpoint"]
        keys = sub["keys"]
        p256dh, auth = keys["p256dh"], keys["auth"]
    except (ValueError, KeyError, TypeError) as exc:
        raise PermanentSendError(
            "recipient is not a push subscription's JSON", reason="invalid_subscription"
        ) from exc
    parts = urlsplit(str(endpoint))
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise PermanentSendError(
            "push endpoint is not an http(s) URL", reason="invalid_subscription", suppress=True
        )
    if not (_valid_point(p256dh) and _b64_len(auth) == 16):
        raise PermanentSendError(
            "push subscription keys are invalid", reason="invalid_subscription", suppress=True
        )
    return {"endpoint": str(endpoint), "keys": {"p256dh": str(p256dh), "auth": str(auth)}}


def remove_subscription(conn: sa.Connection, endpoint: str, *, store_id: str | None = None) -> int:
    """Delete the subscriptions with ``endpoint`` (of one store, if given); returns how many.

    For a push service's 404/410: the browser dropped the subscription, it will not return.
    """
    query = sa.delete(push_t).where(push_t.c.endpoint == endpoint)
    if store_id is not None:
        query = query.where(push_t.c.store_id == store_id)
    return int(conn.execute(query).rowcount or 0)


def b64url_decode(value: str) -> bytes:
    """base64url with or without padding (subscriptions come both ways)."""
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _b64_len(value: object) -> int:
    """Decoded length of a base64url string, -1 if it is not one."""
    if not isinstance(value, str):
        return -1
    try:
        return len(b64url_decode(value))
    except (binascii.Error, ValueError):
        return -1


def _valid_point(value: object) -> bool:
    """Whether ``value`` is a base64url uncompressed P-256 point (the browser's p256dh key)."""
    if _b64_len(value) != 65:
        return False
    assert isinstance(value, str)
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(value))
    except ValueError:
        return False
    return True


def _topic(message_id: str) -> str:
    """RFC 8030 §5.4: at most 32 characters of the base64url alphabet."""
    safe = "".join(ch for ch in message_id if ch.isalnum() or ch in "-_")
    return safe[:32] or "nudge"
