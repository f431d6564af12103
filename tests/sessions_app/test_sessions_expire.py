from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from sessions_app import services
from sessions_app.models import StreamRequest, StreamSession
from sessions_app.realtime import events_after
from tests.factories import StreamRequestFactory, StreamSessionFactory

# Not transactional: rows stay invisible to the live stack's worker, whose periodic sweep
# would otherwise expire or reap them first.
pytestmark = pytest.mark.django_db


def test_idle_sessions_expire_and_lose_their_chunks(
    redis_server, django_capture_on_commit_callbacks
):
    idle = StreamSessionFactory(expires_at=timezone.now() - timedelta(seconds=1))
    busy = StreamRequestFactory(session=idle, status=StreamRequest.Status.STREAMING)
    fresh = StreamSessionFactory()
    folder = Path(settings.MEDIA_ROOT) / "chunks" / busy.request_id
    folder.mkdir(parents=True)
    (folder / "chunk_0001.mp4").write_bytes(b"x")
    with django_capture_on_commit_callbacks(execute=True):
        assert services.sessions_expire() == 1
        assert services.sessions_expire() == 0
    idle.refresh_from_db(), busy.refresh_from_db(), fresh.refresh_from_db()
    assert idle.status == StreamSession.Status.EXPIRED and idle.ended_at is not None
    assert busy.status == StreamRequest.Status.INTERRUPTED
    assert fresh.status == StreamSession.Status.ACTIVE
    assert not folder.exists()
    names = [e.payload["event"] for e in events_after(idle.session_id, 0)]
    assert names == ["interrupted", "speaking_ended", "session_ended"]
