"""Every dashboard page's full render with 1,000,000 decisions in PostgreSQL (target < 2 s).

A throwaway database (dropped afterwards) gets one store with a month of traffic, seeded in
the database itself (``INSERT … SELECT generate_series``): about 550,000 abandoned carts, their
1,000,000 touch decisions (a running bandit experiment with a 15% persistent holdout, traffic
shifting towards the better arms day by day), the messages that went out (2% failed), opens
and clicks, the orders, every outcome whose window has closed, and a few thousand
suppressions. A second store and an older, stopped experiment fill the lists.

Each page is then run by Streamlit's AppTest (the page's whole script: queries, statistics,
charts, tables) with the query caches cleared before every run, as the first visitor of the
morning would see it. One warm-up round loads the modules; then ``ROUNDS`` timed rounds.
Wall-clock time is the target's measure (the database works in its own process); the
dashboard process's CPU time is reported next to it, since a shared machine distorts
wall-clock time.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

DECISIONS = int(os.environ.get("NUDGE_BENCH_UI_DECISIONS", "1000000"))
ROUNDS = int(os.environ.get("NUDGE_BENCH_UI_ROUNDS", "3"))
TOUCHES_PER_JOURNEY = 1.8  # holdout journeys have 1 touch, the others 1 to 3 until they order
TARGET_S = 2.0
DAYS = 30
PAGES = {
    "overview": "app_pages/overview.py",
    "experiments": "app_pages/experiments.py",
    "segments": "app_pages/segments.py",
    "messages": "app_pages/messages.py",
    "settings": "app_pages/settings.py",
}
APP = str(Path(__file__).resolve().parents[1] / "ui" / "app.py")

# Arms of the running experiment; each day the bandit's traffic leans a little more towards
# the first (the best), as a learning bandit's would.
ARMS = ["email/30m/0%", "email/1440m/0%", "sms/30m/10%", "push/120m/0%", "holdout"]

SEED_SQL = [
    # Journeys: one per abandoned cart, spread over the last DAYS days.
    """
    CREATE TEMP TABLE j AS
    SELECT g AS n,
           now() - make_interval(secs => (:days * 86400.0) * (1 - g::float8 / :journeys))
               - interval '1 hour' AS abandoned_at,
           round((exp(ln(70) + 0.7 * sqrt(-2 * ln(1 - random()))
                  * cos(2 * pi() * random())))::numeric, 2)::float8 AS value,
           (ARRAY['mobile','mobile','mobile','desktop','desktop','tablet'])
               [1 + floor(random() * 6)::int] AS device,
           CASE WHEN random() < 0.35 THEN 'returning' ELSE 'new' END AS customer_type,
           (ARRAY['cart','cart','cart','checkout','checkout','payment'])
               [1 + floor(random() * 6)::int] AS stage,
           random() < 0.15 AS holdout,
           1 + floor(random() * 3)::int AS touches,
           random() AS u_order,
           random() AS u_lag
    FROM generate_series(1, :journeys) g
    """,
    """
    INSERT INTO cart (store_id, external_id, currency, value, items, status, checkout_stage,
                      device, last_event_at, last_activity_at, version, check_pending, journey,
                      abandoned_at, created_at)
    SELECT CAST(:store AS varchar), 'c-' || n, 'USD', value, '[]'::jsonb, 'abandoned', stage,
           device,
           abandoned_at - interval '30 minutes', abandoned_at - interval '30 minutes', 1,
           false, 1, abandoned_at, abandoned_at - interval '40 minutes'
    FROM j
    """,
    """
    CREATE TEMP TABLE d AS
    SELECT md5(j.n || '-' || t) AS id, c.id AS cart_id, j.n, t AS touch, j.holdout,
           j.abandoned_at + make_interval(hours => 24 * (t - 1)) AS decided_at,
           j.value, j.device, j.customer_type, j.stage, random() AS u_arm
    FROM j
    JOIN cart c ON c.store_id = CAST(:store AS varchar) AND c.external_id = 'c-' || j.n
    CROSS JOIN LATERAL generate_series(1, CASE WHEN j.holdout THEN 1 ELSE j.touches END) t
    """,
    # The bandit's split on a decision's day: arm 1 grows from 20% to 60% over the month.
    """
    CREATE TEMP TABLE da AS
    SELECT d.*, w.arm, w.p
    FROM d
    CROSS JOIN LATERAL (
        SELECT extract(epoch FROM now() - d.decided_at) / (:days * 86400.0) AS age
    ) a
    CROSS JOIN LATERAL (
        SELECT 0.2 + 0.4 * (1 - least(1, greatest(0, a.age))) AS p1
    ) s
    CROSS JOIN LATERAL (
        SELECT CASE
                 WHEN d.holdout THEN 'holdout'
                 WHEN d.u_arm < s.p1 THEN 'email/30m/0%'
                 WHEN d.u_arm < s.p1 + (1 - s.p1) * 0.35 THEN 'email/1440m/0%'
                 WHEN d.u_arm < s.p1 + (1 - s.p1) * 0.55 THEN 'sms/30m/10%'
                 WHEN d.u_arm < s.p1 + (1 - s.p1) * 0.70 THEN 'push/120m/0%'
                 ELSE 'holdout'
               END AS arm
    ) x
    CROSS JOIN LATERAL (
        SELECT x.arm,
               CASE
                 WHEN d.holdout THEN 1.0
                 WHEN x.arm = 'email/30m/0%' THEN s.p1
                 WHEN x.arm = 'email/1440m/0%' THEN (1 - s.p1) * 0.35
                 WHEN x.arm = 'sms/30m/10%' THEN (1 - s.p1) * 0.20
                 WHEN x.arm = 'push/120m/0%' THEN (1 - s.p1) * 0.15
                 ELSE (1 - s.p1) * 0.30
               END AS p
    ) w
    """,
    # A journey orders (or not) after its first touch; the better arms convert more.
    """
    CREATE TEMP TABLE conv AS
    SELECT da.n,
           da.abandoned_at_order AS ordered_at
    FROM (
        SELECT d1.n, d1.arm, d1.holdout,
               j.abandoned_at + make_interval(secs => 86400 * 6 * j.u_lag) AS abandoned_at_order,
               j.u_order
        FROM da d1 JOIN j ON j.n = d1.n
        WHERE d1.touch = 1
    ) da
    WHERE da.u_order < CASE
        WHEN da.arm = 'email/30m/0%' THEN 0.09
        WHEN da.arm = 'email/1440m/0%' THEN 0.075
        WHEN da.arm = 'sms/30m/10%' THEN 0.085
        WHEN da.arm = 'push/120m/0%' THEN 0.065
        ELSE 0.06 END
    """,
    """
    INSERT INTO decision (id, store_id, cart_id, journey, touch, policy, experiment_id, arm_key,
                          channel, delay_minutes, discount_pct, propensity, context, decided_at,
                          scheduled_for, state, state_reason, window_ends_at, updated_at)
    SELECT da.id, CAST(:store AS varchar), da.cart_id, 1, da.touch,
           CASE WHEN da.holdout THEN 'holdout' ELSE 'experiment' END,
           CAST(:experiment AS varchar), da.arm,
           NULLIF(split_part(da.arm, '/', 1), 'holdout'),
           COALESCE(NULLIF(regexp_replace(split_part(da.arm, '/', 2), '\\D', '', 'g'), ''),
                    '0')::int,
           COALESCE(NULLIF(regexp_replace(split_part(da.arm, '/', 3), '\\D', '', 'g'), ''),
                    '0')::float8,
           da.p,
           jsonb_build_object(
               'touch', da.touch, 'device', da.device, 'customer_type', da.customer_type,
               'checkout_stage', da.stage, 'cart_value', da.value, 'previous_abandons', 0,
               'channels', jsonb_build_array('email', 'sms', 'push'), 'local_hour', 14,
               'experiment', CAST(:experiment AS varchar), 'holdout', da.holdout,
               'attribution_window_days', 7.0),
           da.decided_at,
           da.decided_at + interval '30 minutes',
           CASE WHEN da.arm = 'holdout' THEN 'skipped'
                WHEN c.ordered_at IS NOT NULL AND c.ordered_at < da.decided_at THEN 'void'
                WHEN da.decided_at + interval '30 minutes' > now() THEN 'scheduled'
                WHEN random() < 0.02 THEN 'failed'
                ELSE 'sent' END,
           CASE WHEN da.arm = 'holdout' THEN 'holdout'
                WHEN c.ordered_at IS NOT NULL AND c.ordered_at < da.decided_at THEN 'ordered'
           END,
           da.decided_at + interval '7 days', da.decided_at
    FROM da LEFT JOIN conv c ON c.n = da.n
    -- a journey stops at its order; touches not yet due are not decided yet
    WHERE (c.ordered_at IS NULL OR da.decided_at <= c.ordered_at) AND da.decided_at <= now()
    """,
    """
    INSERT INTO message (id, decision_id, store_id, channel, recipient, status, provider_id,
                         cost, attempts, error, created_at, lease_until, sent_at, error_kind)
    SELECT md5('m-' || d.id), d.id, CAST(:store AS varchar), d.channel,
           CASE WHEN d.channel = 'email' THEN 'shopper-' || d.cart_id || '@example.com'
                ELSE '+1555' || lpad(d.cart_id::text, 7, '0') END,
           CASE WHEN d.state = 'failed' THEN 'failed' ELSE 'sent' END,
           'p-' || left(d.id, 12),
           CASE WHEN d.state = 'failed' THEN 0
                WHEN d.channel = 'sms' THEN 0.03 WHEN d.channel = 'push' THEN 0.0005
                ELSE 0.002 END,
           1,
           CASE WHEN d.state = 'failed' THEN '550 5.1.1 No such user here' END,
           d.scheduled_for, d.scheduled_for + interval '5 minutes',
           CASE WHEN d.state = 'sent' THEN d.scheduled_for END,
           CASE WHEN d.state = 'failed' THEN 'permanent' END
    FROM decision d
    WHERE d.store_id = CAST(:store AS varchar) AND d.state IN ('sent', 'failed')
    """,
    """
    INSERT INTO open (message_id, opened_at)
    SELECT m.id, m.created_at + interval '1 hour' FROM message m
    WHERE m.store_id = CAST(:store AS varchar) AND m.status = 'sent' AND m.channel = 'email'
      AND random() < 0.3
    """,
    """
    INSERT INTO click (message_id, clicked_at)
    SELECT o.message_id, o.opened_at + interval '1 minute' FROM open o
    JOIN message m ON m.id = o.message_id
    WHERE m.store_id = CAST(:store AS varchar) AND random() < 0.35
    """,
    # Outcomes: every decision whose order came in its window, or whose window has closed.
    """
    INSERT INTO outcome (decision_id, store_id, converted, order_id, revenue, discount_amount,
                         message_sent, message_cost, resolved_at)
    SELECT d.id, CAST(:store AS varchar), hit, CASE WHEN hit THEN 'o-' || da.n END,
           CASE WHEN hit THEN da.value ELSE 0 END,
           CASE WHEN hit AND d.state = 'sent' THEN da.value * d.discount_pct / 100 ELSE 0 END,
           d.state = 'sent', COALESCE(m.cost, 0),
           CASE WHEN hit THEN c.ordered_at ELSE d.window_ends_at END
    FROM decision d
    JOIN da ON da.id = d.id
    LEFT JOIN conv c ON c.n = da.n
    LEFT JOIN message m ON m.decision_id = d.id
    CROSS JOIN LATERAL (
        SELECT c.ordered_at IS NOT NULL AND c.ordered_at >= d.decided_at
               AND c.ordered_at < d.window_ends_at AS hit
    ) h
    WHERE d.store_id = CAST(:store AS varchar) AND (h.hit OR d.window_ends_at <= now())
    """,
    """
    UPDATE cart SET status = 'converted', converted_at = c.ordered_at, order_id = 'o-' || c.n,
                    order_value = cart.value
    FROM conv c
    WHERE cart.store_id = CAST(:store AS varchar) AND cart.external_id = 'c-' || c.n
    """,
    """
    INSERT INTO suppression (store_id, channel, address, reason, created_at)
    SELECT CAST(:store AS varchar), 'email', 'shopper-' || g || '@example.com',
           (ARRAY['unsubscribe', 'bounce', 'complaint'])[1 + g % 3],
           now() - make_interval(secs => 86400.0 * :days * random())
    FROM generate_series(1, :journeys / 100) g
    """,
]


def seed(url: str, decisions: int) -> dict[str, Any]:
    """The store, its experiments and ``decisions`` touch decisions. Returns what was made."""
    from datetime import UTC, datetime, timedelta

    from experiments import lifecycle
    from store.db import get_engine
    from store.stores import create_store

    engine = get_engine(url)
    now = datetime.now(UTC)
    journeys = int(decisions / TOUCHES_PER_JOURNEY)
    with engine.begin() as conn:
        store_id, _ = create_store(conn, name="Bench Outfitters")
        create_store(conn, name="Other Shop")
        old = lifecycle.Spec(name="spring-discounts", arms=["email/60m/0%", "email/60m/10%"])
        lifecycle.create(conn, store_id=store_id, spec=old, now=now - timedelta(days=90))
        lifecycle.transition(
            conn, store_id=store_id, name=old.name, action="stop", now=now - timedelta(days=45)
        )
        spec = lifecycle.Spec(
            name="autumn-timing",
            arms=[a for a in ARMS if a != "holdout"],
            holdout_share=0.15,
            margin_rate=0.4,
            max_touches=3,
        )
        row = lifecycle.create(conn, store_id=store_id, spec=spec, now=now - timedelta(days=31))
        lifecycle.transition(
            conn, store_id=store_id, name=spec.name, action="start", now=now - timedelta(days=31)
        )
    started = time.perf_counter()
    params = {"store": store_id, "experiment": row["id"], "journeys": journeys, "days": DAYS}
    steps: dict[str, float] = {}
    with engine.begin() as conn:
        # A throwaway database filled consistently by construction: skip the per-row foreign
        # key triggers (a third of the load time), as a bulk restore does.
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        conn.execute(sa.text("SET LOCAL work_mem = '256MB'"))
        for i, statement in enumerate(SEED_SQL, 1):
            name = f"{i:02d} " + " ".join(statement.split()[:4]).lower()
            print(f"  bench ui: seeding {name} …", file=sys.stderr, flush=True)
            step = time.perf_counter()
            used = {k: v for k, v in params.items() if f":{k}" in statement}
            conn.execute(sa.text(statement), used)
            steps[name] = round(time.perf_counter() - step, 1)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
        counts = {
            table: conn.execute(sa.text(f'SELECT count(*) FROM "{table}"')).scalar_one()
            for table in ("cart", "decision", "message", "outcome", "open", "click")
        }
    return {
        "store_id": store_id,
        "seconds": round(time.perf_counter() - started, 1),
        "steps_s": steps,
        "rows": counts,
    }


def render(rounds: int) -> list[dict[str, Any]]:
    """Time every page's AppTest run, query caches cleared before each."""
    import streamlit as st
    from streamlit import config
    from streamlit.testing.v1 import AppTest

    config.set_option("server.address", "127.0.0.1")
    timings: dict[str, list[tuple[float, float]]] = {page: [] for page in PAGES}
    for round_ in range(rounds + 1):  # round 0 warms imports and the database's buffers
        at = AppTest.from_file(APP, default_timeout=120)
        for page, path in PAGES.items():
            st.cache_data.clear()
            if page != "overview":
                at.switch_page(path)
            wall, cpu = time.perf_counter(), time.process_time()
            at.run()  # the entry script (sidebar) and the page
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            problems = [e.value for e in at.exception] + [e.value for e in at.error]
            if problems:
                raise RuntimeError(f"{page} failed: {problems}")
            if round_ > 0:
                timings[page].append((wall, cpu))
    rows = []
    for page, runs in timings.items():
        walls = [w for w, _ in runs]
        rows.append(
            {
                "page": page,
                "decisions": DECISIONS,
                "median_s": round(statistics.median(walls), 3),
                "max_s": round(max(walls), 3),
                "cpu_s": round(statistics.median(c for _, c in runs), 3),
                "under_2s": max(walls) < TARGET_S,
            }
        )
    return rows


