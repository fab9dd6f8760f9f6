"""Local protocol peers for the demo and the tests: Twilio, a Web Push service, AlimTalk.

Each is a real HTTP server on loopback speaking the provider's wire protocol, so the real
client libraries (the ``twilio`` SDK, ``pywebpush``, ``httpx``) talk to it unchanged. Each
keeps what it receives and can be told how to answer the next requests::

    with TwilioSink() as twilio:
        settings = Settings(twilio_base_url=twilio.base_url, ...)
        twilio.opted_out()  # the next send is answered with Twilio's error 21610
        ...
        assert twilio.messages[0].form["Body"].startswith("Acme")

Planned answers (``rate_limited``, ``server_error``, ``hang``, ``drop`` …) apply to the next
requests in order; after them every request gets the normal answer.
"""

from __future__ import annotations

import base64
import email.utils
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import http_ece
import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid
from twilio.request_validator import RequestValidator

from senders.channels import segments

logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


@dataclass(frozen=True)
class Planned:
    """How to answer one request instead of the normal way.

    ``status`` 0 means "the normal answer" (after ``delay`` seconds: a slow provider that
    still acts on the request). ``drop`` closes the connection without any answer, after
    the provider recorded the request: the sender cannot know whether it went out.
    """

    status: int = 0
    body: Any = None  # JSON-able
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False


@dataclass(frozen=True)
class Exchange:
    """One request as the sink saw it."""

    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    peer: tuple[str, int] = ("", 0)  # the client's address: one per connection


class HttpSink:
    """A threaded HTTP server on 127.0.0.1; subclasses answer in :meth:`answer`."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.exchanges: list[Exchange] = []
        self._plan: deque[Planned] = deque()
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- planning -----------------------------------------------------------------------
    def plan(self, *answers: Planned) -> None:
        """Answer the next requests with ``answers``, in order."""
        with self._cond:
            self._plan.extend(answers)

    def hang(self, seconds: float) -> None:
        """The next request is answered normally, but only after ``seconds``."""
        self.plan(Planned(delay=seconds))

    def drop(self) -> None:
        """The next request is recorded, then the connection closes with no answer."""
        self.plan(Planned(drop=True))

    def _next_planned(self) -> Planned | None:
        with self._cond:
            return self._plan.popleft() if self._plan else None

    # -- serving ------------------------------------------------------------------------
    def answer(self, exchange: Exchange) -> tuple[int, dict[str, str], bytes]:
        raise NotImplementedError

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        exchange = Exchange(
            method=handler.command,
            path=handler.path,
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
            peer=(str(handler.client_address[0]), int(handler.client_address[1])),
        )
        with self._cond:
            self.exchanges.append(exchange)
            self._cond.notify_all()
        planned = self._next_planned()
        if planned is not None and planned.delay:
            self._stopping.wait(planned.delay)
        if planned is not None and planned.drop:
            self.answer(exchange)  # the provider acted; the answer is lost
            handler.close_connection = True
            return
        if planned is not None and planned.status:
            status = planned.status
            headers = {"Content-Type": "application/json", **planned.headers}
            payload = json.dumps(planned.body).encode() if planned.body is not None else b""
        else:
            status, headers, payload = self.answer(exchange)
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        if payload:
            handler.wfile.write(payload)

    def start(self) -> HttpSink:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive, as the providers' APIs (every answer carries its Content-Length);
            # without Nagle, so an answer's body is not held back waiting for an ACK.
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def setup(self) -> None:
                super().setup()
                with sink._cond:
                    sink._connections.add(self.connection)

            def finish(self) -> None:
                with sink._cond:
                    sink._connections.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:
                sink._handle(self)

            def do_GET(self) -> None:
                sink._handle(self)

            def log_message(self, *_args: Any) -> None:  # quiet: paths can name accounts
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=type(self).__name__,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; open (keep-alive) connections are closed too, as a restart would."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._cond:
            connections, self._connections = list(self._connections), set()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Block until ``predicate()`` holds (checked on every request and every 50 ms)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{type(self).__name__}: condition not met in {timeout}s")
                self._cond.wait(min(left, 0.05))


def _json_answer(status: int, body: Any, **headers: str) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json", **headers}, json.dumps(body).encode()


# == Twilio ==========================================================================


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The ``X-Twilio-Signature`` Twilio puts on a webhook to ``url`` with form ``params``."""
    return str(RequestValidator(auth_token).compute_signature(url, dict(params)))


