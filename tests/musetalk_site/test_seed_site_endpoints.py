"""The seed API's site-level endpoints: /health's keys, /stats, /stats/cache, /capabilities,
/docs and GET / for API clients; the numbers come from the workers' heartbeats."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from musetalk_site.heartbeat import WorkerBeat, beat_write
from musetalk_site.redis_conn import redis_client
from tests.factories import AvatarFactory, UserFactory

pytestmark = pytest.mark.django_db

GIB = 1024**3


def _engine(*, entries: dict | None = None, hits: int = 0, misses: int = 0, **extra) -> dict:
    return {
        "profile": "random-tiny",
        "loaded": True,
        "device": "cpu",
        "cache": {
            "entries": entries or {},
            "bytes": sum(info["size"] for info in (entries or {}).values()),
            "max_bytes": 2 * GIB,
            "hits": hits,
            "misses": misses,
            "evictions": 0,
        },
        "budget": {"total": 16 * GIB, "reserved": 0, "peak": GIB},
        **extra,
    }


def _beat(worker_id: str, *, queues: list[str], engine: dict, age: float = 0.2, **running) -> None:
    beat = WorkerBeat(
        worker_id=worker_id,
        pid=1,
        hostname="test",
        started_at=time.time() - 60,
        beat_at=time.time() - age,
        engine=engine,
        queues=queues,
        running=dict(running),
    )
    beat_write(redis_client(), beat, ttl_seconds=60)


def _folder(avatar) -> str:
    return str(Path(django_settings.MEDIA_ROOT) / avatar.storage_key)


def _entry(size: int = 5 * 1024**2, hits: int = 1) -> dict:
    return {"size": size, "loaded_at": 1.0, "last_access": 2.0, "hits": hits, "idle_seconds": 3.0}


def _client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


# -- /health ----------------------------------------------------------------------------------


def test_health_carries_the_seed_keys_beside_ours(redis_server):
    mine, theirs = AvatarFactory(), AvatarFactory()
    entries = {_folder(mine): _entry(), _folder(theirs): _entry()}
    _beat("gen", queues=["default", "generate", "stream"], engine=_engine(entries=entries))
    _beat("gen2", queues=["generate"], engine=_engine(entries={_folder(mine): _entry()}))
    _beat("prep", queues=["prepare"], engine=_engine(), age=0.1, generate=0, prepare=1)
    _beat("busy", queues=["generate", "stream"], engine=_engine(), generate=2, stream=1)
    response = APIClient().get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True and body["status"] == "healthy" and body["service"] == "musetalk"
    assert body["cached_avatars"] == 2  # distinct avatars over all workers
    assert body["active_requests"] == 3  # videos and utterances; not the preparation
    assert body["gpu_available"] is False  # CPU engines
    assert body["checks"]["worker"]["ok"] and body["down"] == []


def test_health_says_the_gpu_is_available_when_the_engine_has_one_with_room(redis_server):
    engine = _engine(device="cuda")
    engine["budget"] = {"total": 80 * GIB, "reserved": 10 * GIB, "peak": 12 * GIB}
    _beat("gen", queues=["*"], engine=engine)
    assert APIClient().get("/health").json()["gpu_available"] is True


def test_health_reports_the_generating_worker_even_when_the_preparing_one_beat_last(
    redis_server,
):
    """A worker that only prepares caches nothing: /health's engine (cache, budget) is the
    generating worker's, whichever heartbeat came last."""
    _beat("gen", queues=["generate", "stream"], engine=_engine(hits=4, misses=2), age=2.0)
    _beat("prep", queues=["prepare"], engine=_engine(), age=0.1)
    engine = APIClient().get("/health").json()["engine"]
    assert engine["cache"]["hits"] == 4 and engine["cache"]["misses"] == 2


def test_health_is_503_and_not_ok_when_down(redis_server):
    response = APIClient().get("/health")  # no worker heartbeat
    assert response.status_code == 503
    body = response.json()
    assert body["ok"] is False and body["status"] == "unhealthy" and body["down"] == ["worker"]
    assert body["cached_avatars"] == 0 and body["active_requests"] == 0


