from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from avatars.models import Avatar
from tests.factories import AvatarFactory

pytestmark = pytest.mark.django_db


def _post(api, path: Path, avatar_id: str = "anna", name: str | None = None, **fields):
    upload = SimpleUploadedFile(name or path.name, path.read_bytes(), "video/mp4")
    return api.post("/avatars/prepare", {"avatar_id": avatar_id, "video_file": upload, **fields})


def _uploads() -> list[Path]:
    return list((Path(settings.MEDIA_ROOT) / "uploads").rglob("*.*"))


def test_it_stores_the_video_and_queues_one_preparation(
    api, upload_media, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = _post(api, upload_media["video"], batch_size=8, bbox_shift=3)
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "queued" and body["status_url"] == "/avatars/anna"
    avatar = Avatar.objects.get(owner=api.user, avatar_id="anna")
    assert (avatar.batch_size, avatar.bbox_shift, avatar.revision) == (8, 3, 1)
    assert (Path(settings.MEDIA_ROOT) / avatar.source_video.name).is_file()
    assert len(callbacks) == 2  # the enqueue and the "queued" event


def test_a_ready_avatar_is_kept_without_force_recreate(api, upload_media):
    AvatarFactory(owner=api.user, avatar_id="anna", status=Avatar.Status.READY)
    before = _uploads()
    response = _post(api, upload_media["video"])
    assert response.status_code == 200
    assert response.json()["status"] == "ready"
    assert "force_recreate" in response.json()["message"]
    assert _uploads() == before


def test_an_avatar_being_prepared_is_a_conflict(api, upload_media):
    AvatarFactory(owner=api.user, avatar_id="anna", status=Avatar.Status.PREPARING)
    response = _post(api, upload_media["video"], force_recreate="true")
    assert response.status_code == 409
    assert "already being prepared" in response.json()["message"]


@pytest.mark.parametrize(
    "key,name,status,needle",
    [
        ("text", "notes.txt", 415, "must be a video"),
        ("text", "notes.mp4", 400, "not a readable video"),
        ("corrupt_mp4", None, 400, "not a readable video"),
        ("one_frame", None, 400, "single frame"),
    ],
)
def test_bad_videos_are_refused_before_anything_is_queued(
    api, upload_media, django_capture_on_commit_callbacks, key, name, status, needle
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = _post(api, upload_media[key], name=name)
    assert response.status_code == status, response.json()
    assert needle in response.json()["message"]
    assert callbacks == [] and not Avatar.objects.exists() and _uploads() == []


def test_too_large_uploads_are_refused_with_413(api, upload_media, settings):
    settings.MAX_VIDEO_UPLOAD_BYTES = 1024
    response = _post(api, upload_media["video"])
    assert response.status_code == 413
    assert response.json()["message"] == "video_file is larger than the 0 MB limit."
    assert not Avatar.objects.exists() and _uploads() == []


def test_too_long_videos_are_refused(api, upload_media, settings):
    settings.MAX_VIDEO_SECONDS = 0.2
    response = _post(api, upload_media["video"])
    assert response.status_code == 400
    assert "the limit is 0.2 s" in response.json()["message"]


@pytest.mark.parametrize("avatar_id", ["../etc", "a b", "", "x" * 65, "-dash"])
def test_hostile_avatar_ids_are_refused(api, upload_media, avatar_id):
    response = _post(api, upload_media["video"], avatar_id=avatar_id)
    assert response.status_code == 400
    assert "avatar_id" in response.json()["message"]
    assert not Avatar.objects.exists()


def test_the_video_field_is_required(api):
    response = api.post("/avatars/prepare", {"avatar_id": "anna"})
    assert response.status_code == 400
    assert response.json()["message"] == "video_file: This field is required."


def test_it_needs_authentication(upload_media, client):
    with upload_media["video"].open("rb") as handle:
        response = client.post("/avatars/prepare", {"avatar_id": "a", "video_file": handle})
    assert response.status_code == 401
