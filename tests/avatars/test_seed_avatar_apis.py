"""The avatar and generate endpoints as the seed's clients call them (one process)."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from avatars.models import Avatar, GenerationJob
from tests.avatars.seed_media import make_speech_mp3
from tests.factories import AvatarFactory, GenerationJobFactory
from tests.media import make_face_video

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def seed_media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("seed")
    return {
        "mpga": make_speech_mp3(folder / "2nd_message.mpga", seconds=0.6),
        "bare": make_speech_mp3(folder / "voice", seconds=0.6),
        "idle": make_face_video(folder / "idle.mp4", seconds=0.4, fps=25, size=(128, 160)),
    }


def _prepare(api, query: str, files: dict, data: dict | None = None):
    return api.post(f"/avatars/prepare?{query}", {**(data or {}), **files}, format="multipart")


def test_prepare_reads_the_seeds_query_string(api, upload_media):
    with upload_media["video"].open("rb") as video:
        query = "avatar_id=anna&batch_size=2&bbox_shift=5&wait=false"
        response = _prepare(api, query, {"video_file": video})
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "queued"
    avatar = Avatar.objects.get(owner=api.user, avatar_id="anna")
    assert (avatar.batch_size, avatar.bbox_shift) == (2, 5)


def test_the_query_string_wins_over_the_same_form_field(api, upload_media):
    with upload_media["video"].open("rb") as video:
        response = _prepare(
            api, "avatar_id=anna&batch_size=2&wait=false", {"video_file": video}, {"batch_size": 7}
        )
    assert response.status_code == 200, response.json()
    assert Avatar.objects.get(avatar_id="anna").batch_size == 2


def test_a_seed_style_prepare_waits_and_says_when_the_time_ran_out(api, upload_media):
    # avatar_id in the query string is the seed's way: the answer waits for the preparation
    # (no worker runs here, so it is still queued when the given time runs out).
    with upload_media["video"].open("rb") as video:
        response = _prepare(api, "avatar_id=anna&timeout_seconds=0", {"video_file": video})
    assert response.status_code == 202, response.json()
    assert response.json()["status"] == "queued" and response.json()["state"] == "queued"


def test_a_seed_style_prepare_of_a_ready_avatar_answers_success(api, upload_media):
    AvatarFactory(owner=api.user, avatar_id="anna", status=Avatar.Status.READY)
    with upload_media["video"].open("rb") as video:
        response = _prepare(api, "avatar_id=anna", {"video_file": video})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["status"], body["state"], body["avatar_id"]) == ("success", "ready", "anna")
    assert body["video_layout"] == "single_video"


def test_the_idle_video_file_is_stored_beside_the_video(api, upload_media, seed_media):
    with upload_media["video"].open("rb") as video, seed_media["idle"].open("rb") as idle:
        response = _prepare(
            api, "avatar_id=anna&wait=false", {"video_file": video, "idle_video_file": idle}
        )
    assert response.status_code == 200, response.json()
    assert response.json()["video_layout"] == "separate_idle_talking"
    avatar = Avatar.objects.get(avatar_id="anna")
    assert (Path(settings.MEDIA_ROOT) / avatar.idle_video.name).is_file()
    assert avatar.idle_video.name != avatar.source_video.name


def test_an_idle_video_file_that_is_no_video_is_refused(api, upload_media):
    idle = SimpleUploadedFile("idle.bin", b"not a video at all")
    with upload_media["video"].open("rb") as video:
        response = _prepare(
            api, "avatar_id=anna&wait=false", {"video_file": video, "idle_video_file": idle}
        )
    assert response.status_code == 415, response.json()
    assert "idle_video_file must be a video" in response.json()["message"]
    assert not Avatar.objects.exists()


@pytest.mark.parametrize("key", ["mpga", "bare"])
def test_generate_judges_audio_by_content_not_by_name(api, seed_media, key):
    AvatarFactory(owner=api.user, avatar_id="anna", status=Avatar.Status.READY)
    with seed_media[key].open("rb") as audio:
        response = api.post(
            "/generate?avatar_id=anna&batch_size=2&fps=15&output_name=hello",
            {"audio_file": audio},
            format="multipart",
        )
    assert response.status_code == 200, response.json()
    job = GenerationJob.objects.get(request_id=response.json()["request_id"])
    assert (job.batch_size, job.fps, job.output_name) == (2, 15, "hello")


@pytest.mark.parametrize(
    "name,data",
    [("3rd_message.mpga", b"plain text, no audio"), ("voice", b"\x00\x01" * 400)],
)
def test_content_that_is_no_audio_is_refused_with_415(api, name, data):
    AvatarFactory(owner=api.user, avatar_id="anna", status=Avatar.Status.READY)
    upload = SimpleUploadedFile(name, data)
    response = api.post("/generate?avatar_id=anna", {"audio_file": upload}, format="multipart")
    assert response.status_code == 415, response.json()
    assert response.json()["message"].startswith("audio_file must be audio")
    assert not GenerationJob.objects.exists()


def test_a_video_without_sound_is_no_audio(api, upload_media):
    AvatarFactory(owner=api.user, avatar_id="anna", status=Avatar.Status.READY)
    with upload_media["video"].open("rb") as silent:
        response = api.post("/generate?avatar_id=anna", {"audio_file": silent}, format="multipart")
    assert response.status_code == 415 and "no audio stream" in response.json()["message"]


@pytest.mark.parametrize(
    "status,seed",
    [
        (GenerationJob.Status.QUEUED, "processing"),
        (GenerationJob.Status.RUNNING, "processing"),
        (GenerationJob.Status.SUCCEEDED, "completed"),
        (GenerationJob.Status.FAILED, "failed"),
        (GenerationJob.Status.CANCELLED, "failed"),
    ],
)
def test_generate_status_answers_the_seeds_words(api, status, seed):
    job = GenerationJobFactory(owner=api.user, status=status, error="boom")
    body = api.get(f"/generate/{job.request_id}/status").json()
    assert (body["status"], body["state"]) == (seed, status)
    if seed == "completed":
        assert body["result"] == {
            "success": True,
            "output_path": f"/generate/{job.request_id}/download",
        }
    else:
        assert "result" not in body
    if seed == "failed":
        assert body["error"] == "boom"


def test_download_is_named_after_output_name(api):
    job = GenerationJobFactory(
        owner=api.user, status=GenerationJob.Status.SUCCEEDED, output_name="hello"
    )
    result = Path(settings.MEDIA_ROOT) / "results" / "x.mp4"
    result.parent.mkdir(parents=True)
    result.write_bytes(b"mp4")
    GenerationJob.objects.filter(pk=job.pk).update(result="results/x.mp4")
    response = api.get(f"/generate/{job.request_id}/download")
    assert response.status_code == 200
    assert 'filename="hello.mp4"' in response["Content-Disposition"]


def _assets(avatar: Avatar) -> Path:
    folder = Path(settings.MEDIA_ROOT) / avatar.storage_key
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")
    return folder


def test_delete_evicts_and_keeps_the_avatar_and_its_files(
    api, redis_server, django_capture_on_commit_callbacks
):
    avatar = AvatarFactory(owner=api.user, avatar_id="anna")
    folder = _assets(avatar)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.delete("/avatars/anna")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["status"], body["deleted_from_disk"], body["disk_path"]) == (
        "success",
        False,
        None,
    )
    assert "evicted from cache" in body["message"]
    assert Avatar.objects.filter(pk=avatar.pk).exists() and (folder / "manifest.json").exists()
    assert api.get("/avatars/anna").status_code == 200


def test_delete_from_disk_removes_everything(api, redis_server, django_capture_on_commit_callbacks):
    avatar = AvatarFactory(owner=api.user, avatar_id="anna", idle_video="uploads/v/idle.mp4")
    folder = _assets(avatar)
    idle = Path(settings.MEDIA_ROOT) / "uploads/v/idle.mp4"
    idle.parent.mkdir(parents=True)
    idle.write_bytes(b"v")
    with django_capture_on_commit_callbacks(execute=True):
        response = api.delete("/avatars/anna?from_disk=true")
    assert response.status_code == 200, response.json()
    assert response.json()["deleted_from_disk"] is True
    assert not folder.exists() and not idle.exists() and not Avatar.objects.exists()
    assert api.get("/avatars/anna").status_code == 404
    assert api.delete("/avatars/anna").status_code == 404


def test_avatars_list_has_the_seeds_shape_and_only_prepared_avatars(api, other_api):
    AvatarFactory(owner=api.user, avatar_id="ready", status=Avatar.Status.READY, bbox_shift=5)
    AvatarFactory(owner=api.user, avatar_id="busy", status=Avatar.Status.PREPARING)
    AvatarFactory(owner=other_api.user, avatar_id="theirs")
    body = api.get("/avatars/list").json()
    [entry] = body["avatars"]
    assert (entry["avatar_id"], entry["bbox_shift"], entry["video_layout"]) == (
        "ready",
        5,
        "single_video",
    )
    assert {"version", "has_idle_video", "idle_poses", "status"} <= set(entry)


def test_the_avatar_video_is_the_idle_loop_with_byte_ranges(api):
    avatar = AvatarFactory(owner=api.user, avatar_id="anna", source_video="uploads/v/src.mov")
    folder = _assets(avatar)
    (folder / "idle.mp4").write_bytes(bytes(range(256)) * 4)
    source = Path(settings.MEDIA_ROOT) / "uploads/v/src.mov"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"source")
    whole = api.get("/avatars/anna/video")
    assert whole.status_code == 200 and whole["Accept-Ranges"] == "bytes"
    assert b"".join(whole.streaming_content) == bytes(range(256)) * 4
    part = api.get("/avatars/anna/video?v=1", HTTP_RANGE="bytes=10-19")
    assert part.status_code == 206 and part["Content-Range"] == "bytes 10-19/1024"
    assert b"".join(part.streaming_content) == bytes(range(10, 20))
    tail = api.get("/avatars/anna/video", HTTP_RANGE="bytes=-4")
    assert b"".join(tail.streaming_content) == bytes(range(252, 256))
    assert api.get("/avatars/anna/video", HTTP_RANGE="bytes=5000-").status_code == 416
    talking = api.get("/avatars/anna/video?role=talking")
    assert talking["Content-Type"] == "video/quicktime"
    assert b"".join(talking.streaming_content) == b"source"
    assert api.get("/avatars/anna/video?role=sideways").status_code == 400


def test_an_avatar_without_videos_has_no_video(api, other_api):
    AvatarFactory(owner=api.user, avatar_id="anna", status=Avatar.Status.QUEUED)
    assert api.get("/avatars/anna/video").status_code == 404
    assert other_api.get("/avatars/anna/video").status_code == 404


def test_cache_status_carries_the_seeds_status(api, redis_server):
    _assets(AvatarFactory(owner=api.user, avatar_id="anna", status=Avatar.Status.READY))
    AvatarFactory(owner=api.user, avatar_id="busy", status=Avatar.Status.PREPARING)
    body = api.get("/avatars/anna/cache/status").json()
    assert (body["status"], body["cached"], body["disk_prepared"]) == ("not_cached", False, True)
    assert api.get("/avatars/busy/cache/status").json()["status"] == "missing"


def test_warming_without_waiting_is_queued(api, redis_server):
    _assets(AvatarFactory(owner=api.user, avatar_id="anna", status=Avatar.Status.READY))
    response = api.post("/avatars/anna/cache/warm?batch_size=2")
    assert response.status_code == 202 and response.json()["status"] == "queued"


def test_an_avatar_whose_files_are_gone_is_not_warmed(api, redis_server):
    AvatarFactory(owner=api.user, avatar_id="anna", status=Avatar.Status.READY)
    response = api.post("/avatars/anna/cache/warm?wait=true")
    assert response.status_code == 409 and response.json()["extra"]["recreate_required"]
    assert api.get("/avatars/anna/cache/status").json()["status"] == "missing"


def test_idle_poses_list_the_default_idle_loop(api):
    avatar = AvatarFactory(owner=api.user, avatar_id="anna")
    (_assets(avatar) / "idle.mp4").write_bytes(b"v")
    body = api.get("/avatars/anna/idle-poses").json()
    assert body == {
        "avatar_id": "anna",
        "idle_poses": [
            {
                "pose_id": "default",
                "video_path": "/avatars/anna/video",
                "exists": True,
                "is_default": True,
            }
        ],
    }
    assert api.get("/avatars/list").json()["avatars"][0]["idle_poses"] == body["idle_poses"]