def twilio_error(status: int, code: int, message: str, **headers: str) -> Planned:
    """An error answer in Twilio's shape: ``{code, message, more_info, status}``."""
    return Planned(
        status=status,
        body={
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        headers=headers,
    )


@dataclass(frozen=True)
class TwilioMessage:
    """A message the sink accepted (answered 201)."""

    sid: str
    form: Mapping[str, str]  # To, From, Body, StatusCallback …
    segments: int
    encoding: str


class TwilioSink(HttpSink):
    """Twilio's Messages API: ``POST /2010-04-01/Accounts/{sid}/Messages.json``.

    Form-encoded, Basic auth (account SID + auth token). Answers 201 with Twilio's message
    JSON. With ``callbacks`` (statuses such as ``("sent", "delivered")``) it then POSTs each
    status to the message's ``StatusCallback`` URL, signed with ``X-Twilio-Signature`` as
    Twilio does; ``callback_results`` keeps the HTTP status each callback got.
    """

    def __init__(
        self,
        account_sid: str = "AC" + "0" * 32,
        auth_token: str = "sink-auth-token",
        *,
        port: int | None = None,
        callbacks: Iterable[str] = (),
        price_per_segment: float | None = None,
    ) -> None:
        super().__init__(port)
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.callbacks = tuple(callbacks)
        self.price_per_segment = price_per_segment
        self.messages: list[TwilioMessage] = []
        self.callback_results: list[tuple[str, str, int]] = []  # (sid, status, HTTP status)
        self._posters: list[threading.Thread] = []

    @property
    def base_url(self) -> str:
        """What ``NUDGE_TWILIO_BASE_URL`` / ``client.api.base_url`` should be."""
        return self.url

    # -- planned errors -------------------------------------------------------------------
    def opted_out(self) -> None:
        self.plan(twilio_error(400, 21610, "Attempt to send to unsubscribed recipient"))

    def invalid_number(self) -> None:
        self.plan(twilio_error(400, 21211, "The 'To' number is not a valid phone number."))

    def rate_limited(self, retry_after: float | None = None) -> None:
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        self.plan(twilio_error(429, 20429, "Too Many Requests", **headers))

    def server_error(self, status: int = 500) -> None:
        self.plan(twilio_error(status, 20500, "Internal Server Error"))

    # -- the API ----------------------------------------------------------------------------
    def answer(self, exchange: Exchange) -> tuple[int, dict[str, str], bytes]:
        parts = exchange.path.split("?")[0].strip("/").split("/")
        if (
            exchange.method != "POST"
            or len(parts) != 4
            or parts[:2] != ["2010-04-01", "Accounts"]
            or parts[3] != "Messages.json"
        ):
            return _json_answer(
                404,
                {"code": 20404, "message": "The requested resource was not found", "status": 404},
            )
        if parts[2] != self.account_sid or not self._authorized(exchange):
            return _json_answer(
                401,
                {
                    "code": 20003,
                    "message": "Authenticate",
                    "more_info": "https://www.twilio.com/docs/errors/20003",
                    "status": 401,
                },
            )
        form = dict(parse_qsl(exchange.body.decode(), keep_blank_values=True))
        for required in ("To", "Body"):
            if not form.get(required):
                return _json_answer(
                    400,
                    {
                        "code": 21604 if required == "To" else 21602,
                        "message": f"'{required}' is required.",
                        "status": 400,
                    },
                )
        seg = segments.count(form["Body"])
        sid = "SM" + uuid.uuid4().hex
        now = email.utils.formatdate(usegmt=True)
        price = (
            None
            if self.price_per_segment is None
            else f"-{seg.segments * self.price_per_segment:.5f}"
        )
        message = {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": form["Body"],
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "num_media": "0",
            "num_segments": str(seg.segments),
            "price": price,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "subresource_uris": {
                "media": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}/Media.json"
            },
            "to": form["To"],
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
        }
        with self._cond:
            self.messages.append(TwilioMessage(sid, form, seg.segments, seg.encoding))
            self._cond.notify_all()
        if self.callbacks and form.get("StatusCallback"):
            poster = threading.Thread(
                target=self._post_statuses,
                args=(sid, form, self.callbacks),
                name="twilio-sink-callbacks",
                daemon=True,
            )
            self._posters.append(poster)
            poster.start()
        return _json_answer(201, message)

    def _authorized(self, exchange: Exchange) -> bool:
        scheme, _, encoded = exchange.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return user == self.account_sid and password == self.auth_token

    # -- callbacks and inbound messages ------------------------------------------------------
    def _post_statuses(self, sid: str, form: Mapping[str, str], statuses: Iterable[str]) -> None:
        time.sleep(0.05)  # after the 201 has reached the sender, as with Twilio
        for status in statuses:
            if self._stopping.is_set():
                return
            try:
                self.post_status(sid, status, url=form["StatusCallback"], form=form)
            except httpx.HTTPError as exc:
                logger.warning("Status callback for %s failed: %s", sid, exc)

    def post_status(
        self,
        sid: str,
        status: str,
        *,
        url: str | None = None,
        error_code: int | None = None,
        form: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """POST a signed status callback for message ``sid`` (to its StatusCallback URL)."""
        if form is None:
            form = next(m.form for m in self.messages if m.sid == sid)
        target = url or form["StatusCallback"]
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "From": form.get("From", ""),
            "MessageSid": sid,
            "MessageStatus": status,
            "SmsSid": sid,
            "SmsStatus": status,
            "To": form.get("To", ""),
        }
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        response = self._signed_post(target, params)
        with self._cond:
            self.callback_results.append((sid, status, response.status_code))
            self._cond.notify_all()
        return response

    def send_inbound(
        self, url: str, *, from_: str, body: str, to: str = "+15005550006"
    ) -> httpx.Response:
        """POST a signed inbound SMS webhook to ``url``, as Twilio does when a customer texts
        the sender number (e.g. STOP)."""
        sid = "SM" + uuid.uuid4().hex
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "Body": body,
            "From": from_,
            "MessageSid": sid,
            "NumMedia": "0",
            "NumSegments": "1",
            "SmsMessageSid": sid,
            "SmsSid": sid,
            "SmsStatus": "received",
            "To": to,
        }
        return self._signed_post(url, params)

    def _signed_post(self, url: str, params: Mapping[str, str]) -> httpx.Response:
        signature = twilio_signature(self.auth_token, url, params)
        return httpx.post(
            url,
            data=dict(params),
            headers={"X-Twilio-Signature": signature, "User-Agent": "TwilioProxy/1.1"},
            timeout=10.0,
        )

    def wait_for_callbacks(self, count: int, timeout: float = 10.0) -> list[tuple[str, str, int]]:
        self.wait_until(lambda: len(self.callback_results) >= count, timeout)
        return list(self.callback_results)


