"""The worker side of streaming, with a stand-in engine: chunks are recorded and announced
one by one, and an interruption stops the utterance within one chunk."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from inference.errors import InferenceError
from inference.layout import AUDIO_TRACK
from musetalk_site.engine import engine_install
from sessions_app import services
from sessions_app.generate_stream import (
    CHUNKS_KEPT_SECONDS,
    SESSION_LABEL,
    generate_stream_finish,
)
from sessions_app.models import StreamChunk, StreamRequest, StreamSession
from sessions_app.realtime import events_after
from sessions_app.services import stream as stream_module
from tests.factories import StreamRequestFactory, StreamSessionFactory
from tests.sessions_app.chunking_engine import ChunkingEngine, settled

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def engine(monkeypatch) -> Iterator[ChunkingEngine]:
    fake = ChunkingEngine()
    engine_install(fake, {"loaded": True})  # type: ignore[arg-type]  (a stand-in engine)
    monkeypatch.setattr("sessions_app.services.stream.STOP_POLL_SECONDS", 0.0)
    yield fake
    engine_install(None, {"error": "no engine in this test process"})


def _queued(**session_fields: Any) -> StreamRequest:
    session = StreamSessionFactory(chunk_duration=1.0, fps=25, batch_size=4, **session_fields)
    return StreamRequestFactory(session=session, audio_file="uploads/stream/x.wav")


def _names(request: StreamRequest) -> list[str]:
    return [e.payload["event"] for e in events_after(request.session.session_id, 0)]


def test_each_chunk_is_recorded_and_announced_then_complete(engine, redis_server):
    request = _queued()
    services.stream_request_run(request_pk=request.pk)
    settled(request)
    assert request.status == StreamRequest.Status.COMPLETED and request.total_chunks == 3
    assert request.generated_seconds == pytest.approx(sum(c.duration for c in request.chunks.all()))
    assert request.first_chunk_at is not None and request.worker_id
    assert engine.config.chunk_seconds == 1.0 and engine.config.batch_size == 4
    assert engine.audio_track == AUDIO_TRACK  # the HLS segmenter's continuous audio
    assert _names(request) == ["speaking_started", "chunk", "chunk", "chunk"] + [
        "complete",
        "speaking_ended",
    ]
    chunk = events_after(request.session.session_id, 0)[1].payload
    assert chunk == {
        "event": "chunk",
        "url": f"/chunks/{request.request_id}/chunk_0001.mp4",
        "index": 0,
        "total_chunks": 3,
        "duration": 1.0,
        "creation_time": chunk["creation_time"],
        "request_id": request.request_id,
    }
    assert StreamChunk.objects.filter(request=request).count() == 3
    # where the engine's time went, kept with the utterance in milliseconds
    assert request.engine_timings == {
        "audio_features_ms": 250.0,
        "first_batch_ms": 500.0,
        "first_batch_frames": 5,
        "first_frame_ms": 800.0,
        "total_ms": 2500.0,
    }


def test_an_utterance_queued_beyond_capacity_waits_for_room_in_the_engine(engine, redis_server):
    request = _queued()
    services.stream_request_run(request_pk=request.pk, wait_for_room=True)
    settled(request)
    assert engine.wait_for_room is True and request.status == StreamRequest.Status.COMPLETED


def test_the_followers_hear_when_a_stream_degrades_and_recovers(engine, redis_server):
    request = _queued()
    engine.total, engine.repeated = 5, [0, 9, 12, 0, 0]
    services.stream_request_run(request_pk=request.pk)
    settled(request)
    payloads = [e.payload for e in events_after(request.session.session_id, 0)]
    quality = [p for p in payloads if p["event"] in ("degraded", "recovered")]
    assert quality == [
        {"event": "degraded", "index": 1, "repeated_frames": 9, "request_id": request.request_id},
        {"event": "recovered", "index": 3, "request_id": request.request_id},
    ]
    names = [p["event"] for p in payloads]
    assert names.index("degraded") == names.index("chunk") + 2  # right after chunk 1


def test_it_runs_a_request_once(engine, redis_server):
    request = _queued()
    services.stream_request_run(request_pk=request.pk)
    services.stream_request_run(request_pk=request.pk)
    settled(request)
    assert _names(request).count("complete") == 1


def test_an_interruption_stops_within_one_chunk(engine, redis_server):
    request = _queued()
    engine.total = 10
    engine.on_chunk = lambda index: (
        index == 1 and services.session_interrupt(session=request.session)
    )
    services.stream_request_run(request_pk=request.pk)
    settled(request)
    assert request.status == StreamRequest.Status.INTERRUPTED
    assert StreamChunk.objects.filter(request=request).count() == 2
    names = _names(request)
    assert names[-2:] == ["interrupted", "speaking_ended"] and "complete" not in names
    # the engine's timings are kept for a stopped utterance too (its first frame's)
    deadline = time.monotonic() + 10
    while not request.engine_timings and time.monotonic() < deadline:
        time.sleep(0.05)
        request.refresh_from_db()
    assert request.engine_timings["first_frame_ms"] == 800.0
    assert "total_ms" not in request.engine_timings  # it never finished


def test_a_hang_up_as_a_chunk_is_announced_keeps_its_shorter_expiry(
    engine, redis_server, monkeypatch
):
    """The caller of /generate/stream hangs up (the web process stops the utterance and
    shortens the session's expiry) just after the worker announced a chunk: the chunk's
    keep-alive must not push the expiry back out."""
    request = _queued(user_id=SESSION_LABEL)
    engine.total = 4
    announce = stream_module._publish

    def announce_then_hang_up(stopped: StreamRequest, payload: dict[str, Any]) -> bool:
        announced = announce(stopped, payload)
        if payload["event"] == "chunk" and payload["index"] == 1:
            generate_stream_finish(session_pk=stopped.session.pk)
        return announced

    monkeypatch.setattr(stream_module, "_publish", announce_then_hang_up)
    services.stream_request_run(request_pk=request.pk)
    settled(request)
    session = StreamSession.objects.get(pk=request.session.pk)
    assert request.status == StreamRequest.Status.INTERRUPTED
    assert session.expires_at <= timezone.now() + timedelta(seconds=CHUNKS_KEPT_SECONDS)


def test_an_ended_session_is_not_streamed_and_loses_its_files(engine, redis_server):
    request = _queued(status=StreamSession.Status.ENDED)
    services.stream_request_run(request_pk=request.pk)
    request.refresh_from_db()
    assert request.status == StreamRequest.Status.QUEUED and _names(request) == []


def test_an_engine_failure_is_reported_as_an_error_event(engine, redis_server, monkeypatch):
    request = _queued()

    def broken(*args: Any, **kwargs: Any) -> None:
        raise InferenceError("the audio is shorter than one video frame", permanent=True)

    monkeypatch.setattr(engine, "stream_chunks", broken)
    services.stream_request_run(request_pk=request.pk)
    request.refresh_from_db()
    assert request.status == StreamRequest.Status.FAILED and "shorter" in request.error
    error = events_after(request.session.session_id, 0)[1].payload
    assert error["event"] == "error" and "shorter" in error["message"]


# Not transactional: the row stays invisible to a live stack's worker, whose own periodic
# sweep would otherwise reap it first.
@pytest.mark.django_db
def test_orphaned_streams_of_dead_workers_fail(redis_server, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    request = _queued()
    StreamRequest.objects.filter(pk=request.pk).update(
        status=StreamRequest.Status.STREAMING,
        worker_id="gone-1",
        started_at=timezone.now() - timedelta(minutes=5),
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert services.stream_orphans_reap(live_worker_ids={"alive-1"}) == 1
    request.refresh_from_db()
    assert request.status == StreamRequest.Status.FAILED
    assert _names(request) == ["error", "speaking_ended"]
