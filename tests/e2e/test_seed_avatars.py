"""The seed's avatar and generate requests against the real stack (random-tiny model): the
requests of its ``http_scripts*.http`` collections (fields in the query string, a real MP3
named ``.mpga``), the JSON its clients read, and the idle clip its players show first."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from django.conf import settings

from musetalk_site.stack import Stack
from tests.avatars.seed_media import make_speech_mp3, mp4_frames
from tests.e2e.client import ApiClient, api_user, wait_for
from tests.media import make_face_video

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WAIT = 300  # seconds a request that waits for the worker may take here


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("seed")
    return {
        "video": make_face_video(folder / "ai_test_default_moving_vid.mp4", seconds=0.8),
        "idle": make_face_video(folder / "idle.mp4", seconds=1.2, fps=10, size=(192, 240)),
        "mpga": make_speech_mp3(folder / "2nd_message.mpga", seconds=1.2),
    }


def _post(client: ApiClient, path: str, **kwargs: object) -> requests.Response:
    return client.session.post(client.url(path), timeout=WAIT, **kwargs)  # type: ignore[arg-type]


def _seed_prepare(client: ApiClient, avatar_id: str, media: dict[str, Path], *extra: str):
    """``POST /avatars/prepare?avatar_id=...&batch_size=2&bbox_shift=5`` with ``video_file``
    (and, when asked, ``idle_video_file``) as the seed's collection sends it."""
    files = {"video_file": (media["video"].name, media["video"].open("rb"), "video/mp4")}
    if "idle" in extra:
        files["idle_video_file"] = ("idle.mp4", media["idle"].open("rb"), "video/mp4")
    query = f"avatar_id={avatar_id}&batch_size=2&bbox_shift=5"
    return _post(client, f"/avatars/prepare?{query}", files=files)


def test_the_seed_collections_prepare_generate_status_download(live_stack: Stack, media):
    client = api_user(live_stack.base_url, "seed-http")
    prepared = _seed_prepare(client, "test_avatar", media)
    # The seed answers when the avatar is ready: so do we, to a seed-style request.
    assert prepared.status_code == 200, prepared.text
    body = prepared.json()
    assert (body["status"], body["avatar_id"], body["video_layout"]) == (
        "success",
        "test_avatar",
        "single_video",
    )
    assert client.get("/avatars/test_avatar").json()["bbox_shift"] == 5
    with media["mpga"].open("rb") as audio:
        queued = _post(
            client,
            "/generate?avatar_id=test_avatar&batch_size=2&fps=15",
            files={"audio_file": ("2nd_message.mpga", audio, "audio/mpeg")},
        )
    assert queued.status_code == 200, queued.text
    assert queued.json()["status"] == "queued"
    request_id = queued.json()["request_id"]
    status = wait_for(
        lambda: (
            (s := client.get(f"/generate/{request_id}/status").json())["status"] != "processing"
            and s
        ),
        timeout=WAIT,
    )
    assert status["status"] == "completed", status
    assert status["result"]["success"] is True
    video = client.get(status["result"]["output_path"])
    assert video.status_code == 200 and video.headers["Content-Type"] == "video/mp4"
    listed = client.get("/avatars/list").json()["avatars"]
    assert [a["avatar_id"] for a in listed] == ["test_avatar"]


def test_a_separate_idle_clip_is_the_avatars_idle_video(live_stack: Stack, media, tmp_path):
    client = api_user(live_stack.base_url, "seed-idle")
    prepared = _seed_prepare(client, "two_clips", media, "idle")
    assert prepared.status_code == 200, prepared.text
    assert prepared.json()["video_layout"] == "separate_idle_talking"
    avatar = client.get("/avatars/two_clips").json()
    idle = client.get("/avatars/two_clips/video")
    assert idle.status_code == 200 and idle.headers["Accept-Ranges"] == "bytes"
    # The 1.2 s clip at the avatar's 25 fps and frame size, not the avatar's own frames
    # played back and forth (2 x 20 frames).
    count, width, height = mp4_frames(idle.content, tmp_path)
    assert (width, height) == (avatar["width"], avatar["height"]) == (256, 320)
    assert count == 30
    part = client.get("/avatars/two_clips/video", headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == idle.content[:100]
    talking = client.get("/avatars/two_clips/video?role=talking")
    assert talking.content == media["video"].read_bytes()


def test_delete_evicts_from_cache_and_only_from_disk_deletes(live_stack: Stack, media):
    client = api_user(live_stack.base_url, "seed-delete")
    assert _seed_prepare(client, "keep_me", media).status_code == 200
    warmed = _post(client, "/avatars/keep_me/cache/warm?wait=true&timeout_seconds=120")
    assert warmed.status_code == 200, warmed.text
    assert (warmed.json()["status"], warmed.json()["cached"]) == ("ready", True)
    [folder] = list((Path(settings.MEDIA_ROOT) / "avatars").glob("*/keep_me"))

    evicted = client.delete("/avatars/keep_me")
    assert evicted.status_code == 200, evicted.text
    assert (evicted.json()["status"], evicted.json()["deleted_from_disk"]) == ("success", False)
    assert client.get("/avatars/keep_me").json()["status"] == "ready"
    assert (folder / "manifest.json").is_file()
    # Still usable: a generation from the evicted avatar loads it again.
    with media["mpga"].open("rb") as audio:
        queued = _post(
            client,
            "/generate?avatar_id=keep_me",
            files={"audio_file": ("message.mpga", audio, "audio/mpeg")},
        )
    assert queued.status_code == 200, queued.text
    request_id = queued.json()["request_id"]
    wait_for(
        lambda: client.get(f"/generate/{request_id}/status").json()["status"] == "completed",
        timeout=WAIT,
    )

    gone = client.delete("/avatars/keep_me?from_disk=true")
    assert gone.status_code == 200 and gone.json()["deleted_from_disk"] is True
    assert client.get("/avatars/keep_me").status_code == 404
    assert client.delete("/avatars/keep_me").status_code == 404
    wait_for(lambda: not folder.exists(), timeout=30)
