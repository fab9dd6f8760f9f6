"""Sends per second of one worker process, next to a no-op actor on the same broker.

One ``nudge worker`` process (pinned to CPU 1) works through N due touches per channel: each
is claimed, re-checked (order, consent, suppression, cap, quiet hours), rendered, handed to
the channel and recorded, and the journey's next touch is decided — the whole send path.
The touches reach the broker as the worker's sweep puts them there (``journey.sweep`` +
``actors.enqueue``: batches of touches due together), all before the worker starts. A send
counts when the local peer has received it: the SMTP server for email, the Twilio-compatible
HTTP server for SMS; both run in this process, pinned to CPU 0. The ceiling is the same
worker draining N no-op messages from the same Redis, in the same run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
import sqlalchemy as sa

from tests.services import port_open

N_SENDS = 2000
N_NOOP = 5000
THREADS = 8
TWILIO_SID, TWILIO_TOKEN = "AC" + "5" * 32, "bench-auth-token"


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
        journey.check_cart(rt, cart_id)  # its follow-ups are dropped: nothing is queued yet
    with engine.begin() as conn:
        ids = list(
            conn.execute(
                sa.update(decision_t)
                .where(decision_t.c.store_id == store_id, decision_t.c.state == "scheduled")
                .values(enqueued_at=None)  # as for touches decided hours ago: the sweep's
                .returning(decision_t.c.id)
            ).scalars()
        )
    return ids


def _queue_due(url: str, env: dict[str, str]) -> int:
    """What the worker's sweep does with due touches: find them, put them on the broker."""
    from optimizer import FixedSchedulePolicy
    from senders import actors, journey
    from senders.broker import setup_broker
    from settings import Settings
    from store.db import get_engine

    settings = Settings(
        database_url=url,
        redis_url=env["NUDGE_REDIS_URL"],
        redis_namespace=env["NUDGE_REDIS_NAMESPACE"],
    )
    setup_broker(settings)
    rt = journey.Runtime(
        settings=settings,
        engine=get_engine(settings.sqlalchemy_url),
        policy_for=lambda _s: FixedSchedulePolicy(),
    )
    report = journey.sweep(rt, limit=N_SENDS)
    # Shared out over the worker's threads, as its own sweep does (NUDGE_WORKER_THREADS).
    actors.enqueue(report.follow_ups, spread=THREADS)
    return report.sends


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


def _timed_drain(
    done: Any, total: int, cpu: Callable[[], float] = lambda: 0.0, timeout: float = 600.0
) -> tuple[float, float]:
    """Seconds from the first message done to the last (worker start-up excluded), scaled to
    all ``total``; and the worker's CPU seconds over the same span, scaled the same way."""
    deadline = time.perf_counter() + timeout
    started: float | None = None
    first, cpu_first = 0, 0.0
    while time.perf_counter() < deadline:
        n = done()
        if started is None and n > 0:
            started, first, cpu_first = time.perf_counter(), n, cpu()
        if n >= total:
            assert started is not None
            # Over the messages done after the first poll that saw any.
            scale = total / max(n - first, 1)
            return (time.perf_counter() - started) * scale, (cpu() - cpu_first) * scale
        time.sleep(0.02)
    raise TimeoutError(f"only {done()} of {total} done in {timeout}s")


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure_channel(
    channel: str,
    pg_url: str,
    env: dict[str, str],
    ceiling: float,
    received: Callable[[], int],
) -> dict[str, Any]:
    ids = _prepare(pg_url, N_SENDS, channel)
    before = received()
    queued = _queue_due(pg_url, env)  # all queued before the worker starts
    assert queued == len(ids), f"the sweep found {queued} of {len(ids)} due touches"
    worker = _worker(env)
    peers = time.process_time()
    try:
        seconds, cpu = _timed_drain(
            lambda: received() - before, len(ids), lambda: _cpu_of(worker.pid)
        )
    finally:
        peers = time.process_time() - peers
        worker.terminate()
        worker.wait()
    rate = len(ids) / seconds
    return {
        "actor": f"send_touches ({channel})",
        "messages": len(ids),
        "seconds": round(seconds, 2),
        "per_s": round(rate, 1),
        "x_noop": round(rate / ceiling, 3),
        "worker_cpu_ms": round(1000 * cpu / len(ids), 3),
        # The local peers' CPU per send (this process, start-up of the worker included).
        "peer_cpu_ms": round(1000 * peers / len(ids), 3),
    }


def run() -> dict[str, Any]:
    cpus = os.sched_getaffinity(0)
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {0})  # the peers here on CPU 0, the worker on CPU 1
    try:
        return _run()
    finally:
        os.sched_setaffinity(0, cpus)  # the benchmarks after this one get every CPU again


def _run() -> dict[str, Any]:
    from nudge.migrate import upgrade
    from nudge.provider_sinks import TwilioSink
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
        TwilioSink(TWILIO_SID, TWILIO_TOKEN) as twilio,
        tempfile.TemporaryDirectory() as tmp,
    ):
        upgrade(pg.replace("postgresql://", "postgresql+psycopg://"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("NUDGE_")}
        env.update(
            NUDGE_DATABASE_URL=pg,
            NUDGE_REDIS_URL=redis_url,
            NUDGE_REDIS_NAMESPACE=namespace,
            NUDGE_SMTP_PORT=str(sink.port),
            NUDGE_TWILIO_ACCOUNT_SID=TWILIO_SID,
            NUDGE_TWILIO_AUTH_TOKEN=TWILIO_TOKEN,
            NUDGE_TWILIO_FROM="+15005550006",
            NUDGE_TWILIO_BASE_URL=twilio.base_url,
            NUDGE_DATA_DIR=tmp,
            NUDGE_WORKER_THREADS=str(THREADS),
            NUDGE_LOG_LEVEL="WARNING",
            NUDGE_SWEEP_INTERVAL_SECONDS="3600",  # the benchmark queues; no sweep competes
        )
        # The ceiling: the same worker draining no-op messages from the same Redis.
        counter = f"{namespace}:noop"
        client = redis.Redis.from_url(redis_url)
        _enqueue(env, "noop", [counter] * N_NOOP)
        worker = _worker(env)
        try:
            seconds, cpu = _timed_drain(
                lambda: int(client.get(counter) or 0), N_NOOP, lambda: _cpu_of(worker.pid)
            )
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
                "worker_cpu_ms": round(1000 * cpu / N_NOOP, 3),
            }
        )
        rows.append(_measure_channel("email", pg, env, ceiling, lambda: len(sink.messages)))
        rows.append(_measure_channel("sms", pg, env, ceiling, lambda: len(twilio.messages)))
        # Counted as received; and none twice (each message names its record once).
        emails = [re.search(rb"X-Nudge-Message: (\w+)", m.raw) for m in sink.messages]
        assert len({e.group(1) for e in emails if e}) == len(emails) == N_SENDS
        assert len({m.form["Body"] for m in twilio.messages}) == len(twilio.messages) == N_SENDS
        client.delete(counter)
        for key in client.scan_iter(f"{namespace}*"):
            client.delete(key)
    sends = [r for r in rows if r["actor"].startswith("send_touches")]
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
