"""Streaming one utterance (worker side): chunks are announced the moment they exist."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, close_old_connections, transaction
from django.db.models import F
from django.utils import timezone

from avatars.services.avatar import avatar_dir
from inference.config import GenerateConfig
from inference.errors import StreamCancelled
from inference.layout import AUDIO_TRACK, chunk_name
from inference.sinks import Chunk, Frame, StreamResult
from musetalk_site.broker import messages_lost
from musetalk_site.engine import current_worker_id, get_engine
from musetalk_site.quotas import quota_minutes_record
from musetalk_site.redis_conn import redis_client
from musetalk_site.runs import claimed_run, failure_message
from sessions_app.models import StreamChunk, StreamRequest, StreamSession
from sessions_app.realtime import event_publish
from sessions_app.services.session import (
    chunk_dir,
    media_file_delete,
    prebuffer_frames,
    session_files_remove,
    session_touch,
)
from sessions_app.webrtc.transport import FramePublisher

logger = logging.getLogger(__name__)

STOP_POLL_SECONDS = 0.5
INTERNAL_ERROR = "internal error while streaming"
WORKER_LOST = "the worker streaming this utterance stopped unexpectedly; please try again"
QUEUE_LOST = "the queue lost this utterance (a worker or Redis restarted); please send it again"


def chunk_url(request_id: str, index: int) -> str:
    return f"/chunks/{request_id}/{chunk_name(index + 1)}"


def chunk_event(chunk: StreamChunk, total_chunks: int) -> dict[str, Any]:
    """The seed's ``chunk`` event (plus ``request_id``)."""
    request_id = chunk.request.request_id
    return {
        "event": "chunk",
        "url": chunk_url(request_id, chunk.index),
        "index": chunk.index,
        "total_chunks": total_chunks,
        "duration": chunk.duration,
        "creation_time": chunk.created_at.isoformat(),
        "request_id": request_id,
    }


def _publish(request: StreamRequest, payload: dict[str, Any]) -> bool:
    """Publish for ``request`` unless it was interrupted; False when refused."""
    session_id = request.session.session_id
    return event_publish(session_id, payload, unless_stopped=request.request_id) is not None


def stream_request_run(*, request_pk: int, wait_for_room: bool = False) -> None:
    """Start one claimed utterance in this worker's engine (idempotent) and return: the
    utterance is a stream in the engine's scheduler, not a thread; its chunks are recorded
    and announced from the scheduler's delivery threads, and it finishes there too."""
    claimed = StreamRequest.objects.filter(
        pk=request_pk,
        status=StreamRequest.Status.QUEUED,
        session__status=StreamSession.Status.ACTIVE,
    ).update(
        status=StreamRequest.Status.STREAMING,
        started_at=timezone.now(),
        worker_id=current_worker_id(),
    )
    if not claimed:
        logger.info("stream request %s: nothing to do (not queued)", request_pk)
        return
    request = StreamRequest.objects.select_related("session__avatar").get(pk=request_pk)
    stream = None
    try:
        with claimed_run(
            f"stream {request.request_id}",
            on_failure=lambda message: _failed(request, message),
            internal_message=INTERNAL_ERROR,
        ):
            _publish(request, {"event": "speaking_started", "request_id": request.request_id})
            if request.delivery == StreamRequest.FRAMES:
                _frames_start(request, wait_for_room)
                return
            progress = _Progress(request)
            stream = get_engine().stream_chunks(
                avatar_dir(request.session.avatar),
                Path(settings.MEDIA_ROOT) / _audio_name(request),
                chunk_dir(request.request_id),
                config=GenerateConfig(
                    batch_size=request.session.batch_size,
                    fps=request.session.fps,
                    chunk_seconds=request.session.chunk_duration,
                ),
                on_chunk=progress.chunk_ready,
                cancelled=_stop_checker(request),
                audio_track=AUDIO_TRACK,
                label=f"stream {request.request_id}",
                wait_for_room=wait_for_room,
            )
    except BaseException:
        _cleanup(request)
        if request.delivery == StreamRequest.FRAMES:
            _frames_end(request, "the utterance could not start")
        raise
    if stream is None:  # a typed failure, recorded by claimed_run
        if request.delivery == StreamRequest.FRAMES:
            _frames_end(request, "the utterance could not start")
        _cleanup(request)
        return
    _finish_when_done(stream, progress)