def build_rollups(url: str, store_id: str) -> dict[str, float]:
    """The dashboard's rollups: a first build (every day), then a refresh of the recent days
    (what the dashboard does in the background every few minutes)."""
    from datetime import UTC, datetime

    from experiments import rollups
    from store.db import get_engine

    engine = get_engine(url)
    out = {}
    for name, full in (("full_rebuild_s", True), ("recent_refresh_s", False)):
        print(f"  bench ui: rollups, {name} …", file=sys.stderr, flush=True)
        started = time.perf_counter()
        with engine.begin() as conn:
            rollups.refresh(conn, store_id=store_id, now=datetime.now(UTC), full=full)
        out[name] = round(time.perf_counter() - started, 2)
    return out


def run() -> dict[str, Any]:
    from nudge.migrate import upgrade
    from settings import get_settings
    from store.db import dispose_engines
    from tests.services import postgres_database, postgres_server

    saved = {k: v for k, v in os.environ.items() if k.startswith("NUDGE_")}
    with postgres_server() as server, postgres_database(server) as url:
        sa_url = url.replace("postgresql://", "postgresql+psycopg://")
        upgrade(sa_url)
        print(f"  bench ui: seeding {DECISIONS:,} decisions …", file=sys.stderr, flush=True)
        made = seed(sa_url, DECISIONS)
        built = build_rollups(sa_url, made["store_id"])
        try:
            for key in saved:
                del os.environ[key]
            os.environ["NUDGE_DATABASE_URL"] = url
            get_settings.cache_clear()
            print(f"  bench ui: rendering every page, {ROUNDS} rounds …", file=sys.stderr)
            rows = render(ROUNDS)
        finally:
            for key in [k for k in os.environ if k.startswith("NUDGE_")]:
                del os.environ[key]
            os.environ.update(saved)
            get_settings.cache_clear()
            dispose_engines()
    load = os.getloadavg()
    rows += [
        {
            "page": f"(rollups: {name.removesuffix('_s').replace('_', ' ')}, background)",
            "decisions": DECISIONS,
            "median_s": seconds,
        }
        for name, seconds in built.items()
    ]
    return {
        "rows": rows,
        "seed": made,
        "rollups": built,
        "setup": {
            "database": "PostgreSQL (a throwaway database, dropped afterwards)",
            "render": f"AppTest, query caches cleared before each run; median of {ROUNDS}",
            "rollups": "pages read daily rollups; the dashboard refreshes the recent days in "
            "the background when they are 5 minutes old, and rebuilds every day once a day",
            "load_average_at_end": [round(x, 2) for x in load],
        },
        "targets": {"every_page_under_2s": all(r["under_2s"] for r in rows if "under_2s" in r)},
    }
