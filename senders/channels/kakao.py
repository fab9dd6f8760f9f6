"""KakaoTalk AlimTalk through a provider's HTTP API, shaped like NHN Cloud's v2.3.

``POST {base}/alimtalk/v2.3/appkeys/{appkey}/messages`` with ``X-Secret-Key``, a JSON body
naming the sender key (the KakaoTalk channel), the pre-registered template code and its
``#{var}`` values, and an SMS/LMS *resend* parameter: when the recipient has no KakaoTalk
(or blocked the channel) the provider sends ``resendContent`` as an LMS from
``resendSendNo`` instead. ``Idempotency-Key: <message id>`` lets a provider (and the local
sink) drop a repeated request.

Answer (HTTP 200)::

    {"header": {"resultCode": 0, "resultMessage": "SUCCESS", "isSuccessful": true},
     "message": {"requestId": "…", "sendResults": [
         {"recipientSeq": 1, "resultCode": 0, "resultMessage": "SUCCESS",
          "resendType": "LMS", "resendStatus": "RSC03"}]}}

``resendType`` in a result means the provider fell back to SMS/LMS for that recipient; the
result is then reported as ``detail="fallback:lms"`` and costs ``lms_price`` instead of
``alimtalk_price``. NHN Cloud itself accepts the request and reports how it ended later:
then the result asks to be checked (``check_after``), and :meth:`AlimTalk.check` reads the
single-message query ``GET …/messages/{requestId}/{recipientSeq}``: ``messageStatus``
COMPLETED / FAILED / CANCEL (READY until known) and ``resendStatus`` RSC01 (no resend),
RSC02 / RSC03 (resend pending / under way), RSC04 (resent as LMS), RSC05 (resend failed).

Errors:

=====================================  =============================================
recipient not +82 (prepare)            PermanentSendError(reason="unsupported_country")
recipient not E.164 (prepare)          PermanentSendError(reason="invalid_number", suppress)
result 3019, no fallback possible      PermanentSendError(reason="no_kakaotalk")
other non-zero result / header code    PermanentSendError(reason="rejected")
HTTP 401, 403                          PermanentSendError(reason="provider_auth")
HTTP 429                               TransientSendError(retry_after=Retry-After)
HTTP 500, 503 and other 5xx            TransientSendError
HTTP 502, 504; timeout, lost connection  ConnectionError (outcome unknown)
=====================================  =============================================
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from senders.channels.base import Delivery, Outgoing, SendResult
from senders.channels.sms import E164, retry_after
from senders.errors import PermanentSendError, TransientSendError
from settings import Settings

logger = logging.getLogger(__name__)

#: KakaoTalk's result code for "the recipient is not a KakaoTalk user".
NOT_A_KAKAO_USER = 3019
API_PATH = "/alimtalk/v2.3/appkeys/{app_key}/messages"
QUERY_PATH = API_PATH + "/{request_id}/{recipient_seq}"


class AlimTalk:
    """KakaoTalk AlimTalk with an LMS fallback. ``prepare`` builds; ``deliver`` POSTs. One
    instance sends any number of messages in turn through one client (HTTP keep-alive)."""

    name = "kakao"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: httpx.Client | None = None
        self._request: httpx.Request | None = None

    def __enter__(self) -> AlimTalk:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def prepare(self, message: Outgoing) -> None:
        """Validate and build the provider request. No network."""
        s = self.settings
        self._request = None
        if not (s.alimtalk_app_key and s.alimtalk_secret and s.alimtalk_sender_key):
            raise PermanentSendError(
                "AlimTalk is not configured (NUDGE_ALIMTALK_APP_KEY, NUDGE_ALIMTALK_SECRET, "
                "NUDGE_ALIMTALK_SENDER_KEY)",
                reason="not_configured",
            )
        if not message.template:
            raise PermanentSendError("AlimTalk needs a template code", reason="no_template")
        recipient = message.recipient.strip()
        if not E164.match(recipient):
            raise PermanentSendError(
                "recipient is not an E.164 phone number", reason="invalid_number", suppress=True
            )
        if not recipient.startswith("+82"):
            raise PermanentSendError(
                "AlimTalk reaches Korean (+82) numbers only", reason="unsupported_country"
            )
        entry: dict[str, Any] = {
            "recipientNo": "0" + recipient.removeprefix("+82"),
            "templateParameter": dict(message.variables),
        }
        if s.alimtalk_resend_from:
            entry["resendParameter"] = {
                "isResend": True,
                "resendType": "LMS",
                "resendTitle": message.variables.get("store") or message.subject or "",
                "resendContent": message.text,
                "resendSendNo": s.alimtalk_resend_from,
            }
        body = {
            "senderKey": s.alimtalk_sender_key,
            "templateCode": message.template,
            "recipientList": [entry],
        }
        if self._client is None:  # one client (HTTP keep-alive) for every send
            self._client = httpx.Client(
                base_url=s.alimtalk_base_url.rstrip("/"),
                timeout=httpx.Timeout(s.alimtalk_timeout_seconds),
            )
        self._request = self._client.build_request(
            "POST",
            API_PATH.format(app_key=s.alimtalk_app_key),
            json=body,
            headers={
                "X-Secret-Key": s.alimtalk_secret,
                # NHN Cloud's name for it, and the common one: a repeated request is refused.
                "X-NC-API-IDEMPOTENCY-KEY": message.message_id,
                "Idempotency-Key": message.message_id,
                "Content-Type": "application/json;charset=UTF-8",
            },
        )

    def deliver(self) -> SendResult:
        """Send the request; read the one recipient's result."""
        assert self._client is not None and self._request is not None, "prepare() first"
        request, self._request = self._request, None
        try:
            response = self._client.send(request)
        except httpx.TransportError as exc:  # timeouts, refused or dropped connections
            raise ConnectionError(
                f"AlimTalk: connection lost during send ({type(exc).__name__})"
            ) from exc
        return self._result(response)

    def _result(self, response: httpx.Response) -> SendResult:
        status = response.status_code
        if status >= 300:
            raise classify_http(status, response.headers.get("retry-after"))
        try:
            answer = response.json()
            header = answer["header"]
        except (ValueError, KeyError, TypeError) as exc:
            # A 2xx the provider may have acted on: not safe to send again.
            raise ConnectionError(f"AlimTalk: unreadable answer (HTTP {status})") from exc
        if not header.get("isSuccessful", False):
            raise PermanentSendError(
                f"AlimTalk refused the request: code {header.get('resultCode')}",
                reason="rejected",
            )
        message = answer.get("message") or {}
        results = message.get("sendResults") or [{}]
        result = results[0]
        code = result.get("resultCode", 0)
        if code == NOT_A_KAKAO_USER:
            raise PermanentSendError(
                "recipient has no KakaoTalk and no fallback was sent", reason="no_kakaotalk"
            )
        if code != 0:
            raise PermanentSendError(f"AlimTalk refused the recipient: code {code}")
        provider_id = f"{message.get('requestId', '')}:{result.get('recipientSeq', 1)}"
        resend = result.get("resendType")
        if resend:
            return SendResult(
                provider_id=provider_id,
                cost=self.settings.lms_price,
                status="accepted",
                detail=f"fallback:{str(resend).lower()}",
            )
        # Accepted; whether as AlimTalk or as its fallback the provider says later.
        return SendResult(
            provider_id=provider_id,
            cost=self.settings.alimtalk_price,
            status="accepted",
            check_after=self.settings.alimtalk_check_seconds,
        )

    def check(self, provider_id: str) -> Delivery:
        """How the message ``provider_id`` ("requestId:recipientSeq") ended, if known yet.

        Raises TransientSendError or ConnectionError when the provider cannot say now.
        """
        s = self.settings
        request_id, _, seq = provider_id.rpartition(":")
        if self._client is None:
            self._client = httpx.Client(
                base_url=s.alimtalk_base_url.rstrip("/"),
                timeout=httpx.Timeout(s.alimtalk_timeout_seconds),
            )
        try:
            response = self._client.get(
                QUERY_PATH.format(
                    app_key=s.alimtalk_app_key, request_id=request_id, recipient_seq=seq
                ),
                headers={"X-Secret-Key": s.alimtalk_secret or ""},
            )
        except httpx.TransportError as exc:
            raise ConnectionError(f"AlimTalk query failed ({type(exc).__name__})") from exc
        if response.status_code >= 300:
            raise classify_http(response.status_code, response.headers.get("retry-after"))
        try:
            message = response.json().get("message") or {}
        except (ValueError, AttributeError):
            message = {}
        return _delivery(message, s)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self._request = None


