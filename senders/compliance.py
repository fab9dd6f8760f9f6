"""What the law and the store allow: consent, suppressions, quiet hours, frequency caps.

Enforced twice: when a touch is scheduled (its time moves out of quiet hours) and again when
it is sent (everything re-checked, since consent, suppressions and caps change meanwhile).

Presets:

- ``KR`` — 정보통신망법 제50조: no advertising messages 21:00–08:00 in the recipient's time
  without separate night consent; messages start with "(광고)", carry the sender's name and a
  free way to opt out.
- ``US`` — TCPA practice: contact between 08:00 and 21:00 recipient's local time.

A store may override any rule through its ``rules`` JSON, e.g.
``{"quiet_start": "20:00", "quiet_end": "09:00", "sms_per_day": 1, "messages_per_week": 3}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from senders.sql import among
from store.events import cart_t, decision_t, message_t
from store.models import MessageStatus, PushSubscription
from store.suppressions import normalise, suppression_t

push_t: sa.Table = PushSubscription.__table__  # type: ignore[attr-defined]

#: Message states that count against the caps: sent, maybe sent (a hand-off in progress or a
#: worker lost during one), and claimed for sending (prepared). Counting claimed sends is what
#: keeps two workers claiming touches of one customer at once from both passing a cap: each
#: claim locks the customer and sees the other's claim.
_COUNTED = (
    MessageStatus.SENT,
    MessageStatus.UNCERTAIN,
    MessageStatus.HANDOFF,
    MessageStatus.PREPARED,
)
#: Every channel, in the order reachable_channels lists them.
CHANNELS = ("email", "sms", "push", "kakao")


@dataclass(frozen=True)
class Rules:
    quiet_start: time | None = time(21, 0)  # quiet from (local time)…
    quiet_end: time | None = time(8, 0)  # …until
    night_consent_lifts_quiet: bool = False  # KR: a separate night consent allows night sends
    sms_per_day: int | None = 1  # per customer, SMS and KakaoTalk together, rolling 24 h
    messages_per_week: int | None = 3  # per customer, every channel, rolling 7 days
    advertising_prefix: str | None = None  # "(광고)" in Korea
    opt_out_notice: str = "Unsubscribe"

    @classmethod
    def for_store(cls, country: str, overrides: Mapping[str, Any] | None = None) -> Rules:
        rules = PRESETS.get(country.upper(), PRESETS["US"])
        if overrides:
            rules = replace(rules, **_parse_overrides(overrides))
        return rules

    def in_quiet_hours(self, local: time, *, night_consent: bool) -> bool:
        if self.quiet_start is None or self.quiet_end is None:
            return False
        if night_consent and self.night_consent_lifts_quiet:
            return False
        if self.quiet_start <= self.quiet_end:
            return self.quiet_start <= local < self.quiet_end
        return local >= self.quiet_start or local < self.quiet_end  # across midnight


PRESETS: dict[str, Rules] = {
    "US": Rules(),
    "KR": Rules(
        night_consent_lifts_quiet=True,
        advertising_prefix="(광고)",
        opt_out_notice="무료수신거부",
    ),
}


def _parse_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    known = set(Rules.__dataclass_fields__)
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown rules {sorted(unknown)}; known: {sorted(known)}")
    parsed = dict(overrides)
    for key in ("quiet_start", "quiet_end"):
        if isinstance(parsed.get(key), str):
            parsed[key] = time.fromisoformat(parsed[key])
    return parsed


def next_allowed(
    at: datetime, *, timezone: str | None, rules: Rules, night_consent: bool
) -> datetime:
    """``at``, or the first minute after it outside the recipient's quiet hours.

    The recipient's own time zone decides; without one, UTC is used (the conservative choice
    would need a guess about where the customer is, which the store should provide).
    """
    zone = ZoneInfo(timezone) if timezone else ZoneInfo("UTC")
    local = at.astimezone(zone)
    if not rules.in_quiet_hours(local.time(), night_consent=night_consent):
        return at
    assert rules.quiet_end is not None
    end = local.replace(
        hour=rules.quiet_end.hour, minute=rules.quiet_end.minute, second=0, microsecond=0
    )
    if end <= local:
        end += timedelta(days=1)
    # Wall-clock arithmetic in the zone, then back to UTC (DST-safe through ZoneInfo).
    return end.replace(tzinfo=zone).astimezone(at.tzinfo)


def contact_for(channel: str, customer: Any, push_endpoint: str | None = None) -> str | None:
    """The address a channel reaches this customer at, if consented. None: not reachable."""
    if customer is None:
        return None
    if channel == "email":
        return customer.email if customer.email and customer.consent_email else None
    if channel == "sms":
        return customer.phone if customer.phone and customer.consent_sms else None
    if channel == "kakao":
        # KakaoTalk reaches Korean numbers only; its LMS fallback needs the SMS consent too.
        phone = customer.phone
        return phone if phone and phone.startswith("+82") and customer.consent_sms else None
    if channel == "push":
        return push_endpoint if customer.consent_push else None
    return None


def reachable_many(conn: sa.Connection, customers: Sequence[Any]) -> dict[int, list[str]]:
    """Each customer's channels with a contact, consent and no suppression, in a stable order
    (customers are rows with ``id`` and ``store_id``; two queries for any number)."""
    endpoints = push_endpoints(conn, [c.id for c in customers])
    candidates: dict[int, dict[str, str]] = {}
    for customer in customers:
        found = {}
        for channel in CHANNELS:
            address = contact_for(channel, customer, endpoints.get(customer.id))
            if address:
                found[channel] = address
        candidates[customer.id] = found
    suppressed = suppressed_among(
        conn,
        [
            (customer.store_id, channel, address)
            for customer in customers
            for channel, address in candidates[customer.id].items()
        ],
    )
    return {
        customer.id: [
            channel
            for channel, address in candidates[customer.id].items()
            if (customer.store_id, channel, normalise(channel, address)) not in suppressed
        ]
        for customer in customers
    }


def push_endpoints(conn: sa.Connection, customer_ids: Iterable[int]) -> dict[int, str]:
    """Each customer's newest push subscription endpoint."""
    return {
        row.customer_id: row.endpoint for row in push_subscriptions(conn, customer_ids).values()
    }