# == Web Push ========================================================================


@dataclass(frozen=True)
class Subscriber:
    """A browser's side of a subscription: what it gives the server, and its secrets."""

    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes

    @property
    def info(self) -> dict[str, Any]:
        """The subscription as ``PushSubscription.toJSON()`` gives it."""
        public = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "keys": {"p256dh": b64url(public), "auth": b64url(self.auth_secret)},
        }

    @property
    def json(self) -> str:
        return json.dumps(self.info)


@dataclass(frozen=True)
class PushReceived:
    """A notification the sink accepted, decrypted with the subscriber's keys."""

    endpoint: str
    headers: Mapping[str, str]
    plaintext: bytes
    vapid_claims: Mapping[str, Any]  # the JWT's claims, after its signature checked out

    @property
    def payload(self) -> Any:
        return json.loads(self.plaintext)


def vapid_keys() -> tuple[str, str]:
    """A fresh VAPID key pair: (private key as PEM, public key as base64url for browsers)."""
    vapid = Vapid()
    vapid.generate_keys()
    public = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return vapid.private_pem().decode(), b64url(public)


class PushSink(HttpSink):
    """A Web Push service (RFC 8030) for subscriptions made with :meth:`subscribe`.

    Checks the VAPID ``Authorization`` (RFC 8292: signature, ``aud`` = this origin, ``exp``
    in the future) and, if ``vapid_public_key`` is given, that it is the server's key; then
    decrypts the aes128gcm body (RFC 8291) with the subscriber's keys and answers 201 with a
    ``Location``. ``gone(endpoint)`` makes a subscription answer 410 (or 404) from then on.
    """

    def __init__(self, *, port: int | None = None, vapid_public_key: str | None = None) -> None:
        super().__init__(port)
        self.vapid_public_key = vapid_public_key
        self.received: list[PushReceived] = []
        self.refused: list[tuple[str, int, str]] = []  # (endpoint, status, why)
        self._subscribers: dict[str, Subscriber] = {}
        self._gone: dict[str, int] = {}

    def subscribe(self) -> Subscriber:
        """A new browser subscription (ECDH P-256 key pair and a 16-byte auth secret)."""
        endpoint = f"{self.url}/push/{uuid.uuid4().hex}"
        sub = Subscriber(endpoint, ec.generate_private_key(ec.SECP256R1()), os.urandom(16))
        self._subscribers[endpoint] = sub
        return sub

    def gone(self, endpoint: str, status: int = 410) -> None:
        self._gone[endpoint] = status

    def rate_limited(self, retry_after: float | None = None) -> None:
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        self.plan(Planned(status=429, body={"reason": "rate limited"}, headers=headers))

    def server_error(self, status: int = 500) -> None:
        self.plan(Planned(status=status, body={"reason": "unavailable"}))

    def answer(self, exchange: Exchange) -> tuple[int, dict[str, str], bytes]:
        endpoint = self.url + exchange.path
        sub = self._subscribers.get(endpoint)
        if exchange.method != "POST" or sub is None:
            return self._refuse(endpoint, 404, "unknown subscription")
        if endpoint in self._gone:
            return self._refuse(endpoint, self._gone[endpoint], "subscription gone")
        claims = self._check_vapid(exchange.headers.get("authorization", ""))
        if claims is None:
            return self._refuse(endpoint, 401, "VAPID authorization invalid")
        if exchange.headers.get("content-encoding") != "aes128gcm":
            return self._refuse(endpoint, 400, "content-encoding must be aes128gcm")
        if "ttl" not in exchange.headers:
            return self._refuse(endpoint, 400, "TTL header missing")
        try:
            plaintext = http_ece.decrypt(
                exchange.body,
                private_key=sub.private_key,
                auth_secret=sub.auth_secret,
                version="aes128gcm",
            )
        except Exception as exc:  # http_ece raises several kinds; all mean "not for this key"
            return self._refuse(endpoint, 400, f"cannot decrypt: {type(exc).__name__}")
        with self._cond:
            self.received.append(PushReceived(endpoint, exchange.headers, plaintext, claims))
            self._cond.notify_all()
        location = f"{self.url}/message/{uuid.uuid4().hex}"
        return 201, {"Location": location}, b""

    def _refuse(self, endpoint: str, status: int, why: str) -> tuple[int, dict[str, str], bytes]:
        with self._cond:
            self.refused.append((endpoint, status, why))
            self._cond.notify_all()
        return _json_answer(status, {"reason": why})

    def _check_vapid(self, authorization: str) -> dict[str, Any] | None:
        scheme, _, params = authorization.partition(" ")
        if scheme.lower() != "vapid":
            return None
        parts = dict(p.strip().split("=", 1) for p in params.split(",") if "=" in p)
        if self.vapid_public_key and parts.get("k") != self.vapid_public_key:
            return None
        try:
            if not Vapid.verify(authorization):
                return None
            claims = json.loads(_b64url_decode(parts["t"].split(".")[1]))
        except Exception:  # a malformed header is simply not a valid one
            return None
        if claims.get("aud") != self.url or int(claims.get("exp", 0)) <= time.time():
            return None
        if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
            return None
        return dict(claims)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[PushReceived]:
        self.wait_until(lambda: len(self.received) >= count, timeout)
        return list(self.received)


