"""Quotas on avatars and videos: a preparation counts against the avatars and the storage,
a video against the month's minutes and the storage; a refusal leaves nothing behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from avatars import services
from avatars.models import Avatar, GenerationJob
from avatars.selectors import storage_bytes_for_user
from inference.pipeline import GenerationResult
from musetalk_site.engine import engine_install
from musetalk_site.models import UserQuota
from musetalk_site.quotas import (
    MB,
    month_next,
    quota_generated_seconds,
    quota_minutes_record,
    quota_summary_for_user,
)
from tests.factories import AvatarFactory, GenerationJobFactory

pytestmark = pytest.mark.django_db


def _prepare(api, upload_media, avatar_id: str = "anna", **fields: Any):
    path = upload_media["video"]
    upload = SimpleUploadedFile(path.name, path.read_bytes(), "video/mp4")
    return api.post("/avatars/prepare", {"avatar_id": avatar_id, "video_file": upload, **fields})


def _generate(api, upload_media, avatar_id: str = "anna"):
    path = upload_media["audio"]
    upload = SimpleUploadedFile(path.name, path.read_bytes(), "audio/wav")
    return api.post("/generate", {"avatar_id": avatar_id, "audio_file": upload})


def _stored() -> list[Path]:
    return [path for path in Path(settings.MEDIA_ROOT).rglob("*") if path.is_file()]


def test_a_new_avatar_past_the_avatar_quota_is_refused_with_403(api, upload_media, settings):
    settings.QUOTA_MAX_AVATARS = 2
    AvatarFactory(owner=api.user, avatar_id="one")
    AvatarFactory(owner=api.user, avatar_id="two", status=Avatar.Status.FAILED)
    response = _prepare(api, upload_media)
    assert response.status_code == 403
    assert response.json() == {
        "message": "You have 2 of your 2 avatars; delete one to create another.",
        "extra": {"quota": "avatars", "limit": 2, "used": 2},
    }
    assert Avatar.objects.filter(owner=api.user).count() == 2 and _stored() == []


def test_an_existing_avatar_can_be_prepared_again_at_the_avatar_quota(api, upload_media, settings):
    settings.QUOTA_MAX_AVATARS = 1
    AvatarFactory(owner=api.user, avatar_id="anna", status=Avatar.Status.READY)
    response = _prepare(api, upload_media, force_recreate="true")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "queued"


def test_a_users_own_override_lifts_the_default(api, upload_media, settings):
    settings.QUOTA_MAX_AVATARS = 1
    AvatarFactory(owner=api.user, avatar_id="one")
    UserQuota.objects.create(user=api.user, max_avatars=2)
    assert _prepare(api, upload_media).status_code == 200


def test_a_video_that_does_not_fit_the_storage_quota_is_refused_with_403(
    api, upload_media, settings
):
    settings.QUOTA_STORAGE_MB = 1
    AvatarFactory(owner=api.user, avatar_id="one", size_bytes=MB - 100)
    response = _prepare(api, upload_media)
    assert response.status_code == 403
    body = response.json()
    assert body["message"].startswith("This upload (")
    assert body["message"].endswith(
        "MB) does not fit: you use 1.0 of your 1 MB of storage; "
        "delete avatars or videos to make room."
    )
    assert body["extra"]["quota"] == "storage" and body["extra"]["used_bytes"] == MB - 100
    assert not Avatar.objects.filter(avatar_id="anna").exists() and _stored() == []


def test_a_video_past_the_months_minutes_is_refused_with_429(api, upload_media, settings):
    settings.QUOTA_MONTHLY_MINUTES = 60
    AvatarFactory(owner=api.user, avatar_id="anna")
    quota_minutes_record(user_id=api.user.pk, seconds=3600.0)
    response = _generate(api, upload_media)
    assert response.status_code == 429
    renews = month_next(timezone.now())
    assert response.json()["message"] == (
        "You have used 60 of your 60 minutes this month; "
        f"the allowance renews on {renews:%Y-%m-%d}."
    )
    assert response.json()["extra"]["renews_at"] == renews.isoformat()
    assert not GenerationJob.objects.exists() and _stored() == []


def test_a_video_whose_audio_does_not_fit_the_storage_is_refused_with_403(
    api, upload_media, settings
):
    settings.QUOTA_STORAGE_MB = 1
    AvatarFactory(owner=api.user, avatar_id="anna", size_bytes=MB)
    response = _generate(api, upload_media)
    assert response.status_code == 403
    assert response.json()["extra"]["quota"] == "storage"
    assert not GenerationJob.objects.exists() and _stored() == []


def test_within_the_quotas_a_video_is_queued(api, upload_media, settings):
    settings.QUOTA_MONTHLY_MINUTES, settings.QUOTA_STORAGE_MB = 60, 1
    AvatarFactory(owner=api.user, avatar_id="anna", size_bytes=MB // 2)
    quota_minutes_record(user_id=api.user.pk, seconds=3599.0)
    assert _generate(api, upload_media).status_code == 200


def test_storage_counts_assets_source_videos_audio_and_results(api):
    media = Path(settings.MEDIA_ROOT)
    media.mkdir(parents=True)
    for name, size in (("v.mp4", 1000), ("a.wav", 200), ("r.mp4", 30)):
        (media / name).write_bytes(b"x" * size)
    anna = AvatarFactory(owner=api.user, size_bytes=4000, source_video="v.mp4")
    GenerationJobFactory(owner=api.user, avatar=anna, audio_file="a.wav", result="r.mp4")
    GenerationJobFactory(owner=api.user, avatar=anna, audio_file="deleted.wav")
    AvatarFactory(size_bytes=10**9)  # another user's
    assert storage_bytes_for_user(user=api.user) == 5230


class FakeEngine:
    """Stands in for the inference engine: writes a result file of ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def generate_file(self, avatar_dir: Any, audio: Any, out_path: Path, **kwargs: Any):
        out_path.write_bytes(b"mp4")
        return GenerationResult(out_path, int(self.seconds * 25), 25, self.seconds)


@pytest.fixture
def engine():
    yield engine_install(FakeEngine(seconds=90.0), {"loaded": True})  # type: ignore[arg-type]
    engine_install(None, {"error": "no engine in this test process"})


def test_a_finished_video_is_counted_and_stays_counted_after_its_avatar_is_deleted(
    api, engine, redis_server
):
    job = GenerationJobFactory(owner=api.user, audio_file="uploads/audio/x.wav")
    services.job_run(job_pk=job.pk)
    job.refresh_from_db()
    assert job.status == GenerationJob.Status.SUCCEEDED
    assert quota_generated_seconds(user=api.user) == 90.0
    assert quota_summary_for_user(user=api.user)["usage"]["monthly_minutes"] == 1.5
    services.avatar_delete(avatar=job.avatar)
    assert quota_generated_seconds(user=api.user) == 90.0
