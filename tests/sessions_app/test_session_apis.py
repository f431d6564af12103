from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.core import signing
from rest_framework.test import APIClient

from avatars.models import Avatar
from sessions_app.models import StreamChunk, StreamRequest, StreamSession
from sessions_app.tokens import SALT
from tests.factories import AvatarFactory, StreamRequestFactory, StreamSessionFactory

pytestmark = [pytest.mark.django_db]


def _create(api: APIClient, **params: object):
    query = "&".join(f"{k}={v}" for k, v in {"avatar_id": "anna", **params}.items())
    return api.post(f"/sessions/create?{query}")


def _stream(api: APIClient, session_id: str, audio: Path, **fields: object):
    with audio.open("rb") as handle:
        return api.post(f"/sessions/{session_id}/stream", {"audio_file": handle, **fields})


def _token(response) -> str:
    return response.json()["player_url"].split("?token=")[1]


def test_create_answers_with_the_seed_keys_and_defaults(api):
    response = _create(api, user_id="user_123")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert set(body) == {
        "session_id",
        "player_url",
        "avatar_id",
        "user_id",
        "config",
        "expires_in_seconds",
    }
    assert body["config"] == {"batch_size": 2, "fps": 25, "chunk_duration": 2}
    assert body["expires_in_seconds"] == settings.SESSION_TTL_SECONDS
    assert body["player_url"].startswith(f"/player/session/{body['session_id']}?token=")
    session = StreamSession.objects.get(session_id=body["session_id"])
    assert (session.owner, session.user_id) == (api.user, "user_123")


def test_create_takes_the_config_from_query_params(api):
    body = _create(api, batch_size=4, fps=15, chunk_duration=1.5).json()
    assert body["config"] == {"batch_size": 4, "fps": 15, "chunk_duration": 1.5}


@pytest.mark.parametrize(
    "params, field",
    [({"fps": 0}, "fps"), ({"batch_size": "x"}, "batch_size"), ({"chunk_duration": 0}, "chunk")],
)
def test_create_rejects_bad_config_with_a_message(api, params, field):
    response = _create(api, **params)
    assert response.status_code == 400 and field in response.json()["message"]
    assert not StreamSession.objects.exists()


def test_create_refuses_a_foreign_or_unready_avatar(api, other_api):
    assert _create(other_api).status_code == 404
    AvatarFactory(owner=api.user, avatar_id="busy", status=Avatar.Status.PREPARING)
    response = _create(api, avatar_id="busy")
    assert response.status_code == 409 and "not ready" in response.json()["message"]


def test_stream_queues_an_utterance_with_the_seed_response(
    api, speech_wav, django_capture_on_commit_callbacks
):
    session_id = _create(api).json()["session_id"]
    with django_capture_on_commit_callbacks() as callbacks:
        response = _stream(api, session_id, speech_wav)
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["request_id"].startswith("anna_req_") and len(body["request_id"]) == 17
    assert body == {
        "request_id": body["request_id"],
        "session_id": session_id,
        "status": "streaming",
        "message": "Stream started. WebView will receive chunks automatically.",
    }
    request = StreamRequest.objects.get(request_id=body["request_id"])
    assert request.status == StreamRequest.Status.QUEUED and len(callbacks) == 1
    assert (Path(settings.MEDIA_ROOT) / request.audio_file.name).is_file()


def test_a_second_stream_is_refused_with_409_unless_it_interrupts(
    api, speech_wav, redis_server, django_capture_on_commit_callbacks
):
    session_id = _create(api).json()["session_id"]
    first = _stream(api, session_id, speech_wav).json()["request_id"]
    refused = _stream(api, session_id, speech_wav)
    assert refused.status_code == 409
    assert "already active" in refused.json()["message"]
    assert refused.json()["extra"]["request_id"] == first
    assert StreamRequest.objects.count() == 1
    with django_capture_on_commit_callbacks(execute=True):
        replaced = _stream(api, session_id, speech_wav, interrupt="true")
    assert replaced.status_code == 200
    old = StreamRequest.objects.get(request_id=first)
    assert old.status == StreamRequest.Status.INTERRUPTED
    status = api.get(f"/sessions/{session_id}/status").json()
    assert status["active_request"]["request_id"] == replaced.json()["request_id"]