# == AlimTalk ========================================================================


@dataclass(frozen=True)
class AlimTalkSent:
    """One recipient of an accepted AlimTalk request: as AlimTalk, or as its LMS fallback."""

    request_id: str
    idempotency_key: str | None
    sender_key: str
    template_code: str
    recipient_no: str
    parameters: Mapping[str, str]
    via: str  # "alimtalk" or "lms"
    resend: Mapping[str, Any] | None  # the resendParameter as sent


class AlimTalkSink(HttpSink):
    """An AlimTalk provider shaped like NHN Cloud's v2.3 API.

    ``POST /alimtalk/v2.3/appkeys/{app_key}/messages`` with ``X-Secret-Key``. Recipients in
    ``no_kakaotalk`` (national form, ``010…``) have no KakaoTalk: with a resend parameter
    they get the LMS instead, without one KakaoTalk's result is code 3019. A repeated
    ``Idempotency-Key`` (or ``X-NC-API-IDEMPOTENCY-KEY``) gets the first answer again and
    sends nothing.

    How the fallback is reported:

    - ``report_later=False`` (default): in the send answer (``resendType: "LMS"``, or result
      code 3019), as some providers do;
    - ``report_later=True``: as NHN Cloud does — the send answer accepts every recipient
      (result code 0) and the outcome is read later with
      ``GET /alimtalk/v2.3/appkeys/{app_key}/messages/{requestId}/{recipientSeq}``:
      ``messageStatus`` READY until ``report_after`` seconds have passed, then COMPLETED
      (``resultCode`` "1000") or FAILED ("3019"), with ``resendStatus`` RSC01 (no resend),
      RSC04 (resent as LMS) or RSC05 (the resend failed, for numbers in ``lms_fails``).
    """

    def __init__(
        self,
        app_key: str = "sink-app-key",
        secret: str = "sink-secret",
        *,
        port: int | None = None,
        templates: Iterable[str] | None = None,
        report_later: bool = False,
        report_after: float = 0.0,
    ) -> None:
        super().__init__(port)
        self.app_key = app_key
        self.secret = secret
        self.templates = set(templates) if templates is not None else None
        self.report_later = report_later
        self.report_after = report_after
        self.no_kakaotalk: set[str] = set()
        self.lms_fails: set[str] = set()
        self.sent: list[AlimTalkSent] = []
        self.replays = 0
        self.queries = 0
        self._answers: dict[str, tuple[int, dict[str, str], bytes]] = {}
        # (request id, recipient seq) -> (accepted at, number, resend asked for)
        self._outcomes: dict[tuple[str, int], tuple[float, str, bool]] = {}

    def rate_limited(self, retry_after: float | None = None) -> None:
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        self.plan(Planned(status=429, body=_nhn_header(-429, "Too many requests"), headers=headers))

    def server_error(self, status: int = 500) -> None:
        self.plan(Planned(status=status, body=_nhn_header(-500, "Internal server error")))

    def answer(self, exchange: Exchange) -> tuple[int, dict[str, str], bytes]:
        path = urlsplit(exchange.path).path
        base = f"/alimtalk/v2.3/appkeys/{self.app_key}/messages"
        if exchange.headers.get("x-secret-key") != self.secret:
            return _json_answer(401, _nhn_header(-1, "Invalid secret key"))
        if exchange.method == "GET" and path.startswith(base + "/"):
            return self._query(path.removeprefix(base + "/"))
        if exchange.method != "POST" or path != base:
            return _json_answer(404, _nhn_header(-404, "Not found"))
        key = exchange.headers.get("x-nc-api-idempotency-key") or exchange.headers.get(
            "idempotency-key"
        )
        with self._cond:
            if key is not None and key in self._answers:
                self.replays += 1
                return self._answers[key]
        try:
            body = json.loads(exchange.body)
            sender_key, template = body["senderKey"], body["templateCode"]
            recipients = body["recipientList"]
        except (ValueError, KeyError, TypeError):
            return _json_answer(200, _nhn_header(-1000, "Invalid request body"))
        if self.templates is not None and template not in self.templates:
            return _json_answer(200, _nhn_header(-1030, "Template not found"))
        request_id = time.strftime("%Y%m%d%H%M%S") + uuid.uuid4().hex[:12]
        results = []
        for seq, entry in enumerate(recipients, start=1):
            number = str(entry.get("recipientNo", ""))
            resend = entry.get("resendParameter")
            resending = bool(resend and resend.get("isResend"))
            result: dict[str, Any] = {
                "recipientSeq": seq,
                "recipientNo": number,
                "resultCode": 0,
                "resultMessage": "SUCCESS",
                "recipientGroupingKey": entry.get("recipientGroupingKey"),
            }
            via = "alimtalk"
            if number in self.no_kakaotalk:
                if not resending:
                    if not self.report_later:
                        result.update(resultCode=3019, resultMessage="Not a KakaoTalk user")
                    via = "none"
                else:
                    via = "lms" if number not in self.lms_fails else "none"
                    if not self.report_later:
                        result.update(
                            resendType=resend.get("resendType", "LMS"), resendStatus="RSC03"
                        )
            results.append(result)
            with self._cond:
                self._outcomes[(request_id, seq)] = (time.monotonic(), number, resending)
            if via == "none":
                continue
            sent = AlimTalkSent(
                request_id,
                key,
                sender_key,
                template,
                number,
                dict(entry.get("templateParameter") or {}),
                via,
                resend,
            )
            with self._cond:
                self.sent.append(sent)
                self._cond.notify_all()
        answer = _json_answer(
            200,
            {
                **_nhn_header(0, "SUCCESS"),
                "message": {
                    "requestId": request_id,
                    "senderGroupingKey": body.get("senderGroupingKey"),
                    "sendResults": results,
                },
            },
        )
        if key is not None:
            with self._cond:
                self._answers[key] = answer
        return answer

    def _query(self, rest: str) -> tuple[int, dict[str, str], bytes]:
        """One recipient's outcome, as NHN Cloud's single-message query reports it."""
        request_id, _, seq = rest.partition("/")
        with self._cond:
            self.queries += 1
            known = self._outcomes.get((request_id, int(seq) if seq.isdigit() else -1))
        if known is None:
            return _json_answer(200, {**_nhn_header(0, "SUCCESS"), "message": None})
        accepted, number, resending = known
        message: dict[str, Any] = {
            "requestId": request_id,
            "recipientSeq": int(seq),
            "recipientNo": number,
            "messageStatus": "READY",
            "resendStatus": "RSC02" if resending else "RSC01",
            "resultCode": None,
            "resultCodeName": None,
        }
        if time.monotonic() - accepted >= self.report_after:
            if number in self.no_kakaotalk:
                message.update(
                    messageStatus="FAILED", resultCode="3019", resultCodeName="Not a KakaoTalk user"
                )
                if resending:
                    message["resendStatus"] = "RSC05" if number in self.lms_fails else "RSC04"
            else:
                message.update(messageStatus="COMPLETED", resultCode="1000", resultCodeName="OK")
                message["resendStatus"] = "RSC01"
        return _json_answer(200, {**_nhn_header(0, "SUCCESS"), "message": message})

    def wait_for(self, count: int, timeout: float = 10.0) -> list[AlimTalkSent]:
        self.wait_until(lambda: len(self.sent) >= count, timeout)
        return list(self.sent)


