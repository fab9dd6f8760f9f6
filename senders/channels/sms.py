"""SMS through Twilio's Messages API, with the real ``twilio`` SDK.

``prepare`` validates the number and builds the client and the request (no network);
``deliver`` is the one ``messages.create`` call. ``NUDGE_TWILIO_BASE_URL`` points the SDK at
another server speaking the same API (the demo's and the tests' local sink).

Errors, by what Twilio answered:

=====================================  =============================================
21610 (recipient replied STOP)         PermanentSendError(reason="opted_out", suppress)
21211, 21614 (invalid / not mobile)    PermanentSendError(reason="invalid_number", suppress)
20003, HTTP 401/403 (credentials)      PermanentSendError(reason="provider_auth")
other 4xx                              PermanentSendError(reason="rejected")
HTTP 429 or code 20429                 TransientSendError(retry_after=Retry-After)
HTTP 500, 503 and other 5xx            TransientSendError
HTTP 502, 504 (a gateway's answer)     ConnectionError (outcome unknown)
no connection (refused, unreachable)   TransientSendError (nothing was sent)
connection lost, timeout in deliver    ConnectionError (outcome unknown)
=====================================  =============================================

Why a 5xx is safe to retry: Twilio creates the Message resource, and only then answers 201
with its SID; a 500 or 503 from the API means the request failed before that, so no message
is queued. A 502/504 is different: a gateway gave up waiting for Twilio's backend, which may
still have created the message, so it is treated like a lost connection (never re-sent).
Twilio's Messages API has no idempotency key; at-most-once rests on that distinction.

Never logged: phone numbers, the auth token, message bodies.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http import HttpClient
from twilio.http.response import Response
from twilio.rest import Client

from senders.channels import segments
from senders.channels.base import Outgoing, SendResult
from senders.channels.keepalive import KeepAlive, NotSent
from senders.errors import PermanentSendError, TransientSendError
from settings import Settings

logger = logging.getLogger(__name__)

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
#: Twilio refuses bodies over 1,600 characters (error 21617).
MAX_BODY_CHARS = 1600

OPTED_OUT = {21610}
INVALID_NUMBER = {21211, 21614}
AUTH_FAILED = {20003}
RATE_LIMITED = {20429}


class _HttpClient(HttpClient):  # type: ignore[misc]  # twilio ships no types
    """The SDK's transport (its ``HttpClient`` interface) over one keep-alive connection.

    Twilio's own ``TwilioHttpClient`` goes through ``requests``: about 1 ms of CPU per message,
    most of a send's. This one keeps the last answer's headers (for Retry-After) and logs
    method, host and status only (the SDK's client logs URLs and headers).
    """

    def __init__(self, timeout: float, base_url: str) -> None:
        super().__init__(logging.getLogger("nudge.twilio_http"), False, timeout)
        self.transport = KeepAlive(base_url, timeout)
        self.last_headers: dict[str, str] = {}

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        del timeout, allow_redirects  # the client's own timeout; Twilio's API answers directly
        self.last_headers = {}
        headers = dict(headers or {})
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params, doseq=True)
        body = None
        if data is not None:
            if headers.get("Content-Type") in ("application/json", "application/scim+json"):
                body = json.dumps(data).encode()
            else:
                body = urlencode(data, doseq=True).encode()
                headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        if auth is not None:
            pair = f"{auth[0]}:{auth[1]}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        status, answer, payload = self.transport.request(
            method.upper(), url, body=body, headers=headers
        )
        self.last_headers = answer
        self.logger.debug("Twilio %s %s: HTTP %d", method.upper(), self.transport.host, status)
        return Response(status, payload.decode("utf-8", "replace"), answer)


class TwilioSms:
    """SMS through Twilio. ``prepare`` builds the request; ``deliver`` sends it. One instance
    sends any number of messages in turn through one client (HTTP keep-alive)."""

    name = "sms"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Client | None = None
        self._http: _HttpClient | None = None
        self._request: dict[str, Any] | None = None
        self._segments: segments.Segments | None = None

    def __enter__(self) -> TwilioSms:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def prepare(self, message: Outgoing) -> None:
        """Validate recipient, sender and body; build the request (and the client, once).
        No network."""
        s = self.settings
        self._request = None
        if not (s.twilio_account_sid and s.twilio_auth_token):
            raise PermanentSendError(
                "Twilio is not configured (NUDGE_TWILIO_ACCOUNT_SID, NUDGE_TWILIO_AUTH_TOKEN)",
                reason="not_configured",
            )
        sender = message.sender or s.twilio_from
        if not sender:
            raise PermanentSendError(
                "no SMS sender number (NUDGE_TWILIO_FROM)", reason="not_configured"
            )
        recipient = message.recipient.strip()
        if not E164.match(recipient):
            raise PermanentSendError(
                "recipient is not an E.164 phone number", reason="invalid_number", suppress=True
            )
        if not message.text.strip():
            raise PermanentSendError("empty SMS body", reason="empty_body")
        if len(message.text) > MAX_BODY_CHARS:
            raise PermanentSendError(
                f"SMS body of {len(message.text)} characters is over {MAX_BODY_CHARS}",
                reason="too_long",
            )
        self._segments = segments.count(message.text)
        self._request = {"to": recipient, "from_": sender, "body": message.text}
        if message.status_callback:
            self._request["status_callback"] = message.status_callback
        if self._client is None:  # one client (and HTTP keep-alive session) for every send
            base_url = (s.twilio_base_url or "https://api.twilio.com").rstrip("/")
            self._http = _HttpClient(s.twilio_timeout_seconds, base_url)
            if s.twilio_base_url:
                # environment={}: TWILIO_EDGE/TWILIO_REGION must not rewrite the local host.
                client = Client(
                    s.twilio_account_sid,
                    s.twilio_auth_token,
                    http_client=self._http,
                    environment={},
                )
                client.api.base_url = s.twilio_base_url.rstrip("/")
            else:
                client = Client(s.twilio_account_sid, s.twilio_auth_token, http_client=self._http)
            self._client = client

    def deliver(self) -> SendResult:
        """Create the message at Twilio. Cost: segments × ``sms_price_per_segment``."""
        assert self._client is not None and self._request is not None, "prepare() first"
        assert self._segments is not None and self._http is not None
        request, self._request = self._request, None
        try:
            created = self._client.messages.create(**request)
        except (TwilioRestException, TwilioServiceException) as exc:
            raise classify(exc.status, exc.code, self._http.last_headers) from exc
        except NotSent as exc:  # no connection: the request never left
            raise TransientSendError(
                f"Twilio unreachable ({type(exc.__cause__).__name__})"
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise ConnectionError(
                f"Twilio: connection lost during send ({type(exc).__name__})"
            ) from exc
        except TwilioException as exc:  # e.g. a 201 whose body is not JSON
            raise ConnectionError(f"Twilio: unreadable answer ({type(exc).__name__})") from exc
        seg = self._segments
        provider_segments = _int(getattr(created, "num_segments", None))
        if provider_segments and provider_segments != seg.segments:
            logger.info(
                "Twilio counted %d segments for message %s, Nudge %d; billing Twilio's",
                provider_segments,
                created.sid,
                seg.segments,
            )
            seg = segments.Segments(seg.encoding, provider_segments, seg.units)
        return SendResult(
            provider_id=str(created.sid),
            cost=round(seg.segments * self.settings.sms_price_per_segment, 6),
            status=str(created.status or "queued"),
            detail=seg.detail,
        )

    def close(self) -> None:
        if self._http is not None:
            self._http.transport.close()
        self._http = None
        self._client = None


def classify(status: int, code: int | None, headers: dict[str, str]) -> Exception:
    """The send error for a Twilio error answer (HTTP ``status``, Twilio ``code``).

    The message names status and code only: Twilio's own text can quote the phone number.
    """
    what = f"Twilio refused the message: HTTP {status}, code {code}"
    if code in OPTED_OUT:
        return PermanentSendError(what, reason="opted_out", suppress=True)
    if code in INVALID_NUMBER:
        return PermanentSendError(what, reason="invalid_number", suppress=True)
    if status == 429 or code in RATE_LIMITED:
        return TransientSendError(what, retry_after=retry_after(headers.get("retry-after")))
    if code in AUTH_FAILED or status in (401, 403):
        logger.error("Twilio refused Nudge's credentials (HTTP %d, code %s)", status, code)
        return PermanentSendError(what, reason="provider_auth")
    if status in (502, 504):
        return ConnectionError(f"{what}: a gateway answered, Twilio may hold the message")
    if status >= 500:
        return TransientSendError(what)
    return PermanentSendError(what, reason="rejected")


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date (RFC 9110)."""
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
