from __future__ import annotations

import secrets
from pathlib import Path

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

AVATAR_ID_VALIDATOR = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
    "avatar_id must be 1-64 letters, digits, '_' or '-', starting with a letter or digit.",
)


def _video_upload_to(instance: Avatar, filename: str) -> str:
    suffix = Path(filename).suffix.lower()[:8]
    return f"uploads/videos/{instance.owner_id}/{secrets.token_hex(8)}{suffix}"


def _audio_upload_to(instance: GenerationJob, filename: str) -> str:
    suffix = Path(filename).suffix.lower()[:8]
    return f"uploads/audio/{instance.owner_id}/{secrets.token_hex(8)}{suffix}"


class Avatar(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        PREPARING = "preparing", "Preparing"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="avatars"
    )
    avatar_id = models.CharField(max_length=64, validators=[AVATAR_ID_VALIDATOR])
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    progress = models.PositiveSmallIntegerField(
        default=0, validators=[MinValueValidator(0), MaxValueValidator(100)]
    )
    stage = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    source_video = models.FileField(upload_to=_video_upload_to, max_length=255, blank=True)
    # An optional separate clip shown while the avatar is not talking (the seed's
    # idle_video_file); without one, the idle loop is the avatar's own frames played back and
    # forth.
    idle_video = models.FileField(upload_to=_video_upload_to, max_length=255, blank=True)
    bbox_shift = models.IntegerField(default=0)
    batch_size = models.PositiveIntegerField(default=20)
    # Bumped by every (re-)preparation; a worker only writes results for the revision it claimed.
    revision = models.PositiveIntegerField(default=0)
    # True while the previous preparation keeps serving during a force_recreate.
    has_assets = models.BooleanField(default=False)
    worker_id = models.CharField(max_length=128, blank=True, help_text="Worker that claimed it")
    # The broker's id of the message last sent for this revision, when, and how often it was
    # re-sent after the broker lost it (musetalk_site/broker.py).
    message_id = models.CharField(max_length=64, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    resends = models.PositiveSmallIntegerField(default=0)
    frame_count = models.PositiveIntegerField(null=True, blank=True)
    fps = models.FloatField(null=True, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    size_bytes = models.BigIntegerField(null=True, blank=True)
    face_backend = models.CharField(max_length=64, blank=True)
    model_profile = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "avatar_id"], name="avatar_unique_per_owner")
        ]
        indexes = [models.Index(fields=["owner", "status"])]

    def __str__(self) -> str:
        return f"{self.avatar_id} ({self.owner_id})"

    @property
    def storage_key(self) -> str:
        """Relative folder of the prepared assets under MEDIA_ROOT."""
        return f"avatars/{self.owner_id}/{self.avatar_id}"


class GenerationJob(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    request_id = models.CharField(max_length=100, unique=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="generation_jobs"
    )
    avatar = models.ForeignKey(Avatar, on_delete=models.CASCADE, related_name="jobs")
    audio_file = models.FileField(upload_to=_audio_upload_to, max_length=255, blank=True)
    batch_size = models.PositiveIntegerField(default=2)
    fps = models.PositiveIntegerField(default=25)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    result = models.FileField(max_length=255, blank=True)
    # The seed's output_name: the name the video is downloaded under (without ".mp4").
    output_name = models.CharField(max_length=100, blank=True)
    frame_count = models.PositiveIntegerField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(default=0)
    worker_id = models.CharField(max_length=128, blank=True, help_text="Worker that claimed it")
    # As on Avatar: the message last sent, when, and how often the broker lost it.
    message_id = models.CharField(max_length=64, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    resends = models.PositiveSmallIntegerField(default=0)
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    first_frame_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-queued_at"]
        indexes = [models.Index(fields=["owner", "status"])]

    def __str__(self) -> str:
        return self.request_id

    @property
    def is_finished(self) -> bool:
        return self.status in {self.Status.SUCCEEDED, self.Status.FAILED, self.Status.CANCELLED}
