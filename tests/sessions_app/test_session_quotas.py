"""Quotas on live sessions: open sessions are capped (403), and utterances count against
the month's minutes (429) as their chunks are announced."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from musetalk_site.engine import engine_install
from musetalk_site.quotas import month_next, quota_generated_seconds, quota_minutes_record
from sessions_app import services
from sessions_app.models import StreamRequest, StreamSession
from tests.factories import StreamRequestFactory, StreamSessionFactory
from tests.sessions_app.chunking_engine import ChunkingEngine, settled

pytestmark = pytest.mark.django_db


def _open(api, **fields: Any) -> StreamSession:
    avatar = api.user.avatars.get(avatar_id="anna")
    return StreamSessionFactory(owner=api.user, avatar=avatar, **fields)


def _stream(api, session_id: str, audio: Path):
    with audio.open("rb") as handle:
        return api.post(f"/sessions/{session_id}/stream", {"audio_file": handle})


def test_a_session_past_the_open_sessions_quota_is_refused_with_403(api, settings):
    settings.QUOTA_MAX_ACTIVE_SESSIONS = 2
    _open(api)
    _open(api)
    response = api.post("/sessions/create?avatar_id=anna")
    assert response.status_code == 403
    assert response.json() == {
        "message": "You have 2 of your 2 sessions open; end one to open another.",
        "extra": {"quota": "active_sessions", "limit": 2, "used": 2},
    }
    assert StreamSession.objects.filter(owner=api.user).count() == 2


def test_ended_and_overdue_sessions_do_not_count(api, settings, other_api):
    settings.QUOTA_MAX_ACTIVE_SESSIONS = 1
    _open(api, status=StreamSession.Status.ENDED)
    _open(api, expires_at=timezone.now() - timedelta(seconds=1))
    StreamSessionFactory(owner=other_api.user)  # another user's
    assert api.post("/sessions/create?avatar_id=anna").status_code == 200


def test_an_utterance_past_the_months_minutes_is_refused_with_429(api, speech_wav, settings):
    settings.QUOTA_MONTHLY_MINUTES = 1
    session = _open(api)
    quota_minutes_record(user_id=api.user.pk, seconds=59.8)
    response = _stream(api, session.session_id, speech_wav)
    assert response.status_code == 429
    renews = month_next(timezone.now())
    assert response.json()["message"] == (
        "This audio needs 0.5 s but only 0.2 s of your 1 minute is left this month; "
        f"the allowance renews on {renews:%Y-%m-%d}."
    )
    assert response.json()["extra"]["quota"] == "monthly_minutes"
    assert not StreamRequest.objects.exists()
    assert not list((Path(settings.MEDIA_ROOT) / "uploads").rglob("*.*"))


@pytest.fixture
def engine() -> Iterator[None]:
    engine_install(ChunkingEngine(3, seconds=2.0, frames=50), {"loaded": True})  # type: ignore[arg-type]
    yield
    engine_install(None, {"error": "no engine in this test process"})


@pytest.mark.django_db(transaction=True)
def test_announced_chunks_count_and_stay_counted_after_the_session_is_deleted(
    api, engine, redis_server
):
    session = _open(api)
    request = StreamRequestFactory(session=session, audio_file="uploads/stream/x.wav")
    services.stream_request_run(request_pk=request.pk)
    settled(request)
    assert request.status == StreamRequest.Status.COMPLETED
    assert quota_generated_seconds(user=api.user) == 6.0
    session.delete()
    assert quota_generated_seconds(user=api.user) == 6.0
