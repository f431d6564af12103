from __future__ import annotations

import time

import pytest
from rest_framework.test import APIClient

from musetalk_site import context_processors
from musetalk_site.heartbeat import WorkerBeat, beat_write
from musetalk_site.redis_conn import _client_for, redis_client

pytestmark = pytest.mark.django_db


def _beat(*, age: float, engine: dict | None = None, worker_id: str = "test-worker") -> None:
    beat = WorkerBeat(
        worker_id=worker_id,
        pid=1234,
        hostname="test",
        started_at=time.time() - 100,
        beat_at=time.time() - age,
        engine=engine if engine is not None else {"profile": "random-tiny", "loaded": True},
    )
    beat_write(redis_client(), beat, ttl_seconds=60)


def test_health_is_green_with_a_fresh_worker(redis_server):
    _beat(age=0.5)
    response = APIClient().get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy" and body["ok"] is True and body["down"] == []
    assert body["checks"]["database"]["ok"] and body["checks"]["redis"]["ok"]
    assert body["checks"]["worker"]["age_seconds"] < 5
    assert body["engine"]["profile"] == "random-tiny"
    assert "demo_mode" not in body


def test_health_goes_unhealthy_when_the_heartbeat_is_stale(redis_server, settings):
    settings.WORKER_STALE_SECONDS = 10
    _beat(age=25)
    response = APIClient().get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["down"] == ["worker"]
    assert "stale" in body["checks"]["worker"]["error"]
    assert body["checks"]["worker"]["age_seconds"] >= 25


def test_health_names_a_missing_worker(redis_server):
    response = APIClient().get("/health")
    assert response.status_code == 503
    assert response.json()["down"] == ["worker"]
    assert "no worker heartbeat" in response.json()["checks"]["worker"]["error"]


def test_health_names_redis_when_it_is_down(settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    try:
        response = APIClient().get("/health")
    finally:
        _client_for.cache_clear()
    assert response.status_code == 503
    body = response.json()
    assert body["down"] == ["redis", "worker"]
    assert body["checks"]["database"]["ok"] is True


def test_health_announces_demo_mode(redis_server):
    _beat(age=0.1, engine={"profile": "random-tiny", "loaded": True, "demo": True})
    body = APIClient().get("/health").json()
    assert body["demo_mode"] is True
    assert body["warning"] == "demo mode: random weights, output is not real lip-sync"


def test_dashboard_shows_the_demo_banner(redis_server, client, django_user_model, monkeypatch):
    user = django_user_model.objects.create_user("erin", password="pw-erin-123")
    client.force_login(user)
    assert b"demo-banner" not in client.get("/").content
    _beat(age=0.1, engine={"profile": "random-tiny", "loaded": True, "demo": True})
    later = time.monotonic() + context_processors.BANNER_TTL_SECONDS
    monkeypatch.setattr(context_processors, "clock", lambda: later)  # the banner is cached
    page = client.get("/").content.decode()
    assert 'id="demo-banner"' in page
    assert "demo mode: random weights, output is not real lip-sync" in page


def test_health_shows_why_the_engine_did_not_load(redis_server):
    _beat(
        age=0.2,
        engine={"loaded": False, "error": "MuseTalk v1.5 weights are missing from /models"},
    )
    response = APIClient().get("/health")
    assert response.status_code == 503
    assert (
        "engine failed to load: MuseTalk v1.5 weights are missing"
        in (response.json()["checks"]["worker"]["error"])
    )
