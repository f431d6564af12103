"""The WebView players: pages, idle loop and fragmented chunks, with the player token only."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import av
import numpy as np
import pytest
from django.conf import settings
from django.core import signing
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token

from inference.media import Mp4Writer
from sessions_app.models import StreamChunk, StreamRequest, StreamSession
from sessions_app.realtime import event_publish
from sessions_app.tokens import SALT, player_token_make
from tests.factories import StreamRequestFactory, StreamSessionFactory

pytestmark = [pytest.mark.django_db]

CONFIG = re.compile(r'<script id="musetalk-player-config" type="application/json">(.*?)</script>')
FPS = 25


@pytest.fixture
def session(redis_server) -> StreamSession:
    return StreamSessionFactory(avatar__avatar_id="anna")


@pytest.fixture
def token(session: StreamSession) -> str:
    return player_token_make(session_id=session.session_id)


def _config(response) -> dict:
    return json.loads(CONFIG.search(response.content.decode()).group(1))


def _write_chunk(path: Path, frames: int) -> Path:
    """A chunk as the engine writes it: H.264 + AAC, +faststart, zerolatency."""
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = np.sin(np.arange(frames * 16000 // FPS) * 0.05).astype(np.float32) * 0.2
    with Mp4Writer(path, fps=FPS, width=96, height=112, audio=audio, tune="zerolatency") as writer:
        for index in range(frames):
            writer.write(np.full((112, 96, 3), index * 9 % 255, dtype=np.uint8))
    return path


def _chunk_on_disk(session: StreamSession, frames: int = 10) -> StreamRequest:
    request = StreamRequestFactory(session=session, status=StreamRequest.Status.STREAMING)
    name = f"chunks/{request.request_id}/chunk_0001.mp4"
    _write_chunk(Path(settings.MEDIA_ROOT) / name, frames)
    StreamChunk.objects.create(request=request, index=0, file=name, duration=frames / FPS)
    return request


def _idle_on_disk(session: StreamSession) -> bytes:
    folder = Path(settings.MEDIA_ROOT) / session.avatar.storage_key
    _write_chunk(folder / "idle.mp4", 4)
    return (folder / "idle.mp4").read_bytes()


def _top_level_boxes(data: bytes) -> list[str]:
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        boxes.append(data[offset + 4 : offset + 8].decode("latin-1"))
        offset += size
    return boxes


def test_the_session_player_wires_in_its_token_and_feed(client: Client, session, token):
    response = client.get(f"/player/session/{session.session_id}?token={token}")
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    config = _config(response)
    sid = session.session_id
    assert config == {
        "session_id": sid,
        "token": token,
        "events_url": f"/sessions/{sid}/events?token={token}",
        "idle_url": f"/player/session/{sid}/idle.mp4?token={token}",
        "start_after": 0,
        "fps": session.fps,
    }
    html = response.content.decode()
    assert "players/session-player.js" in html and "Tap to unmute" in html
    assert html.count("playsinline") == 2 and html.count(" muted ") == 2


def test_the_mobile_player_takes_the_session_from_the_query(client: Client, session, token):
    response = client.get(f"/player/mobile?session_id={session.session_id}&token={token}")
    assert response.status_code == 200
    assert _config(response)["events_url"] == f"/sessions/{session.session_id}/events?token={token}"
    assert "player-mobile" in response.content.decode()


def _refusals(session: StreamSession) -> dict[str, tuple[str, int]]:
    api_key = Token.objects.create(user=session.owner).key
    other = StreamSessionFactory()
    return {
        "missing": ("", 401),
        "forged": (signing.dumps({"sid": session.session_id}, salt="other"), 401),
        "garbage": ("not-a-token", 401),
        "api key": (api_key, 401),  # the page takes player tokens only
        "foreign": (player_token_make(session_id=other.session_id), 404),
    }


@pytest.mark.parametrize("page", ["session", "mobile"])
def test_pages_refuse_bad_tokens_without_leaking_the_session(client: Client, session, page):
    sid = session.session_id
    for case, (token, status) in _refusals(session).items():
        if page == "session":
            response = client.get(f"/player/session/{sid}?token={token}")
        else:
            response = client.get(f"/player/mobile?session_id={sid}&token={token}")
        assert response.status_code == status, case
        body = response.content.decode()
        assert "Player unavailable" in body, case
        for secret in (sid, "anna", session.owner.username, "musetalk-player-config"):
            assert secret not in body, (case, secret)


def test_an_expired_token_gets_a_clear_401_page(client: Client, session, monkeypatch):
    old = signing.dumps({"sid": session.session_id}, salt=SALT)
    later = timezone.now() + timedelta(seconds=settings.PLAYER_TOKEN_MAX_AGE_SECONDS + 60)
    monkeypatch.setattr(signing.time, "time", later.timestamp)
    response = client.get(f"/player/session/{session.session_id}?token={old}")
    assert response.status_code == 401 and "expired" in response.content.decode()


def test_the_idle_loop_is_served_only_with_a_valid_token(client: Client, session, token):
    expected = _idle_on_disk(session)
    path = f"/player/session/{session.session_id}/idle.mp4"
    response = client.get(f"{path}?token={token}")
    assert response.status_code == 200 and response["Content-Type"] == "video/mp4"
    assert b"".join(response.streaming_content) == expected
    for case, (bad, status) in _refusals(session).items():
        assert client.get(f"{path}?token={bad}").status_code == status, case


def test_an_avatar_without_an_idle_loop_is_a_404(client: Client, session, token):
    response = client.get(f"/player/session/{session.session_id}/idle.mp4?token={token}")
    assert response.status_code == 404


def test_chunks_are_served_fragmented_with_their_exact_codecs(
    client: Client, session, token, tmp_path: Path
):
    request = _chunk_on_disk(session, frames=10)
    path = f"/player/chunks/{request.request_id}/chunk_0001.mp4?token={token}"
    response = client.get(path)
    assert response.status_code == 200
    assert re.fullmatch(
        r'video/mp4; codecs="avc1\.64[0-9a-f]{4}, mp4a\.40\.2"', response["Content-Type"]
    )
    body = b"".join(response.streaming_content)
    boxes = _top_level_boxes(body)
    assert boxes[:3] == ["ftyp", "moov", "moof"] and "mdat" in boxes
    (tmp_path / "frag.mp4").write_bytes(body)
    with av.open(str(tmp_path / "frag.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 10
    folder = Path(settings.MEDIA_ROOT) / "chunks" / request.request_id
    assert sorted(p.name for p in folder.iterdir()) == ["chunk_0001.frag.mp4", "chunk_0001.mp4"]
    mtime = (folder / "chunk_0001.frag.mp4").stat().st_mtime_ns
    assert client.get(path).status_code == 200  # the copy is reused
    assert (folder / "chunk_0001.frag.mp4").stat().st_mtime_ns == mtime
    assert StreamSession.objects.get(pk=session.pk).chunks_served == 2


def test_fragmented_chunks_follow_the_chunk_access_rules(client: Client, session, token):
    mine = _chunk_on_disk(session)
    theirs = _chunk_on_disk(StreamSessionFactory())
    url = "/player/chunks/{}/{}?token={}"
    assert client.get(url.format(theirs.request_id, "chunk_0001.mp4", token)).status_code == 404
    assert client.get(url.format(mine.request_id, "chunk_0002.mp4", token)).status_code == 404
    assert client.get(url.format(mine.request_id, "chunk_0001.mp4", "bad")).status_code == 401
    assert client.get(f"/player/chunks/{mine.request_id}/chunk_0001.mp4").status_code == 401


def test_a_reopened_page_skips_finished_utterances_but_not_the_current_one(
    client: Client, session, token
):
    sid = session.session_id
    old = StreamRequestFactory(session=session, status=StreamRequest.Status.COMPLETED)
    old.finished_at = timezone.now() - timedelta(minutes=5)
    old.save()
    for name in ("speaking_started", "complete", "speaking_ended"):
        event_publish(sid, {"event": name, "request_id": old.request_id})
    page = f"/player/session/{sid}?token={token}"
    assert _config(client.get(page))["start_after"] == 3

    current = StreamRequestFactory(session=session, status=StreamRequest.Status.STREAMING)
    first = event_publish(sid, {"event": "speaking_started", "request_id": current.request_id})
    event_publish(sid, {"event": "chunk", "index": 0, "request_id": current.request_id})
    assert _config(client.get(page))["start_after"] == first - 1 == 3


def test_player_pages_may_be_framed_by_any_site_and_the_dashboard_by_none(
    client: Client, session, token
):
    sid = session.session_id
    for path in (
        f"/player/session/{sid}?token={token}",
        f"/player/mobile?session_id={sid}&token={token}",
        f"/hls/player/{sid}?token={token}",
        f"/player/session/{sid}?token=forged",  # its error page too: it shows in the frame
    ):
        response = client.get(path)
        assert response.status_code in (200, 401), path
        assert "X-Frame-Options" not in response, path
    assert client.get("/login/")["X-Frame-Options"] == "DENY"