def _nhn_header(code: int, message: str) -> dict[str, Any]:
    return {"header": {"resultCode": code, "resultMessage": message, "isSuccessful": code == 0}}


# == Store discount APIs (coupon codes) ================================================


@dataclass(frozen=True)
class StoreCoupon:
    """A code a store's checkout now accepts, as its API was asked to create it."""

    code: str
    percent: float
    usage_limit: int | None
    once_per_customer: bool
    ends_at: str | None
    at: float  # time.monotonic() when created


class ShopifyAdminSink(HttpSink):
    """Shopify's GraphQL Admin API, as far as ``discountCodeBasicCreate`` goes.

    ``POST /admin/api/{version}/graphql.json`` with ``X-Shopify-Access-Token``: a wrong token
    gets 401 (``[API] Invalid API key or access token``); a code the shop has already gets
    the ``TAKEN`` user error, as Shopify answers; required inputs missing get a GraphQL
    error. ``throttled()`` answers the next request as Shopify's leaky bucket does when it
    is empty: 200 with a ``THROTTLED`` error and the bucket's state.
    """

    def __init__(self, token: str = "shpat_sink", *, port: int | None = None) -> None:
        super().__init__(port)
        self.token = token
        self.discounts: dict[str, StoreCoupon] = {}

    def throttled(self, cost: float = 10, available: float = 4, restore_rate: float = 50) -> None:
        self.plan(
            Planned(
                status=200,
                body={
                    "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
                    "extensions": {
                        "cost": {
                            "requestedQueryCost": cost,
                            "actualQueryCost": None,
                            "throttleStatus": {
                                "maximumAvailable": 2000.0,
                                "currentlyAvailable": available,
                                "restoreRate": restore_rate,
                            },
                        }
                    },
                },
            )
        )

    def answer(self, exchange: Exchange) -> tuple[int, dict[str, str], bytes]:
        path = urlsplit(exchange.path).path
        if exchange.method != "POST" or not (
            path.startswith("/admin/api/") and path.endswith("/graphql.json")
        ):
            return _json_answer(404, {"errors": "Not Found"})
        if exchange.headers.get("x-shopify-access-token") != self.token:
            return _json_answer(401, {"errors": "[API] Invalid API key or access token"})
        try:
            request = json.loads(exchange.body)
            discount = request["variables"]["basicCodeDiscount"]
        except (ValueError, KeyError, TypeError):
            return _json_answer(200, {"errors": [{"message": "Parse error"}]})
        if "discountCodeBasicCreate" not in str(request.get("query")):
            return _json_answer(200, {"errors": [{"message": "Unknown operation"}]})
        missing = [
            name
            for name in ("code", "title", "startsAt", "customerGets")
            if discount.get(name) in (None, "")
        ]
        if not (discount.get("context") or discount.get("customerSelection")):
            missing.append("context")
        if missing:
            return _json_answer(
                200,
                {"errors": [{"message": f"Variable $basicCodeDiscount: missing {missing}"}]},
            )
        result: dict[str, Any] = {"codeDiscountNode": None, "userErrors": []}
        code = str(discount["code"])
        with self._cond:
            if code.upper() in (c.upper() for c in self.discounts):
                result["userErrors"] = [
                    {
                        "field": ["basicCodeDiscount", "code"],
                        "code": "TAKEN",
                        "message": "Code must be unique. Please try a different code.",
                    }
                ]
            else:
                value = discount["customerGets"]["value"]
                self.discounts[code] = StoreCoupon(
                    code=code,
                    percent=float(value["percentage"]) * 100,
                    usage_limit=discount.get("usageLimit"),
                    once_per_customer=bool(discount.get("appliesOncePerCustomer")),
                    ends_at=discount.get("endsAt"),
                    at=time.monotonic(),
                )
                gid = f"gid://shopify/DiscountCodeNode/{len(self.discounts)}"
                result["codeDiscountNode"] = {"id": gid}
        return _json_answer(200, {"data": {"discountCodeBasicCreate": result}})


