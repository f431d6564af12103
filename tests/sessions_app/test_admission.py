"""Admission against the workers' measured capacity: creating a session or starting an
utterance beyond it answers 429 with Retry-After (or waits / queues with ``wait=true``).

The capacity comes from real heartbeats in the real Redis. Capacity is global by design:
every user's open sessions share the workers, so another user's session takes room too, and
a refusal gives only counts, never another user's sessions.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from sessions_app.models import StreamRequest, StreamSession
from tests.factories import StreamRequestFactory, StreamSessionFactory
from tests.musetalk_site.test_capacity import beat, capacity

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _target(settings) -> None:
    settings.LIVE_CAPACITY_TARGET = 0.9
    settings.LIVE_ADMISSION = True


def _create(api: APIClient, **params: object):
    query = "&".join(f"{k}={v}" for k, v in {"avatar_id": "anna", **params}.items())
    return api.post(f"/sessions/create?{query}")


def _stream(api: APIClient, session_id: str, audio: Path, **fields: object):
    with audio.open("rb") as handle:
        return api.post(f"/sessions/{session_id}/stream", {"audio_file": handle, **fields})


def _open(api: APIClient, *, fps: int = 25) -> StreamSession:
    return StreamSessionFactory(
        owner=api.user, avatar=api.user.avatars.get(avatar_id="anna"), fps=fps
    )


def _assert_capacity_429(response, *, retry: int) -> dict:
    assert response.status_code == 429, response.content
    assert response["Retry-After"] == str(retry)
    body = response.json()
    assert set(body) == {"message", "extra"}
    assert body["message"].startswith("The platform is at capacity")
    assert body["extra"]["reason"] == "capacity"
    assert body["extra"]["retry_after_seconds"] == retry
    return body


def test_a_session_past_the_measured_capacity_is_refused_with_429(api, redis_server):
    beat("w1", capacity(60.0))  # room for floor(54 / 25) = 2 sessions of 25 fps
    assert _create(api).status_code == 200
    assert _create(api).status_code == 200
    body = _assert_capacity_429(_create(api), retry=5)  # nothing streams: no end foreseen
    assert body["extra"]["available_sessions"] == 0 and body["extra"]["fps"] == 25
    assert StreamSession.objects.count() == 2
    # A slower session still fits: 54 - 50 = 4 frames/s is room for one at 4 fps.
    assert _create(api, fps=4).status_code == 200


def test_retry_after_follows_the_utterances_being_generated(api, redis_server):
    beat("w1", capacity(30.0, active_streams=2, stream_seconds_left=5.0))
    _open(api)
    _assert_capacity_429(_create(api), retry=3)  # 5 s left over 2 streams: 2.5, rounded up


def test_another_users_sessions_take_room_too_but_stay_unnamed(api, other_api, redis_server):
    beat("w1", capacity(30.0))
    theirs = StreamSessionFactory(owner=other_api.user, fps=25)
    response = _create(api)
    _assert_capacity_429(response, retry=5)
    assert theirs.session_id not in response.content.decode()


def test_the_first_session_of_an_idle_platform_is_admitted_even_when_slow(api, redis_server):
    beat("w1", capacity(10.0))  # slower than one 25-fps session: it slows nobody else
    assert _create(api).status_code == 200
    _assert_capacity_429(_create(api), retry=5)


@pytest.mark.parametrize("published", [None, capacity(0.0)], ids=["no-capacity", "unmeasured"])
def test_unknown_capacity_admits(api, redis_server, published):
    beat("w1", published)
    for _ in range(3):
        _open(api)
    assert _create(api).status_code == 200


def test_no_worker_heartbeat_admits(api, redis_server):
    _open(api)
    assert _create(api).status_code == 200


def test_admission_can_be_switched_off(api, redis_server, settings):
    settings.LIVE_ADMISSION = False
    beat("w1", capacity(10.0))
    _open(api)
    assert _create(api).status_code == 200


def test_a_create_that_waits_gets_the_room_that_frees_up(api, redis_server):
    beat("w1", capacity(30.0))
    _open(api)
    # A second worker comes up while the request waits (polled every 0.5 s, for at most 30 s).
    timer = threading.Timer(0.6, beat, args=("w2", capacity(60.0)))
    timer.start()
    try:
        response = _create(api, wait="true", wait_seconds=30)
    finally:
        timer.cancel()
    assert response.status_code == 200, response.json()
    assert StreamSession.objects.count() == 2


def test_a_create_that_waits_in_vain_is_refused(api, redis_server):
    beat("w1", capacity(30.0))
    _open(api)
    _assert_capacity_429(_create(api, wait="true", wait_seconds=1), retry=5)
    assert StreamSession.objects.count() == 1


def test_seed_routes_refuse_the_same_way(api, redis_server, speech_wav):
    beat("w1", capacity(30.0))
    _open(api, fps=25)
    _assert_capacity_429(api.post("/hls/sessions/create?avatar_id=anna&musetalk_fps=15"), retry=5)
    _assert_capacity_429(api.post("/hls/groups/create?avatar_id=anna&count=2"), retry=5)
    with speech_wav.open("rb") as handle:
        response = api.post(
            "/generate/stream?avatar_id=anna", {"audio_file": handle}, format="multipart"
        )
    _assert_capacity_429(response, retry=5)
    assert StreamSession.objects.count() == 1


def _busy_platform(api: APIClient, other_api: APIClient) -> StreamSession:
    """Three open sessions (admitted while capacity was unknown); another user's speaks now,
    and the workers turn out to make 30 frames/s: room for one 25-fps utterance at a time."""
    speaking = StreamSessionFactory(owner=other_api.user, fps=25)
    StreamRequestFactory(session=speaking, status=StreamRequest.Status.STREAMING)
    beat("w1", capacity(30.0, active_streams=1, live_frames_per_s=25.0, stream_seconds_left=2.5))
    return _open(api)


def test_an_utterance_past_the_capacity_is_refused_with_429(
    api, other_api, redis_server, speech_wav, settings
):
    session = _busy_platform(api, other_api)
    body = _assert_capacity_429(_stream(api, session.session_id, speech_wav), retry=3)
    assert body["extra"]["fps"] == 25
    assert not session.requests.exists()
    uploads = Path(settings.MEDIA_ROOT) / "uploads"
    assert not [path for path in uploads.rglob("*") if path.is_file()]  # nothing stored


def test_an_utterance_that_waits_is_queued_with_an_eta(
    api, other_api, redis_server, speech_wav, django_capture_on_commit_callbacks
):
    session = _busy_platform(api, other_api)
    with django_capture_on_commit_callbacks() as callbacks:
        response = _stream(api, session.session_id, speech_wav, wait="true")
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["queued"] is True and body["eta_seconds"] == 3
    assert body["status"] == "queued" and body["session_id"] == session.session_id
    request = StreamRequest.objects.get(request_id=body["request_id"])
    assert request.status == StreamRequest.Status.QUEUED and len(callbacks) == 1


def test_an_utterance_that_fits_starts_at_once_even_with_wait(api, redis_server, speech_wav):
    beat("w1", capacity(60.0))
    session = _open(api)
    StreamRequestFactory(session=StreamSessionFactory(fps=25))  # one other speaks: 50 <= 54
    response = _stream(api, session.session_id, speech_wav, wait="true")
    assert response.status_code == 200
    assert "queued" not in response.json() and response.json()["status"] == "streaming"


def test_the_seed_hls_stream_refuses_the_same_way(api, other_api, redis_server, speech_wav):
    session = _busy_platform(api, other_api)
    session.kind = StreamSession.Kind.HLS
    session.save()
    with speech_wav.open("rb") as handle:
        response = api.post(f"/hls/sessions/{session.session_id}/stream", {"audio_file": handle})
    _assert_capacity_429(response, retry=3)


def test_an_idle_platform_starts_an_utterance_even_when_slow(api, redis_server, speech_wav):
    beat("w1", capacity(10.0))
    session = _open(api)
    assert _stream(api, session.session_id, speech_wav).status_code == 200