# -- /stats, /stats/cache -------------------------------------------------------------------


def test_stats_cache_counts_every_avatar_and_names_only_the_callers(redis_server):
    owner = UserFactory()
    mine, theirs = AvatarFactory(owner=owner, avatar_id="host"), AvatarFactory()
    entries = {_folder(mine): _entry(hits=3), _folder(theirs): _entry()}
    _beat("gen", queues=["generate", "stream"], engine=_engine(entries=entries, hits=4, misses=2))
    body = _client(owner).get("/stats/cache").json()
    assert body["cached_avatars"] == 2
    assert body["hits"] == 4 and body["misses"] == 2 and body["hit_rate"] == "66.67%"
    assert body["total_memory_mb"] == 10.0 and body["max_memory_mb"] == 2048.0
    assert [avatar["id"] for avatar in body["avatars"]] == ["host"]
    assert body["avatars"][0]["memory_mb"] == 5.0 and body["avatars"][0]["age_seconds"] == 3.0
    assert _client(UserFactory()).get("/stats/cache").json()["avatars"] == []


def test_stats_has_the_seed_sections(redis_server):
    owner = UserFactory()
    _beat("gen", queues=["generate", "stream"], engine=_engine(), stream=1)
    body = _client(owner).get("/stats").json()
    assert set(body) >= {"gpu", "cache", "active_requests", "total_requests"}
    assert body["gpu"]["total_gb"] == 16.0 and body["gpu"]["free_gb"] == 16.0
    assert body["active_requests"] == 1 and body["total_requests"] == 0
    assert body["cache"]["cached_avatars"] == 0
    assert body["workers"] == [
        {"worker_id": "gen", "queues": ["generate", "stream"], "running": {"stream": 1}}
    ]


def test_stats_need_credentials_unless_anonymous_access_is_on(redis_server, settings):
    assert APIClient().get("/stats").status_code == 401
    assert APIClient().get("/stats/cache").status_code == 401
    UserFactory(username="kiosk")
    settings.ANONYMOUS_ACCESS_USER = "kiosk"
    assert APIClient().get("/stats").status_code == 200
    assert APIClient().get("/stats/cache").status_code == 200


# -- /capabilities, /, /docs --------------------------------------------------------------------


def test_capabilities_answer_the_seed_shape_without_credentials():
    body = APIClient().get("/capabilities").json()
    assert body["service"] == "musetalk"
    assert body["features"]["pose_sets_v1"] is False  # not offered here
    assert body["features"]["hls_sessions"] is True


def test_the_root_answers_json_to_api_clients_and_the_dashboard_to_browsers(client):
    for headers in ({}, {"accept": "application/json"}, {"accept": "*/*"}):
        response = client.get("/", headers=headers)
        assert response.status_code == 200, headers
        assert response.json()["status"] == "healthy", headers
    key = Token.objects.create(user=UserFactory()).key
    with_token = client.get("/", headers={"accept": "text/html", "authorization": f"Token {key}"})
    assert with_token.json()["service"] == "MuseTalk platform API"
    browser = client.get("/", headers={"accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert browser.status_code == 302 and browser["Location"].startswith("/login/")
    client.force_login(UserFactory())
    page = client.get("/", headers={"accept": "text/html"})
    assert page.status_code == 200 and b"Your avatars" in page.content


def test_docs_are_the_swagger_ui_for_signed_in_users(client):
    for path in ("/docs", "/api/docs/"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/login/"), path
    client.force_login(UserFactory())
    for path in ("/docs", "/api/docs/"):
        response = client.get(path)
        assert response.status_code == 200 and b"swagger-ui" in response.content, path


def test_docs_and_schema_are_open_while_anonymous_access_is_on(client, settings):
    UserFactory(username="kiosk")
    settings.ANONYMOUS_ACCESS_USER = "kiosk"
    docs = client.get("/docs")
    assert docs.status_code == 200 and b"swagger-ui" in docs.content
    schema = client.get("/api/schema/", headers={"accept": "application/vnd.oai.openapi+json"})
    assert schema.status_code == 200 and "/stats/cache" in schema.json()["paths"]
