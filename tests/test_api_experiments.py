"""Experiments over HTTP, and the daily SMS budget guardrail."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlmodel import SQLModel

from api.app import create_app
from experiments import lifecycle
from senders.broker import setup_broker
from settings import Settings
from store.db import get_engine
from store.stores import create_store
from tests.test_experiments_runtime import _journeys


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, broker=setup_broker(settings, stub=True))) as c:
        yield c


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_experiment_lifecycle_over_http(
    client: TestClient, store_key: tuple[str, str], settings: Settings
) -> None:
    _, key = store_key
    body: dict[str, Any] = {"name": "autumn", "arms": ["email/60m/0%", "sms/30m/10%"]}
    # Bad input gets a 4xx that says what is wrong, and nothing is created
    bad = client.post("/v1/experiments", json={**body, "holdout_share": 0.9}, headers=auth(key))
    assert bad.status_code == 422 and "holdout_share" in bad.json()["message"]
    wrong = client.post(
        "/v1/experiments", json={**body, "arms": ["pigeon/1m/0%"]}, headers=auth(key)
    )
    assert wrong.status_code == 422 and "not an arm key" in wrong.json()["message"]
    assert client.get("/v1/experiments", headers=auth(key)).json() == []

    created = client.post("/v1/experiments", json=body, headers=auth(key))
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "draft" and "holdout" in created.json()["arms"]
    # A draft can be edited; the same validation applies
    edited = client.patch(
        "/v1/experiments/autumn", json={**body, "holdout_share": 0.2}, headers=auth(key)
    )
    assert edited.status_code == 200 and edited.json()["holdout_share"] == 0.2
    capped = client.patch(
        "/v1/experiments/autumn", json={**body, "max_discount_pct": 5}, headers=auth(key)
    )
    assert capped.status_code == 422 and "5% discount guardrail" in capped.json()["message"]
    started = client.post("/v1/experiments/autumn/start", headers=auth(key))
    assert started.status_code == 200 and started.json()["status"] == "running"
    again = client.post("/v1/experiments/autumn/start", headers=auth(key))
    assert again.status_code == 409 and "running" in again.json()["message"]
    # Once running, only its guardrails change
    frozen = client.patch("/v1/experiments/autumn", json=body, headers=auth(key))
    assert frozen.status_code == 409 and "holdout_share" in frozen.json()["message"]
    report = client.get("/v1/experiments/autumn/report", headers=auth(key))
    assert report.status_code == 200 and report.json()["arms"] == []

    # Another store's key sees none of it
    with get_engine(settings.sqlalchemy_url).begin() as conn:
        _, other = create_store(conn, name="Elsewhere")
    assert client.get("/v1/experiments", headers=auth(other)).json() == []
    assert client.get("/v1/experiments/autumn/report", headers=auth(other)).status_code == 404
    assert client.post("/v1/experiments/autumn/stop", headers=auth(other)).status_code == 404

    promoted = client.post(
        "/v1/experiments/autumn/promote", json={"arm": "email/60m/0%"}, headers=auth(key)
    )
    assert promoted.status_code == 200 and promoted.json()["winner"] == "email/60m/0%"
    assert client.post("/v1/experiments/autumn/start", headers=auth(key)).status_code == 409


def test_daily_sms_budget_caps_sms_decisions(
    settings: Settings, store_key: tuple[str, str]
) -> None:
    store_id, _ = store_key
    engine = get_engine(settings.sqlalchemy_url)
    now = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
    with engine.begin() as conn:
        lifecycle.create(
            conn,
            store_id=store_id,
            spec=lifecycle.Spec(
                "texts", ["sms/30m/0%"], holdout_share=0.0, daily_sms_budget=3, seed=1
            ),
            now=now,
        )
        lifecycle.transition(conn, store_id=store_id, name="texts", action="start", now=now)
    _journeys(settings, store_id, 30)
    t = SQLModel.metadata.tables["decision"]
    with engine.connect() as conn:
        sms = conn.execute(sa.select(sa.func.count()).where(t.c.channel == "sms")).scalar_one()
        total = conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
    assert total == 30
    assert 1 <= sms <= 3