def test_stream_requires_an_audio_file(api):
    session_id = _create(api).json()["session_id"]
    response = api.post(f"/sessions/{session_id}/stream", {})
    assert response.status_code == 400 and "audio_file" in response.json()["message"]


def test_interrupt_stops_the_active_utterance(
    api, redis_server, django_capture_on_commit_callbacks
):
    session = StreamSessionFactory(owner=api.user)
    request = StreamRequestFactory(session=session, status=StreamRequest.Status.STREAMING)
    with django_capture_on_commit_callbacks(execute=True):
        body = api.post(f"/sessions/{session.session_id}/interrupt").json()
    assert body == {"session_id": session.session_id, "interrupted": [request.request_id]}
    request.refresh_from_db()
    assert request.status == StreamRequest.Status.INTERRUPTED
    events = api.get(f"/sessions/{session.session_id}/status").json()
    assert events["active_request"] is None and events["last_event_id"] == 2


def test_status_shows_the_session_the_active_request_and_its_chunks(api, redis_server):
    session = StreamSessionFactory(owner=api.user)
    request = StreamRequestFactory(
        session=session, status=StreamRequest.Status.STREAMING, total_chunks=3
    )
    StreamChunk.objects.create(request=request, index=0, file="x", duration=2.0)
    body = api.get(f"/sessions/{session.session_id}/status").json()
    assert body["status"] == "active" and body["avatar_id"] == session.avatar.avatar_id
    assert body["active_request"]["request_id"] == request.request_id
    assert body["current_request"]["total_chunks"] == 3
    assert body["chunks"][0]["url"] == f"/chunks/{request.request_id}/chunk_0001.mp4"
    assert 0 < body["expires_in_seconds"] <= settings.SESSION_TTL_SECONDS


def test_another_users_session_and_chunks_are_not_found(api, other_api, speech_wav, redis_server):
    session = StreamSessionFactory(owner=api.user)
    request = StreamRequestFactory(session=session)
    sid = session.session_id
    assert other_api.get(f"/sessions/{sid}/status").status_code == 404
    assert other_api.delete(f"/sessions/{sid}").status_code == 404
    assert other_api.post(f"/sessions/{sid}/interrupt").status_code == 404
    assert other_api.post(f"/sessions/{sid}/keepalive").status_code == 404
    assert _stream(other_api, sid, speech_wav).status_code == 404
    assert other_api.get(f"/chunks/{request.request_id}/chunk_0001.mp4").status_code == 404
    assert other_api.get("/sessions/").json()["count"] == 0
    assert other_api.get("/sessions/stats").json()["total_sessions"] == 0
    session.refresh_from_db()
    assert session.status == StreamSession.Status.ACTIVE


def test_anonymous_callers_are_refused(api, redis_server):
    session = StreamSessionFactory(owner=api.user)
    anonymous = APIClient()
    assert anonymous.get(f"/sessions/{session.session_id}/status").status_code == 401
    assert anonymous.post("/sessions/create?avatar_id=anna").status_code == 401


def _chunk_on_disk(session: StreamSession) -> StreamRequest:
    request = StreamRequestFactory(session=session, status=StreamRequest.Status.COMPLETED)
    folder = Path(settings.MEDIA_ROOT) / "chunks" / request.request_id
    folder.mkdir(parents=True)
    (folder / "chunk_0001.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom")
    StreamChunk.objects.create(
        request=request, index=0, file=f"chunks/{request.request_id}/chunk_0001.mp4", duration=1
    )
    return request


