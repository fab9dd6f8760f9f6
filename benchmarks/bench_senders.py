"""Sends per second of one worker process, next to a no-op actor on the same broker.

One ``nudge worker`` process (pinned to CPU 1) works through N due touches: each is claimed,
re-checked (order, consent, suppression, cap, quiet hours), rendered, handed to the channel
and recorded — the whole send path. The local peers (an SMTP server, and a Twilio-compatible
HTTP server when the SMS channel is installed) run in this process on CPU 0. The ceiling is
the same worker draining N no-op messages from the same Redis.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
import sqlalchemy as sa

from tests.services import port_open

N_SENDS = 2000
N_NOOP = 5000
THREADS = 8


def _prepare(url: str, n: int, channel: str) -> list[str]:
    """N abandoned carts whose first touch on ``channel`` is due now. Returns decision ids."""
    from optimizer import FixedSchedulePolicy
    from senders import journey
    from settings import Settings
    from store.db import get_engine
    from store.events import apply_events, decision_t
    from store.schemas import EventIn
    from store.stores import create_store
    from tests.factories import cart_event

    settings = Settings(database_url=url)
    engine = get_engine(settings.sqlalchemy_url)
    with engine.begin() as conn:
        store_id, _ = create_store(conn, name=f"bench-{uuid.uuid4().hex[:6]}")
    past = datetime.now(UTC) - timedelta(hours=2)
    events = []
    for i in range(n):
        e = cart_event(
            f"c-{i}", customer_id=f"u-{i}", email=f"shopper{i}@example.com", occurred_at=past
        )
        e["customer"]["phone"] = f"+1555{i:07d}"
        e["customer"]["consents"]["sms"] = True
        events.append(EventIn.model_validate(e))
    with engine.begin() as conn:
        applied = apply_events(conn, store_id=store_id, events=events, now=past)
    rt = journey.Runtime(
        settings=settings,
        engine=engine,
        policy_for=lambda _s: FixedSchedulePolicy(offsets_minutes=(0,), channel=channel),
        clock=lambda: datetime.now(UTC) - timedelta(minutes=1),
    )
    for cart_id in applied.checks:
        journey.check_cart(rt, cart_id)
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(decision_t.c.id).where(
                    decision_t.c.store_id == store_id, decision_t.c.state == "scheduled"
                )
            ).scalars()
        )


def _count_sent(url: str, ids: list[str]) -> int:
    from settings import Settings
    from store.db import get_engine
    from store.events import decision_t

    with get_engine(Settings(database_url=url).sqlalchemy_url).connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(
                    decision_t.c.id.in_(ids), decision_t.c.state == "sent"
                )
            ).scalar_one()
        )


def _worker(env: dict[str, str]) -> subprocess.Popen[Any]:
    nudge = str(Path(sys.executable).parent / "nudge")
    return subprocess.Popen(
        ["taskset", "-c", "1", nudge, "worker", "--threads", str(THREADS)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _enqueue(env: dict[str, str], actor: str, args: list[Any]) -> None:
    from senders import actors
    from senders.broker import setup_broker
    from settings import Settings

    settings = Settings(
        redis_url=env["NUDGE_REDIS_URL"], redis_namespace=env["NUDGE_REDIS_NAMESPACE"]
    )
    setup_broker(settings)
    target = getattr(actors, actor)
    for arg in args:
        target.send(arg)


def _timed_drain(done: Any, total: int, timeout: float = 600.0) -> float:
    """Seconds from the first message done to the last (worker start-up excluded)."""
    deadline = time.perf_counter() + timeout
    started: float | None = None
    first = 0
    while time.perf_counter() < deadline:
        n = done()
        if started is None and n > 0:
            started, first = time.perf_counter(), n
        if n >= total:
            assert started is not None
            # Rate over the messages done after the first poll that saw any.
            return (time.perf_counter() - started) * total / max(total - first, 1)
        time.sleep(0.02)
    raise TimeoutError(f"only {done()} of {total} done in {timeout}s")


def _measure_channel(
    channel: str, pg_url: str, env: dict[str, str], ceiling: float
) -> dict[str, Any]:
    ids = _prepare(pg_url, N_SENDS, channel)
    _enqueue(env, "send_touch", ids)  # all queued before the worker starts
    worker = _worker(env)
    try:
        seconds = _timed_drain(lambda: _count_sent(pg_url, ids), len(ids))
    finally:
        worker.terminate()
        worker.wait()
    rate = len(ids) / seconds
    return {
        "actor": f"send_touch ({channel})",
        "messages": len(ids),
        "seconds": round(seconds, 2),
        "per_s": round(rate, 1),
        "x_noop": round(rate / ceiling, 3),
    }


def run() -> dict[str, Any]:
    from nudge.migrate import upgrade
    from nudge.smtp_sink import SmtpSink
    from tests.services import postgres_database, postgres_server

    redis_url = "redis://127.0.0.1:6379/0"
    if not port_open("127.0.0.1", 6379):
        raise RuntimeError(
            "this benchmark needs Redis on 127.0.0.1:6379 (apt-get install redis-server)"
        )
    namespace = f"nudge-bench-{uuid.uuid4().hex[:6]}"
    rows: list[dict[str, Any]] = []
    with (
        postgres_server() as server,
        postgres_database(server) as pg,
        SmtpSink() as sink,
        tempfile.TemporaryDirectory() as tmp,
    ):
        upgrade(pg.replace("postgresql://", "postgresql+psycopg://"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("NUDGE_")}
        env.update(
            NUDGE_DATABASE_URL=pg,
            NUDGE_REDIS_URL=redis_url,
            NUDGE_REDIS_NAMESPACE=namespace,
            NUDGE_SMTP_PORT=str(sink.port),
            NUDGE_DATA_DIR=tmp,
            NUDGE_LOG_LEVEL="WARNING",
            NUDGE_SWEEP_INTERVAL_SECONDS="3600",  # the benchmark queues; no sweep competes
        )
        # The ceiling: the same worker draining no-op messages from the same Redis.
        counter = f"{namespace}:noop"
        client = redis.Redis.from_url(redis_url)
        _enqueue(env, "noop", [counter] * N_NOOP)
        worker = _worker(env)
        try:
            seconds = _timed_drain(lambda: int(client.get(counter) or 0), N_NOOP)
        finally:
            worker.terminate()
            worker.wait()
        ceiling = N_NOOP / seconds
        rows.append(
            {
                "actor": "noop",
                "messages": N_NOOP,
                "seconds": round(seconds, 2),
                "per_s": round(ceiling, 1),
                "x_noop": 1.0,
            }
        )
        rows.append(_measure_channel("email", pg, env, ceiling))
        assert len(sink.messages) >= N_SENDS, "the SMTP server did not get every email"
        client.delete(counter)
    sends = [r for r in rows if r["actor"].startswith("send_touch")]
    return {
        "rows": rows,
        "setup": {
            "worker": f"one `nudge worker --threads {THREADS}` process pinned to CPU 1",
            "database": "PostgreSQL",
            "broker": redis_url,
        },
        "targets": {
            "sends_per_s>=300": all(r["per_s"] >= 300 for r in sends),
            "sends>=0.3x_noop": all(r["x_noop"] >= 0.3 for r in sends),
        },
    }
