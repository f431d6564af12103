"""``POST /generate/stream``: its session of its own, refusals and the end of the answer
(the answer itself is read on the real stack in tests/e2e/test_seed_stream.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from sessions_app.generate_stream import (
    CHUNKS_KEPT_SECONDS,
    SESSION_LABEL,
    generate_stream_finish,
)
from sessions_app.models import StreamRequest, StreamSession
from tests.factories import StreamRequestFactory, StreamSessionFactory

pytestmark = [pytest.mark.django_db]


def _post(api, query: str, **files):
    return api.post(f"/generate/stream?{query}", files, format="multipart")


def test_a_refused_upload_leaves_no_session_open(api, tmp_path):
    bad = tmp_path / "noise.wav"
    bad.write_bytes(b"RIFF this is not audio")
    with bad.open("rb") as handle:
        response = _post(
            api, "avatar_id=anna&batch_size=2&fps=15&chunk_duration=2", audio_file=handle
        )
    assert response.status_code == 400, response.json()
    assert set(response.json()) == {"message", "extra"}
    sessions = StreamSession.objects.filter(owner=api.user)
    assert [s.status for s in sessions] == [StreamSession.Status.ENDED]
    assert sessions[0].user_id == SESSION_LABEL


def test_it_takes_the_seed_query_and_refuses_what_the_seed_refuses(api, other_api, speech_wav):
    assert _post(api, "batch_size=2").status_code == 400  # no avatar_id
    assert _post(api, "avatar_id=anna").status_code == 400  # no audio_file
    with speech_wav.open("rb") as handle:
        assert _post(other_api, "avatar_id=anna", audio_file=handle).status_code == 404
    assert not StreamSession.objects.filter(status=StreamSession.Status.ACTIVE).exists()


def test_the_end_stops_an_utterance_under_way_and_keeps_the_chunks_a_while(
    redis_server, django_capture_on_commit_callbacks
):
    session = StreamSessionFactory(user_id=SESSION_LABEL)
    request = StreamRequestFactory(session=session, status=StreamRequest.Status.STREAMING)
    with django_capture_on_commit_callbacks(execute=True):
        generate_stream_finish(session_pk=session.pk)
    request.refresh_from_db()
    session.refresh_from_db()
    assert request.status == StreamRequest.Status.INTERRUPTED
    assert session.status == StreamSession.Status.ACTIVE  # its chunks can still be fetched
    assert session.expires_at <= timezone.now() + timedelta(seconds=CHUNKS_KEPT_SECONDS)


def test_the_end_of_a_finished_utterance_only_brings_the_expiry_forward(redis_server):
    session = StreamSessionFactory(user_id=SESSION_LABEL)
    request = StreamRequestFactory(session=session, status=StreamRequest.Status.COMPLETED)
    generate_stream_finish(session_pk=session.pk)
    request.refresh_from_db()
    session.refresh_from_db()
    assert request.status == StreamRequest.Status.COMPLETED
    assert session.expires_at <= timezone.now() + timedelta(seconds=CHUNKS_KEPT_SECONDS)
    soon = timezone.now() + timedelta(seconds=5)
    StreamSession.objects.filter(pk=session.pk).update(expires_at=soon)
    generate_stream_finish(session_pk=session.pk)  # never later than it was
    session.refresh_from_db()
    assert session.expires_at == soon