def _delivery(message: dict[str, Any], settings: Settings) -> Delivery:
    status, resend = message.get("messageStatus"), message.get("resendStatus")
    code = message.get("resultCode")
    if resend == "RSC04":
        return Delivery(True, "delivered", cost=settings.lms_price, detail="fallback:lms")
    if resend == "RSC05":
        return Delivery(
            True,
            "failed",
            cost=0.0,
            detail="fallback:lms",
            error=f"AlimTalk result {code}; the LMS fallback failed too",
        )
    if status == "COMPLETED":
        return Delivery(True, "delivered", cost=settings.alimtalk_price)
    if resend in ("RSC02", "RSC03"):  # AlimTalk failed; the LMS is on its way
        return Delivery(False)
    if status in ("FAILED", "CANCEL"):  # nothing reached the recipient: nothing billed
        return Delivery(True, "failed", cost=0.0, error=f"AlimTalk result {code}")
    return Delivery(False)


def classify_http(status: int, retry_after_header: str | None = None) -> Exception:
    """The send error for an AlimTalk provider's HTTP error ``status``."""
    what = f"AlimTalk provider answered HTTP {status}"
    if status == 429:
        return TransientSendError(what, retry_after=retry_after(retry_after_header))
    if status in (401, 403):
        logger.error("The AlimTalk provider refused Nudge's app key or secret (HTTP %d)", status)
        return PermanentSendError(what, reason="provider_auth")
    if status in (502, 504):
        return ConnectionError(f"{what}: a gateway answered, the provider may hold the message")
    if status >= 500:
        return TransientSendError(what)
    return PermanentSendError(what, reason="rejected")