def test_a_player_token_opens_its_session_and_nothing_else(api, redis_server):
    mine = _create(api)
    theirs = _create(api).json()["session_id"]
    token = _token(mine)
    sid = mine.json()["session_id"]
    request = _chunk_on_disk(StreamSession.objects.get(session_id=sid))
    other_request = _chunk_on_disk(StreamSession.objects.get(session_id=theirs))
    player = APIClient()
    assert player.get(f"/sessions/{sid}/status?token={token}").status_code == 200
    chunk = player.get(f"/chunks/{request.request_id}/chunk_0001.mp4?token={token}")
    assert chunk.status_code == 200 and chunk["Content-Type"] == "video/mp4"
    assert StreamSession.objects.get(session_id=sid).chunks_served == 1
    assert player.get(f"/sessions/{theirs}/status?token={token}").status_code == 404
    path = f"/chunks/{other_request.request_id}/chunk_0001.mp4?token={token}"
    assert player.get(path).status_code == 404
    assert player.delete(f"/sessions/{sid}?token={token}").status_code == 401


def test_an_expired_or_forged_player_token_is_refused(api, redis_server, settings, monkeypatch):
    sid = _create(api).json()["session_id"]
    old = signing.dumps({"sid": sid}, salt=SALT)
    monkeypatch.setattr(signing.time, "time", lambda: 10**10)  # far in the future
    response = APIClient().get(f"/sessions/{sid}/status?token={old}")
    assert response.status_code == 401 and "expired" in response.json()["message"]
    monkeypatch.undo()
    forged = signing.dumps({"sid": sid}, salt="something-else")
    assert APIClient().get(f"/sessions/{sid}/status?token={forged}").status_code == 401


def test_unknown_chunk_names_are_not_found(api, redis_server):
    request = _chunk_on_disk(StreamSessionFactory(owner=api.user))
    for name in ("chunk_0002.mp4", "chunk_1.mp4", "..%2Fsecret", "chunk_0001.mp4.bak"):
        assert api.get(f"/chunks/{request.request_id}/{name}").status_code == 404


def test_delete_ends_the_session_and_removes_its_chunks(
    api, redis_server, django_capture_on_commit_callbacks
):
    session = StreamSessionFactory(owner=api.user)
    request = _chunk_on_disk(session)
    folder = Path(settings.MEDIA_ROOT) / "chunks" / request.request_id
    with django_capture_on_commit_callbacks(execute=True):
        response = api.delete(f"/sessions/{session.session_id}")
    assert response.status_code == 200 and response.json()["status"] == "deleted"
    assert not folder.exists()
    assert api.get(f"/chunks/{request.request_id}/chunk_0001.mp4").status_code == 404
    assert api.post(f"/sessions/{session.session_id}/keepalive").status_code == 410
    assert api.delete(f"/sessions/{session.session_id}").status_code == 404  # as in the seed
    session.refresh_from_db()
    assert session.status == StreamSession.Status.ENDED


def test_keepalive_extends_the_expiry(api):
    session = StreamSessionFactory(owner=api.user)
    before = session.expires_at
    body = api.post(f"/sessions/{session.session_id}/keepalive").json()
    session.refresh_from_db()
    assert session.expires_at > before
    assert body["expires_in_seconds"] == settings.SESSION_TTL_SECONDS
    assert body["player_url"].startswith(f"/player/session/{session.session_id}?token=")


def test_stats_count_my_sessions_and_staff_see_totals(api, other_api, admin_client):
    mine = StreamSessionFactory(owner=api.user, chunks_served=3)
    StreamRequestFactory(session=mine, status=StreamRequest.Status.STREAMING)
    StreamSessionFactory(owner=other_api.user, chunks_served=5)
    body = api.get("/sessions/stats").json()
    assert body["scope"] == "user"
    assert (body["active_sessions"], body["active_streams"], body["chunks_served"]) == (1, 1, 3)
    staff = admin_client.get("/sessions/stats").json()
    assert staff["scope"] == "all" and staff["chunks_served"] == 8
