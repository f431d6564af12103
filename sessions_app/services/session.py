"""Session lifecycle (web side): create, stream an utterance, interrupt, keep alive, end."""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from avatars.selectors import avatar_get_usable_for_user
from avatars.services.avatar import avatar_dir
from musetalk_site.broker import message_send
from musetalk_site.errors import ApplicationError
from musetalk_site.ids import new_request_id
from musetalk_site.placement import stream_queue
from musetalk_site.quotas import (
    quota_limits_for_user,
    quota_minutes_check,
    quota_owner_lock,
    quota_sessions_check,
)
from musetalk_site.uploads import audio_upload_check
from sessions_app.admission import (
    MAX_WAIT_SECONDS,
    StreamAdmission,
    session_admission_check,
    stream_admission_check,
)
from sessions_app.hls import hls_idle_missing, hls_session_files_remove
from sessions_app.models import StreamRequest, StreamSession
from sessions_app.realtime import event_publish
from sessions_app.selectors import session_open_count_for_user

logger = logging.getLogger(__name__)


def prebuffer_frames(session: StreamSession) -> int:
    """The frames a WebRTC viewer's track queues before it goes live
    (``WEBRTC_AUDIO_PREBUFFER_SECONDS``); the worker makes them first, in one batch."""
    return max(1, round(settings.WEBRTC_AUDIO_PREBUFFER_SECONDS * session.fps))


def chunk_dir(request_id: str) -> Path:
    """Where the chunks of one utterance are written: MEDIA_ROOT/chunks/<request_id>/."""
    return Path(settings.MEDIA_ROOT) / "chunks" / request_id


def _expiry() -> datetime:
    return timezone.now() + timedelta(seconds=settings.SESSION_TTL_SECONDS)


def session_create(
    *,
    owner: User,
    avatar_id: str,
    user_id: str = "",
    batch_size: int = 2,
    fps: int = 25,
    chunk_duration: float = 2.0,
    kind: str = StreamSession.Kind.SSE,
    wait: bool = False,
    wait_seconds: float = MAX_WAIT_SECONDS,
    playback_fps: int | None = None,
) -> StreamSession:
    """Open a streaming session on one of the owner's ready avatars. An avatar without its
    HLS idle parts (prepared before they were made at preparation) gets them from the worker.
    ``kind`` only labels how the app means to play it: every session has every feed.
    Beyond the workers' capacity: 429, or with ``wait`` after up to ``wait_seconds`` (at
    most MAX_WAIT_SECONDS) of waiting for room."""
    avatar = avatar_get_usable_for_user(user=owner, avatar_id=avatar_id)
    session_admission_check(fps=fps, wait_seconds=wait_seconds if wait else 0.0)
    with transaction.atomic():
        _sessions_quota_check(owner)
        session = StreamSession.objects.create(
            owner=owner,
            avatar=avatar,
            user_id=user_id,
            batch_size=batch_size,
            fps=fps,
            chunk_duration=chunk_duration,
            kind=kind,
            playback_fps=playback_fps,
            expires_at=_expiry(),
        )
    if hls_idle_missing(avatar=avatar):
        transaction.on_commit(lambda: _send_idle_build(avatar.pk))
    return session


def _sessions_quota_check(owner: User) -> None:
    """403 when the owner already has as many sessions open as the quota allows (inside the
    creating transaction: the owner's requests wait for each other here)."""
    limits = quota_limits_for_user(user=owner)
    if limits.active_sessions:
        quota_owner_lock(user=owner)
        quota_sessions_check(limits=limits, used=session_open_count_for_user(user=owner))


def _send_idle_build(avatar_pk: int) -> None:
    from sessions_app.tasks import hls_idle_build

    hls_idle_build.send(avatar_pk)


def _check_open(session: StreamSession) -> None:
    """Refuse work on an ended or expired session (an overdue one is expired now)."""
    if session.status == StreamSession.Status.ACTIVE and session.expires_at <= timezone.now():
        _expire_one(session)
        session.refresh_from_db()
    if session.status != StreamSession.Status.ACTIVE:
        raise ApplicationError(
            f"Session {session.session_id} has {session.status}.",
            {"session_id": session.session_id, "status": session.status},
            status=410,
        )


def session_touch(*, session: StreamSession) -> None:
    """Activity pushes the expiry SESSION_TTL_SECONDS into the future."""
    now = timezone.now()
    StreamSession.objects.filter(pk=session.pk, status=StreamSession.Status.ACTIVE).update(
        last_activity_at=now, expires_at=now + timedelta(seconds=settings.SESSION_TTL_SECONDS)
    )