def _finish_when_done(stream: Any, progress: _Progress | _FrameProgress) -> None:
    """Finish the utterance off the engine's threads once its stream is done, with the
    engine's timings (kept however it ended)."""
    timings = stream.timings
    stream.done.add_done_callback(lambda done: _finishing.submit(progress.finish, done, timings))


def _audio_name(request: StreamRequest) -> str:
    audio = request.audio_file.name
    assert audio is not None  # session_stream_start stores the audio before the row exists
    return audio


# Finishing an utterance touches the database: never on the engine's own threads.
_finishing = ThreadPoolExecutor(2, thread_name_prefix="stream-finish")


class _Progress:
    """One utterance's chunks as they are written (delivery threads), and its end."""

    def __init__(self, request: StreamRequest) -> None:
        self.request = request
        self.emitted = 0
        self.total: int | None = None
        self.degraded = False

    def chunk_ready(self, chunk: Chunk) -> bool:
        """Record and announce one chunk; False (stop) once the utterance was stopped."""
        try:
            self.total = chunk.total_chunks
            if not _chunk_ready(self.request, chunk):
                return False
            self.emitted += 1
            self._quality(chunk)
            return True
        finally:
            close_old_connections()

    def _quality(self, chunk: Chunk) -> None:
        """Tell the followers when the stream falls behind (frames repeated) and recovers."""
        degraded = chunk.repeated_frames > 0
        if degraded == self.degraded:
            return
        self.degraded = degraded
        payload: dict[str, Any] = {
            "event": "degraded" if degraded else "recovered",
            "index": chunk.index,
            **_ids(self.request),
        }
        if degraded:
            payload["repeated_frames"] = chunk.repeated_frames
        _publish(self.request, payload)

    def finish(self, done: Future[StreamResult], timings: dict[str, float]) -> None:
        request = self.request
        try:
            _timings_record(request, timings)
            error = done.exception()
            if error is None or isinstance(error, StreamCancelled):
                _finished(request, self.emitted, self.total)
            else:
                message = failure_message(error)
                if message is None:
                    logger.error("stream %s crashed", request.request_id, exc_info=error)
                _failed(request, message or INTERNAL_ERROR)
        except Exception:
            logger.exception("stream %s: finishing failed", request.request_id)
        finally:
            try:
                _cleanup(request)
            finally:
                close_old_connections()


class _FrameProgress:
    """One WebRTC utterance's frames as they are made (delivery threads): each one to the
    Redis Stream the peer's process reads, then the end of it."""

    def __init__(self, request: StreamRequest) -> None:
        self.request = request
        self.publisher = FramePublisher(redis_client(), request.request_id)

    def frame_ready(self, frame: Frame) -> bool:
        if frame.index == 0:
            StreamRequest.objects.filter(pk=self.request.pk).update(first_chunk_at=timezone.now())
            close_old_connections()
        planes = frame.i420()
        avatar = self.request.session.avatar
        cycle = (self.request.cycle_start + frame.index) % (2 * (avatar.frame_count or 1))
        self.publisher.frame(
            index=frame.index,
            cycle=cycle,
            i420=planes.tobytes(),
            width=planes.shape[1],
            height=planes.shape[0] * 2 // 3,
        )
        return True

    def finish(self, done: Future[StreamResult], timings: dict[str, float]) -> None:
        request = self.request
        frames = self.publisher.count
        try:
            _timings_record(request, timings)
            error = done.exception()
            if error is None or isinstance(error, StreamCancelled):
                self.publisher.end()
                seconds = frames / max(1, request.session.fps)
                finished = StreamRequest.objects.filter(
                    pk=request.pk, status=StreamRequest.Status.STREAMING
                ).update(
                    status=StreamRequest.Status.COMPLETED,
                    finished_at=timezone.now(),
                    generated_seconds=seconds,
                )
                if finished:
                    quota_minutes_record(user_id=request.session.owner_id, seconds=seconds)
                    payload = {"event": "complete", "total_frames": frames, **_ids(request)}
                    _publish(request, payload)
                    ended = {"event": "speaking_ended", "reason": "complete", **_ids(request)}
                    _publish(request, ended)
            else:
                message = failure_message(error)
                if message is None:
                    logger.error("frames %s crashed", request.request_id, exc_info=error)
                self.publisher.end(message or INTERNAL_ERROR)
                _failed(request, message or INTERNAL_ERROR)
        except Exception:
            logger.exception("frames %s: finishing failed", request.request_id)
        finally:
            try:
                _cleanup(request)
            finally:
                close_old_connections()


