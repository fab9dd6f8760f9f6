"""How sent messages ended, when the provider says so only later.

KakaoTalk AlimTalk providers accept a message first and report afterwards whether it reached
KakaoTalk or went out as its SMS/LMS fallback (or not at all). A message whose send result
asked to be checked carries ``next_check_at``; the sweep puts the due ones on the broker
(:func:`due`), and :func:`check_deliveries` asks the provider: a final answer sets the
message's ``delivery_status``, its route (``detail="fallback:lms"``) and its real cost (an
LMS costs more than an AlimTalk; a message that reached nobody costs nothing), and the
decision's outcome follows if it was recorded already. No final answer: asked again later,
for at most ``NUDGE_ALIMTALK_CHECK_HOURS``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from senders.channels import open_channel
from senders.channels.base import Delivery
from senders.errors import SendError
from senders.journey import Runtime
from senders.sql import among
from store.events import message_t, outcome_t
from store.models import MessageStatus

logger = logging.getLogger(__name__)

#: Channels whose adapter can say later how a message ended.
CHECKED = ("kakao",)


def due(conn: sa.Connection, rt: Runtime, now: datetime, limit: int) -> list[str]:
    """Messages whose check is due; each is not due again for a check interval (so the next
    sweep does not queue it a second time while this check runs)."""
    ids = list(
        conn.execute(
            sa.select(message_t.c.id)
            .where(
                message_t.c.next_check_at <= now,
                message_t.c.status == MessageStatus.SENT,
                among(conn, message_t.c.channel, CHECKED),
            )
            .limit(limit)
        ).scalars()
    )
    if ids:
        conn.execute(
            sa.update(message_t)
            .where(among(conn, message_t.c.id, ids))
            .values(next_check_at=now + _interval(rt))
        )
    return ids


def check_deliveries(rt: Runtime, message_ids: Sequence[str]) -> int:
    """Ask the providers how these messages ended; returns how many are settled now."""
    with rt.engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                message_t.c.id,
                message_t.c.channel,
                message_t.c.provider_id,
                message_t.c.decision_id,
                message_t.c.sent_at,
            ).where(
                among(conn, message_t.c.id, list(message_ids)),
                message_t.c.status == MessageStatus.SENT,
                message_t.c.next_check_at.is_not(None),
            )
        ).all()
    answers: list[tuple[Any, Delivery | None]] = []
    for channel in {r.channel for r in rows}:
        with open_channel(channel, rt.settings) as adapter:
            check = getattr(adapter, "check", None)
            for row in (r for r in rows if r.channel == channel):
                answer = None
                if check is not None and row.provider_id:
                    try:
                        answer = check(row.provider_id)
                    except (SendError, ConnectionError, OSError) as exc:
                        logger.info("Message %s: the provider cannot say yet (%s)", row.id, exc)
                answers.append((row, answer))
    if not answers:
        return 0
    settled = 0
    with rt.engine.begin() as conn:
        now = rt.clock()
        for row, answer in answers:
            if answer is not None and answer.final:
                _settle(conn, row, answer)
                settled += 1
            elif row.sent_at is None or row.sent_at < now - timedelta(
                hours=rt.settings.alimtalk_check_hours
            ):
                logger.warning("Message %s: the provider never said how it ended", row.id)
                conn.execute(
                    sa.update(message_t)
                    .where(message_t.c.id == row.id)
                    .values(delivery_status="unknown", next_check_at=None)
                )
            else:
                conn.execute(
                    sa.update(message_t)
                    .where(message_t.c.id == row.id)
                    .values(next_check_at=now + _interval(rt))
                )
    return settled


def _settle(conn: sa.Connection, row: Any, answer: Delivery) -> None:
    values: dict[str, Any] = {"delivery_status": answer.status, "next_check_at": None}
    if answer.detail is not None:
        values["detail"] = answer.detail
    if answer.error is not None:
        values["error"] = answer.error[:500]
    if answer.cost is not None:
        values["cost"] = answer.cost
        # A decision whose outcome is recorded already carries the cost it really had.
        conn.execute(
            sa.update(outcome_t)
            .where(outcome_t.c.decision_id == row.decision_id, outcome_t.c.message_sent)
            .values(message_cost=answer.cost)
        )
    conn.execute(sa.update(message_t).where(message_t.c.id == row.id).values(values))
    logger.info(
        "Message %s %s%s", row.id, answer.status, f" ({answer.detail})" if answer.detail else ""
    )


def _interval(rt: Runtime) -> timedelta:
    return timedelta(seconds=rt.settings.alimtalk_check_seconds)
