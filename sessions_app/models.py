from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models

from avatars.models import Avatar


def new_session_id() -> str:
    return secrets.token_urlsafe(12)


class StreamSession(models.Model):
    class Kind(models.TextChoices):
        SSE = "sse", "SSE / MSE"
        HLS = "hls", "HLS"
        WEBRTC = "webrtc", "WebRTC"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        ENDED = "ended", "Ended"
        EXPIRED = "expired", "Expired"

    session_id = models.CharField(max_length=32, unique=True, default=new_session_id)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="stream_sessions"
    )
    avatar = models.ForeignKey(Avatar, on_delete=models.CASCADE, related_name="sessions")
    user_id = models.CharField(max_length=128, blank=True, help_text="The app's own end-user label")
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.SSE)
    batch_size = models.PositiveIntegerField(default=2)
    fps = models.PositiveIntegerField(default=25)
    chunk_duration = models.FloatField(default=2.0)
    # WebRTC: frames/s sent to the viewer (>= fps: source frames repeated); None: fps
    playback_fps = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    last_activity_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    chunks_served = models.PositiveIntegerField(default=0)
    # No event of this session has an id above this (see sessions_app/realtime.py): after
    # Redis lost its counter, numbering starts again from here, so ids never go backwards.
    event_floor = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "status"]), models.Index(fields=["expires_at"])]

    def __str__(self) -> str:
        return self.session_id


class StreamRequest(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        STREAMING = "streaming", "Streaming"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        INTERRUPTED = "interrupted", "Interrupted"

    request_id = models.CharField(max_length=100, unique=True)
    session = models.ForeignKey(StreamSession, on_delete=models.CASCADE, related_name="requests")
    audio_file = models.FileField(max_length=255, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    total_chunks = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    first_chunk_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    worker_id = models.CharField(max_length=128, blank=True, help_text="Worker that claimed it")
    # The broker's id of its message: a queued utterance whose message was lost is failed.
    message_id = models.CharField(max_length=64, blank=True)
    # How the worker delivers it: encoded chunks (SSE/MSE, HLS) or single frames (WebRTC, to
    # the process holding the peer connection), starting at idle-loop position cycle_start.
    delivery = models.CharField(
        max_length=8, choices=[("chunks", "Chunks"), ("frames", "Frames")], default="chunks"
    )
    cycle_start = models.PositiveIntegerField(default=0)
    generated_seconds = models.FloatField(
        default=0.0, help_text="Seconds of video delivered (chunks, or frames over WebRTC)"
    )
    # Where its first frame's time went in the engine (milliseconds): audio features, the
    # model batch that made frame 0 and its frames, first frame after the engine took it.
    engine_timings = models.JSONField(default=dict, blank=True)

    CHUNKS = "chunks"
    FRAMES = "frames"
    ACTIVE_STATUSES = (Status.QUEUED, Status.STREAMING)

    class Meta:
        ordering = ["-queued_at"]
        constraints = [
            # The seed's rule "one active stream per session", enforced by the database too.
            models.UniqueConstraint(
                fields=["session"],
                condition=models.Q(status__in=["queued", "streaming"]),
                name="one_active_request_per_session",
            )
        ]

    def __str__(self) -> str:
        return self.request_id


class StreamChunk(models.Model):
    """One encoded chunk of an utterance, in order; replayed to late or reconnecting players."""

    request = models.ForeignKey(StreamRequest, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    file = models.CharField(max_length=255)
    duration = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["request_id", "index"]
        constraints = [
            models.UniqueConstraint(fields=["request", "index"], name="chunk_unique_index")
        ]

    def __str__(self) -> str:
        return f"{self.request_id}#{self.index}"