def session_keepalive(*, session: StreamSession) -> StreamSession:
    """Extend an open session's expiry."""
    _check_open(session)
    session_touch(session=session)
    session.refresh_from_db()
    return session


def _active_stream_error(session: StreamSession, active: StreamRequest | None) -> ApplicationError:
    return ApplicationError(
        "A stream is already active for this session; wait for it to complete, "
        "or send interrupt=true to replace it.",
        {
            "session_id": session.session_id,
            "request_id": active.request_id if active else None,
            "status": active.status if active else None,
        },
        status=409,
    )


def session_stream_start(
    *, session: StreamSession, audio: UploadedFile, interrupt: bool = False
) -> StreamRequest:
    """Store the utterance and queue its streaming; 409 while another one is active
    unless ``interrupt``, which stops the active one first; 429 beyond capacity."""
    return session_stream_admit(session=session, audio=audio, interrupt=interrupt)[0]


def session_stream_admit(
    *,
    session: StreamSession,
    audio: UploadedFile,
    interrupt: bool = False,
    wait: bool = False,
    delivery: str = StreamRequest.CHUNKS,
    cycle_start: int = 0,
) -> tuple[StreamRequest, StreamAdmission]:
    """:func:`session_stream_start`, where ``wait`` queues an utterance beyond capacity
    instead of refusing it (a worker takes it when it has room); says how it was admitted.
    ``delivery``: chunks, or frames for a WebRTC peer (starting at idle-loop position
    ``cycle_start``)."""
    info = audio_upload_check(upload=audio)
    _check_open(session)
    _minutes_quota_check(session.owner, info.duration_s)
    admission = stream_admission_check(session=session, wait=wait)
    request = StreamRequest(
        session=session,
        request_id=new_request_id(session.avatar.avatar_id),
        delivery=delivery,
        cycle_start=cycle_start,
    )
    suffix = Path(audio.name or "audio.wav").suffix.lower()[:8] or ".wav"
    name = f"uploads/stream/{session.owner_id}/{request.request_id}{suffix}"
    request.audio_file.save(name, audio, save=False)
    try:
        with transaction.atomic():
            _queue_locked(session, request, interrupt, wait_for_room=admission.queued)
    except IntegrityError:
        # Another upload to the same session won the race for "the" active stream.
        media_file_delete(name=request.audio_file.name)
        raise _active_stream_error(session, None) from None
    except BaseException:
        media_file_delete(name=request.audio_file.name)
        raise
    return request, admission


def _minutes_quota_check(owner: User, seconds: float) -> None:
    """429 when an utterance of ``seconds`` would pass the owner's minutes of the month."""
    limits = quota_limits_for_user(user=owner)
    quota_minutes_check(user=owner, limits=limits, needed_seconds=seconds)


def _queue_locked(
    session: StreamSession, request: StreamRequest, interrupt: bool, *, wait_for_room: bool
) -> None:
    StreamSession.objects.select_for_update().filter(pk=session.pk).first()
    active = session.requests.filter(status__in=StreamRequest.ACTIVE_STATUSES).first()
    if active is not None and not interrupt:
        raise _active_stream_error(session, active)
    _interrupt_requests(session)
    request.save()
    session_touch(session=session)
    pk, folder, fps = request.pk, str(avatar_dir(session.avatar)), session.fps
    transaction.on_commit(
        lambda: _send_stream(pk, folder=folder, fps=fps, wait_for_room=wait_for_room)
    )


def _send_stream(request_pk: int, *, folder: str, fps: int, wait_for_room: bool) -> None:
    """Send the utterance to the worker placement chooses (room, the avatar warm), else
    to the shared queue; one queued beyond capacity waits in that worker for room."""
    from sessions_app.tasks import session_stream

    queue = stream_queue(folder=folder, fps=fps)
    args = (request_pk, True) if wait_for_room else (request_pk,)
    message_id = message_send(session_stream, *args, queue_name=queue)
    # Recorded for stream_lost_reap and for the admin (which worker's queue took it), also
    # when the worker claimed it before this send returned: the reaper only reads queued rows.
    StreamRequest.objects.filter(pk=request_pk, message_id="").update(message_id=message_id)


