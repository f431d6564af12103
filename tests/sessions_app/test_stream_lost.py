"""A queued utterance whose message the broker lost fails with an ``error`` event, so its
session takes the next one instead of answering 409 forever; one waiting its turn stays.

Real Redis and the real broker; ``session_stream`` sends to a queue of each test's own, so
no worker of a live stack takes the messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from django.conf import settings
from django.utils import timezone
from dramatiq.brokers.redis import RedisBroker
from rest_framework.test import APIClient

from musetalk_site.broker import message_pending
from musetalk_site.maintenance import maintenance_run
from sessions_app.models import StreamRequest
from sessions_app.realtime import events_after
from sessions_app.tasks import session_stream
from tests.factories import StreamRequestFactory

pytestmark = pytest.mark.django_db

LOST = "the queue lost this utterance (a worker or Redis restarted); please send it again"


@pytest.fixture
def queue(redis_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    broker = dramatiq.get_broker()
    assert isinstance(broker, RedisBroker)
    monkeypatch.setattr(session_stream, "queue_name", "test_lost_session_stream")
    yield f"{broker.namespace}:{session_stream.queue_name}"
    broker.flush(session_stream.queue_name)


def _session(api: APIClient) -> str:
    return api.post("/sessions/create?avatar_id=anna").json()["session_id"]


def _stream(api: APIClient, session_id: str, audio: Path, capture: Any) -> Any:
    with audio.open("rb") as handle, capture(execute=True):
        return api.post(f"/sessions/{session_id}/stream", {"audio_file": handle})


def _lose(queue: str, message_id: str) -> None:
    """What Redis losing a waiting message leaves: its id and its data are gone."""
    broker = dramatiq.get_broker()
    assert isinstance(broker, RedisBroker)
    broker.client.lrem(queue, 0, message_id)
    broker.client.hdel(queue + ".msgs", message_id)


def _age(request: StreamRequest) -> None:
    long_ago = timezone.now() - timedelta(seconds=settings.QUEUE_CHECK_AFTER_SECONDS + 1)
    StreamRequest.objects.filter(pk=request.pk).update(queued_at=long_ago)
    request.refresh_from_db()


def test_a_lost_utterance_fails_with_an_error_event_and_frees_its_session(
    api: APIClient, speech_wav: Path, queue: str, django_capture_on_commit_callbacks: Any
) -> None:
    session_id = _session(api)
    lost_id = _stream(api, session_id, speech_wav, django_capture_on_commit_callbacks).json()[
        "request_id"
    ]
    lost = StreamRequest.objects.get(request_id=lost_id)
    assert (
        _stream(api, session_id, speech_wav, django_capture_on_commit_callbacks).status_code == 409
    )
    _lose(queue, lost.message_id)
    _age(lost)

    assert maintenance_run() == 1

    lost.refresh_from_db()
    assert (lost.status, lost.error) == (StreamRequest.Status.FAILED, LOST)
    assert not (Path(settings.MEDIA_ROOT) / lost.audio_file.name).exists()
    payloads = [event.payload for event in events_after(session_id, 0)]
    assert {"event": "error", "message": LOST, "request_id": lost_id} in payloads
    next_one = _stream(api, session_id, speech_wav, django_capture_on_commit_callbacks)
    assert next_one.status_code == 200, next_one.json()
    assert StreamRequest.objects.get(request_id=next_one.json()["request_id"]).status == "queued"


def test_an_utterance_waiting_its_turn_is_left_alone(
    api: APIClient, speech_wav: Path, queue: str, django_capture_on_commit_callbacks: Any
) -> None:
    for _ in range(50):
        session_stream.send(0)  # other sessions' utterances ahead of it (no such row: a no-op)
    session_id = _session(api)
    response = _stream(api, session_id, speech_wav, django_capture_on_commit_callbacks)
    waiting = StreamRequest.objects.get(request_id=response.json()["request_id"])
    _age(waiting)

    assert maintenance_run() == 0

    waiting.refresh_from_db()
    assert waiting.status == StreamRequest.Status.QUEUED and waiting.message_id
    assert events_after(session_id, 0) == []


def test_an_utterance_whose_message_was_never_sent_fails(queue: str) -> None:
    """The web process stopped between the commit and the send."""
    request = StreamRequestFactory()
    fresh = StreamRequestFactory()  # its message may still be on its way
    _age(request)

    assert maintenance_run() == 1

    request.refresh_from_db(), fresh.refresh_from_db()
    assert (request.status, request.error) == (StreamRequest.Status.FAILED, LOST)
    assert fresh.status == StreamRequest.Status.QUEUED


def test_an_utterance_claimed_before_its_send_returned_still_records_its_message(
    api: APIClient, speech_wav: Path, queue: str, django_capture_on_commit_callbacks: Any
) -> None:
    """A worker can claim the message between the broker taking it and the web process
    recording its id; the id is kept all the same (the admin shows which queue took it), and
    the reaper, which reads queued rows only, leaves the streaming one alone."""
    session_id = _session(api)
    with speech_wav.open("rb") as handle, django_capture_on_commit_callbacks() as sends:
        response = api.post(f"/sessions/{session_id}/stream", {"audio_file": handle})
    assert response.status_code == 200, response.json()
    request = StreamRequest.objects.get(request_id=response.json()["request_id"])
    StreamRequest.objects.filter(pk=request.pk).update(
        status=StreamRequest.Status.STREAMING, started_at=timezone.now()
    )
    for send in sends:
        send()

    request.refresh_from_db()
    assert request.status == StreamRequest.Status.STREAMING
    assert message_pending(queue_name=session_stream.queue_name, message_id=request.message_id)
    _age(request)
    assert maintenance_run() == 0
    request.refresh_from_db()
    assert request.status == StreamRequest.Status.STREAMING