class WooCommerceSink(HttpSink):
    """WooCommerce's REST API, as far as ``POST /wp-json/wc/v3/coupons`` goes.

    HTTP Basic with the consumer key and secret (401 ``woocommerce_rest_cannot_create``
    otherwise). Codes are kept in lower case, as WooCommerce formats them; a code it has
    already gets 400 ``woocommerce_rest_coupon_code_already_exists``.
    """

    def __init__(
        self, key: str = "ck_sink", secret: str = "cs_sink", *, port: int | None = None
    ) -> None:
        super().__init__(port)
        self.credential = "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()
        self.coupons: dict[str, StoreCoupon] = {}

    def answer(self, exchange: Exchange) -> tuple[int, dict[str, str], bytes]:
        if exchange.method != "POST" or urlsplit(exchange.path).path != "/wp-json/wc/v3/coupons":
            return _json_answer(404, {"code": "rest_no_route", "data": {"status": 404}})
        if exchange.headers.get("authorization") != self.credential:
            return _json_answer(
                401,
                {
                    "code": "woocommerce_rest_cannot_create",
                    "message": "Sorry, you are not allowed to create resources.",
                    "data": {"status": 401},
                },
            )
        try:
            coupon = json.loads(exchange.body)
            code = str(coupon["code"]).strip().lower()
            percent = float(coupon["amount"])
        except (ValueError, KeyError, TypeError):
            return _json_answer(
                400, {"code": "rest_invalid_param", "message": "Invalid parameter(s)"}
            )
        with self._cond:
            if code in self.coupons:
                return _json_answer(
                    400,
                    {
                        "code": "woocommerce_rest_coupon_code_already_exists",
                        "message": "The coupon code already exists",
                        "data": {"status": 400},
                    },
                )
            self.coupons[code] = StoreCoupon(
                code=code,
                percent=percent,
                usage_limit=coupon.get("usage_limit"),
                once_per_customer=coupon.get("usage_limit_per_user") == 1,
                ends_at=coupon.get("date_expires_gmt"),
                at=time.monotonic(),
            )
            number = len(self.coupons)
        return _json_answer(201, {"id": number, "code": code, "amount": f"{percent:.2f}"})