def _interrupt_requests(session: StreamSession) -> list[str]:
    """Stop the session's active utterance; its ``interrupted`` event goes out on commit.

    A streaming worker notices within one chunk (its ``cancelled`` hook reads the status);
    events it publishes afterwards are refused by the event store.
    """
    now = timezone.now()
    stopped = []
    for request in session.requests.filter(status__in=StreamRequest.ACTIVE_STATUSES):
        changed = StreamRequest.objects.filter(pk=request.pk, status=request.status).update(
            status=StreamRequest.Status.INTERRUPTED, finished_at=now
        )
        if changed:
            stopped.append(request.request_id)
            was_speaking = request.status == StreamRequest.Status.STREAMING
            transaction.on_commit(
                partial(_publish_interrupted, session, request.request_id, was_speaking)
            )
    return stopped


def _publish_interrupted(session: StreamSession, request_id: str, was_speaking: bool) -> None:
    payload = {"event": "interrupted", "request_id": request_id}
    event_publish(session.session_id, payload, stop=request_id)
    if was_speaking:
        ended = {"event": "speaking_ended", "request_id": request_id, "reason": "interrupted"}
        event_publish(session.session_id, ended)


def session_interrupt(*, session: StreamSession) -> list[str]:
    """Stop the active utterance, if any; returns the request ids that were stopped."""
    _check_open(session)
    with transaction.atomic():
        stopped = _interrupt_requests(session)
        session_touch(session=session)
    return stopped


def session_end(*, session: StreamSession) -> StreamSession:
    """End an active session; an utterance still streaming is marked interrupted."""
    now = timezone.now()
    ended = StreamSession.objects.filter(pk=session.pk, status=StreamSession.Status.ACTIVE).update(
        status=StreamSession.Status.ENDED, ended_at=now
    )
    if not ended:
        session.refresh_from_db()
        raise ApplicationError(
            f"Session {session.session_id} is already {session.status}.",
            {"session_id": session.session_id, "status": session.status},
            status=409,
        )
    _close(session, reason="ended")
    session.refresh_from_db()
    return session


def session_delete(*, session: StreamSession) -> StreamSession:
    """End the session (if still open) and remove its chunk files; idempotent."""
    if session.status == StreamSession.Status.ACTIVE:
        try:
            return session_end(session=session)
        except ApplicationError:
            pass  # ended or expired concurrently: still remove what is left
    transaction.on_commit(lambda: session_files_remove(session=session))
    session.refresh_from_db()
    return session


def _close(session: StreamSession, *, reason: str) -> None:
    """After the status left ACTIVE: stop its utterance, tell followers, remove its files."""
    _interrupt_requests(session)
    payload = {"event": "session_ended", "session_id": session.session_id, "reason": reason}
    transaction.on_commit(lambda: event_publish(session.session_id, payload))
    transaction.on_commit(lambda: session_files_remove(session=session))


def session_files_remove(*, session: StreamSession) -> None:
    """Delete the chunk folders and uploaded audio of every utterance of ``session``."""
    for request in session.requests.all():
        shutil.rmtree(chunk_dir(request.request_id), ignore_errors=True)
        media_file_delete(name=request.audio_file.name if request.audio_file else "")
    hls_session_files_remove(session_id=session.session_id)


def media_file_delete(*, name: str | None) -> None:
    if name:
        (Path(settings.MEDIA_ROOT) / name).unlink(missing_ok=True)


def _expire_one(session: StreamSession) -> bool:
    now = timezone.now()
    expired = StreamSession.objects.filter(
        pk=session.pk, status=StreamSession.Status.ACTIVE, expires_at__lte=now
    ).update(status=StreamSession.Status.EXPIRED, ended_at=now)
    if expired:
        _close(session, reason="expired")
    return bool(expired)


def sessions_expire() -> int:
    """Expire the sessions idle past SESSION_TTL_SECONDS and remove their files.

    Called periodically from the worker's heartbeat thread; safe to run anywhere, any
    number of times (each session is claimed with a conditional update).
    """
    overdue = StreamSession.objects.filter(
        status=StreamSession.Status.ACTIVE, expires_at__lte=timezone.now()
    )
    count = 0
    for session in overdue:
        count += _expire_one(session)
    if count:
        logger.info("expired %s idle session(s)", count)
    return count


def session_chunk_served(*, session: StreamSession) -> None:
    StreamSession.objects.filter(pk=session.pk).update(chunks_served=F("chunks_served") + 1)