def _frames_start(request: StreamRequest, wait_for_room: bool) -> None:
    """Start a WebRTC utterance: its frames one by one to the peer's process."""
    progress = _FrameProgress(request)
    stream = get_engine().stream_frames(
        avatar_dir(request.session.avatar),
        Path(settings.MEDIA_ROOT) / _audio_name(request),
        config=GenerateConfig(batch_size=request.session.batch_size, fps=request.session.fps),
        on_frame=progress.frame_ready,
        cycle_start=request.cycle_start,
        cancelled=_stop_checker(request),
        label=f"frames {request.request_id}",
        wait_for_room=wait_for_room,
        head_frames=prebuffer_frames(request.session),
    )
    _finish_when_done(stream, progress)


def _frames_end(request: StreamRequest, message: str) -> None:
    """Tell the peer's process an utterance that never started is over."""
    try:
        FramePublisher(redis_client(), request.request_id).end(message)
    except Exception:
        logger.exception("frames %s: could not end its frame stream", request.request_id)


def _stop_checker(request: StreamRequest) -> Callable[[], bool]:
    """The engine's ``cancelled`` hook: True once the utterance was interrupted or the
    session ended or expired (polled at most every STOP_POLL_SECONDS, on the engine's watcher
    thread). A database that cannot be reached for a moment stops nothing: the connection is
    dropped and the next poll asks again."""
    last = [0.0]

    def cancelled() -> bool:
        now = time.monotonic()
        if now - last[0] < STOP_POLL_SECONDS:
            return False
        last[0] = now
        try:
            return not StreamRequest.objects.filter(
                pk=request.pk,
                status=StreamRequest.Status.STREAMING,
                session__status=StreamSession.Status.ACTIVE,
            ).exists()
        except DatabaseError:
            logger.warning("stream %s: could not ask whether it was stopped", request.request_id)
            close_old_connections()
            return False

    return cancelled


def _chunk_ready(request: StreamRequest, chunk: Chunk) -> bool:
    """Record and announce one encoded chunk; False when the utterance was stopped."""
    row = StreamChunk.objects.create(
        request=request,
        index=chunk.index,
        file=f"chunks/{request.request_id}/{chunk.path.name}",
        duration=round(chunk.duration_s, 3),
    )
    fields: dict[str, Any] = {
        "total_chunks": chunk.total_chunks,
        "generated_seconds": F("generated_seconds") + row.duration,
    }
    if chunk.index == 0:
        fields["first_chunk_at"] = row.created_at
    # A long utterance keeps its session alive. The touch shares a transaction with the
    # check (whose row lock orders it against an interruption's): an interruption that set a
    # shorter expiry (a caller of /generate/stream hung up) comes after it and keeps it.
    with transaction.atomic():
        still_streaming = StreamRequest.objects.filter(
            pk=request.pk, status=StreamRequest.Status.STREAMING
        ).update(**fields)
        if still_streaming:
            session_touch(session=request.session)
    if still_streaming and _publish(request, chunk_event(row, chunk.total_chunks)):
        quota_minutes_record(user_id=request.session.owner_id, seconds=row.duration)
        return True
    row.delete()
    chunk.path.unlink(missing_ok=True)
    return False


def _finished(request: StreamRequest, emitted: int, total: int | None) -> None:
    if total is not None and emitted == total:
        done = StreamRequest.objects.filter(
            pk=request.pk, status=StreamRequest.Status.STREAMING
        ).update(status=StreamRequest.Status.COMPLETED, finished_at=timezone.now())
        if done:
            _publish(request, {"event": "complete", "total_chunks": total, **_ids(request)})
            _publish(request, {"event": "speaking_ended", "reason": "complete", **_ids(request)})
        return
    # Stopped early: an interruption or the session's end already set the status and told
    # the followers. Anything else is a failure.
    if StreamRequest.objects.filter(pk=request.pk, status=StreamRequest.Status.STREAMING).exists():
        logger.error("stream %s: generation stopped before the last chunk", request.request_id)
        _failed(request, INTERNAL_ERROR)


