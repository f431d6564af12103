from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from avatars.models import Avatar, GenerationJob
from tests.factories import AvatarFactory, GenerationJobFactory

pytestmark = pytest.mark.django_db


def test_list_is_paginated_and_only_shows_my_avatars(api, other_api):
    for n in range(3):
        AvatarFactory(owner=api.user, avatar_id=f"mine{n}")
    AvatarFactory(owner=other_api.user, avatar_id="theirs")
    page = api.get("/avatars/", {"limit": 2}).json()
    assert page["count"] == 3 and len(page["results"]) == 2 and page["next"]
    assert {a["avatar_id"] for a in page["results"]} <= {"mine0", "mine1", "mine2"}


def test_detail_shows_status_progress_and_error(api):
    AvatarFactory(
        owner=api.user, avatar_id="anna", status=Avatar.Status.FAILED, progress=40, error="No face"
    )
    body = api.get("/avatars/anna").json()
    assert (body["status"], body["progress"], body["error"]) == ("failed", 40, "No face")


def test_another_users_avatar_is_not_found_for_every_verb(api, other_api, upload_media):
    AvatarFactory(owner=api.user, avatar_id="anna")
    assert other_api.get("/avatars/anna").status_code == 404
    assert other_api.delete("/avatars/anna").status_code == 404
    assert other_api.get("/avatars/anna/cache/status").status_code == 404
    assert other_api.post("/avatars/anna/cache/warm").status_code == 404
    with upload_media["audio"].open("rb") as handle:
        response = other_api.post("/generate", {"avatar_id": "anna", "audio_file": handle})
    assert response.status_code == 404
    assert Avatar.objects.filter(avatar_id="anna").exists()
    assert not GenerationJob.objects.exists()


def test_another_users_job_is_not_found(api, other_api):
    job = GenerationJobFactory(owner=api.user, status=GenerationJob.Status.SUCCEEDED)
    for path in ("status", "download"):
        assert other_api.get(f"/generate/{job.request_id}/{path}").status_code == 404
    assert other_api.post(f"/generate/{job.request_id}/cancel").status_code == 404
    assert other_api.get("/generate/").json()["count"] == 0


def test_generate_queues_a_job_with_the_seed_fields(
    api, upload_media, django_capture_on_commit_callbacks
):
    AvatarFactory(owner=api.user, avatar_id="anna", status=Avatar.Status.READY)
    with django_capture_on_commit_callbacks() as callbacks, upload_media["audio"].open("rb") as f:
        response = api.post("/generate", {"avatar_id": "anna", "audio_file": f})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["request_id"].startswith("anna_req_") and len(body["request_id"]) == 17
    assert body["status_url"] == f"/generate/{body['request_id']}/status"
    job = GenerationJob.objects.get(request_id=body["request_id"])
    assert (job.batch_size, job.fps, job.status) == (2, 25, "queued")
    assert len(callbacks) == 1


def test_generate_refuses_non_audio_and_unready_avatars(api, upload_media):
    AvatarFactory(owner=api.user, avatar_id="anna", status=Avatar.Status.READY)
    AvatarFactory(owner=api.user, avatar_id="busy", status=Avatar.Status.PREPARING)
    upload = SimpleUploadedFile("voice.wav", upload_media["corrupt_mp4"].read_bytes())
    response = api.post("/generate", {"avatar_id": "anna", "audio_file": upload})
    assert response.status_code == 400 and "not readable audio" in response.json()["message"]
    with upload_media["audio"].open("rb") as handle:
        response = api.post("/generate", {"avatar_id": "busy", "audio_file": handle})
    assert response.status_code == 409 and "not ready" in response.json()["message"]
    assert not GenerationJob.objects.exists()


def test_download_before_success_is_a_conflict(api):
    job = GenerationJobFactory(owner=api.user, status=GenerationJob.Status.RUNNING)
    response = api.get(f"/generate/{job.request_id}/download")
    assert response.status_code == 409 and "not available" in response.json()["message"]


def test_cancel_a_queued_job(api):
    job = GenerationJobFactory(owner=api.user, status=GenerationJob.Status.QUEUED)
    response = api.post(f"/generate/{job.request_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    again = api.post(f"/generate/{job.request_id}/cancel")  # idempotent
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    done = GenerationJobFactory(owner=api.user, status=GenerationJob.Status.SUCCEEDED)
    refused = api.post(f"/generate/{done.request_id}/cancel")
    assert refused.status_code == 409 and "already succeeded" in refused.json()["message"]


def test_delete_removes_the_row_the_files_and_the_jobs(
    api, django_capture_on_commit_callbacks, redis_server
):
    avatar = AvatarFactory(owner=api.user, avatar_id="anna", source_video="uploads/v/x.mp4")
    folder = Path(settings.MEDIA_ROOT) / avatar.storage_key
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")
    video = Path(settings.MEDIA_ROOT) / "uploads/v/x.mp4"
    video.parent.mkdir(parents=True, exist_ok=True)
    video.write_bytes(b"v")
    GenerationJobFactory(owner=api.user, avatar=avatar)
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete("/avatars/anna?from_disk=true").status_code == 200
    assert not folder.exists() and not video.exists()
    assert not Avatar.objects.exists() and not GenerationJob.objects.exists()


def test_schema_lists_the_seed_endpoints(api):
    paths = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()["paths"]
    for path in (
        "/avatars/prepare",
        "/avatars/",
        "/avatars/{avatar_id}",
        "/avatars/{avatar_id}/cache/warm",
        "/avatars/{avatar_id}/cache",
        "/avatars/{avatar_id}/cache/status",
        "/generate",
        "/generate/",
        "/generate/{request_id}/status",
        "/generate/{request_id}/cancel",
        "/generate/{request_id}/download",
    ):
        assert path in paths, path