def push_subscriptions(conn: sa.Connection, customer_ids: Iterable[int]) -> dict[int, Any]:
    """Each customer's newest push subscription (the row), for those who have one."""
    ids = list(set(customer_ids))
    if not ids:
        return {}
    newest: dict[int, Any] = {}
    for row in conn.execute(
        sa.select(push_t).where(among(conn, push_t.c.customer_id, ids)).order_by(push_t.c.id)
    ):
        newest[row.customer_id] = row
    return newest


def suppressed_among(
    conn: sa.Connection, candidates: Sequence[tuple[str, str, str]]
) -> set[tuple[str, str, str]]:
    """Which of ``(store_id, channel, address)`` are suppressed (addresses normalised)."""
    if not candidates:
        return set()
    wanted = {
        (store, channel, normalise(channel, address)) for store, channel, address in candidates
    }
    rows = conn.execute(
        sa.select(suppression_t.c.store_id, suppression_t.c.channel, suppression_t.c.address).where(
            among(conn, suppression_t.c.store_id, {w[0] for w in wanted}),
            among(conn, suppression_t.c.address, {w[2] for w in wanted}),
        )
    )
    return {(r.store_id, r.channel, r.address) for r in rows} & wanted


def recent_messages(
    conn: sa.Connection, customer_ids: Iterable[int], *, since: datetime
) -> dict[int, list[tuple[str, str, datetime]]]:
    """Per customer: (message id, channel, created_at) of what counts against the caps."""
    ids = list(set(customer_ids))
    out: dict[int, list[tuple[str, str, datetime]]] = {i: [] for i in ids}
    if not ids:
        return out
    rows = conn.execute(
        sa.select(cart_t.c.customer_id, message_t.c.id, message_t.c.channel, message_t.c.created_at)
        .select_from(
            message_t.join(decision_t, decision_t.c.id == message_t.c.decision_id).join(
                cart_t, cart_t.c.id == decision_t.c.cart_id
            )
        )
        .where(
            among(conn, cart_t.c.customer_id, ids),
            among(conn, message_t.c.status, _COUNTED),
            message_t.c.created_at > since,
        )
    )
    for r in rows:
        out[r.customer_id].append((r.id, r.channel, r.created_at))
    return out


def cap_reached(
    conn: sa.Connection,
    *,
    customer_id: int,
    channel: str,
    now: datetime,
    rules: Rules,
    day: timedelta = timedelta(days=1),
) -> str | None:
    """Which frequency cap a send on ``channel`` now would break, or None.

    ``day`` is how long a day lasts (shorter under ``NUDGE_TIME_SCALE``).
    """
    sent = recent_messages(conn, [customer_id], since=now - 7 * day)[customer_id]
    return cap_hit([(c, at) for _, c, at in sent], channel, now=now, rules=rules, day=day)


def cap_hit(
    sent: Sequence[tuple[str, datetime]],
    channel: str,
    *,
    now: datetime,
    rules: Rules,
    day: timedelta = timedelta(days=1),
) -> str | None:
    """:func:`cap_reached` over (channel, created_at) of the customer's counted messages."""
    week = [(c, at) for c, at in sent if at > now - 7 * day]
    if rules.messages_per_week is not None and len(week) >= rules.messages_per_week:
        return "cap_week"
    if rules.sms_per_day is not None and channel in ("sms", "kakao"):
        texts = [1 for c, at in week if c in ("sms", "kakao") and at > now - day]
        if len(texts) >= rules.sms_per_day:
            return "cap_sms_day"
    return None