# The engine's timings kept with an utterance (seconds -> ms), its first frame's first.
_TIMINGS_MS = {
    "audio_features_s": "audio_features_ms",
    "first_batch_s": "first_batch_ms",
    "first_frame_s": "first_frame_ms",
    "unet_s": "unet_ms",
    "vae_decode_s": "vae_decode_ms",
    "total_s": "total_ms",
}


def _timings_record(request: StreamRequest, timings: dict[str, float]) -> None:
    """Keep where the engine's time went: the first frame's wait (audio features, then the
    model batch that made frame 0, of ``first_batch_frames`` frames) and the totals."""
    kept: dict[str, float] = {
        name: round(1000 * timings[key], 1) for key, name in _TIMINGS_MS.items() if key in timings
    }
    if "first_batch_frames" in timings:
        kept["first_batch_frames"] = timings["first_batch_frames"]
    StreamRequest.objects.filter(pk=request.pk).update(engine_timings=kept)


def _ids(request: StreamRequest) -> dict[str, str]:
    return {"request_id": request.request_id}


def _failed(request: StreamRequest, message: str) -> None:
    failed = StreamRequest.objects.filter(
        pk=request.pk, status=StreamRequest.Status.STREAMING
    ).update(status=StreamRequest.Status.FAILED, error=message, finished_at=timezone.now())
    if failed:
        _publish(request, {"event": "error", "message": message, **_ids(request)})
        _publish(request, {"event": "speaking_ended", "reason": "error", **_ids(request)})


def _cleanup(request: StreamRequest) -> None:
    """The audio is no longer needed; a session that closed meanwhile loses its files."""
    media_file_delete(name=request.audio_file.name if request.audio_file else "")
    session = StreamSession.objects.get(pk=request.session_id)
    if session.status != StreamSession.Status.ACTIVE:
        session_files_remove(session=session)


def stream_orphans_reap(*, live_worker_ids: set[str]) -> int:
    """Fail utterances whose worker is gone, so their session can stream again."""
    grace = timezone.now() - timedelta(seconds=settings.WORKER_STALE_SECONDS)
    stuck = StreamRequest.objects.filter(
        status=StreamRequest.Status.STREAMING, started_at__lt=grace
    ).select_related("session")
    reaped = 0
    for request in stuck.exclude(worker_id__in=live_worker_ids):
        changed = StreamRequest.objects.filter(
            pk=request.pk, status=StreamRequest.Status.STREAMING
        ).update(status=StreamRequest.Status.FAILED, error=WORKER_LOST, finished_at=timezone.now())
        if changed:
            reaped += 1
            _publish(request, {"event": "error", "message": WORKER_LOST, **_ids(request)})
            _publish(request, {"event": "speaking_ended", "reason": "error", **_ids(request)})
            logger.warning("stream %s: worker %s is gone", request.request_id, request.worker_id)
    return reaped


def stream_lost_reap() -> int:
    """Fail queued utterances whose message the broker lost, so their session can stream
    again. They are not re-sent: speech that starts a minute late would talk over whatever
    the user did next; the ``error`` event tells the app to send it again if it still fits."""
    from sessions_app.tasks import session_stream

    due = timezone.now() - timedelta(seconds=settings.QUEUE_CHECK_AFTER_SECONDS)
    waiting = StreamRequest.objects.filter(status=StreamRequest.Status.QUEUED, queued_at__lt=due)
    changed = 0
    lost = messages_lost(waiting.select_related("session"), queue_name=session_stream.queue_name)
    for request in lost:
        # Only as it was read: a claim, an interruption or a just-recorded message wins.
        failed = StreamRequest.objects.filter(
            pk=request.pk, status=StreamRequest.Status.QUEUED, message_id=request.message_id
        ).update(status=StreamRequest.Status.FAILED, error=QUEUE_LOST, finished_at=timezone.now())
        if failed:
            changed += 1
            media_file_delete(name=request.audio_file.name if request.audio_file else "")
            _publish(request, {"event": "error", "message": QUEUE_LOST, **_ids(request)})
            logger.warning("stream %s: its message was lost; failed", request.request_id)
    return changed
