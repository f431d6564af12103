"""Prepare an avatar and generate a video through the real stack (random-tiny model)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from django.conf import settings

from inference.preparation import load_avatar
from musetalk_site.stack import Stack
from tests.e2e.client import ApiClient, SseFollower, api_user, wait_for
from tests.media import make_face_video, make_noface_video, make_speech_wav

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

SPEECH_SECONDS = 1.6


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("media")
    make_face_video(folder / "face.mp4", seconds=1.0, fps=25, size=(256, 320))
    make_face_video(folder / "face2.mp4", seconds=0.8, fps=25, size=(256, 320))
    make_noface_video(folder / "noface.mp4")
    make_speech_wav(folder / "speech.wav", seconds=SPEECH_SECONDS, sample_rate=44100)
    return folder


def _prepare(client: ApiClient, avatar_id: str, video: Path, **fields: object):
    with video.open("rb") as handle:
        return client.post(
            "/avatars/prepare",
            data={"avatar_id": avatar_id, **fields},
            files={"video_file": (video.name, handle, "video/mp4")},
        )


def _generate(client: ApiClient, avatar_id: str, audio: Path, **fields: object):
    with audio.open("rb") as handle:
        return client.post(
            "/generate",
            data={"avatar_id": avatar_id, **fields},
            files={"audio_file": (audio.name, handle, "audio/wav")},
        )


def _decode(path: Path) -> tuple[list[np.ndarray], dict]:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        info = {
            "fps": float(video.average_rate),
            "audio_codec": audio.codec_context.name,
            "audio_seconds": float(audio.duration * audio.time_base),
        }
        frames = [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]
    return frames, info


def _untouched_and_mouth_diff(frames: list[np.ndarray], avatar_dir: Path) -> tuple[float, float]:
    """Mean |output - source| where the blend mask is 0, and where it is fully on."""
    avatar = load_avatar(avatar_dir, device="cpu", dtype=torch.float32)
    outside, inside = [], []
    for i, frame in enumerate(frames):
        j = avatar.frame_index(i)
        source = avatar.frames[j].astype(np.int16)
        full_mask = np.zeros(source.shape[:2], np.uint8)
        xs, ys, xe, ye = avatar.mask_boxes[j]
        x0, y0 = max(xs, 0), max(ys, 0)
        x1, y1 = min(xe, source.shape[1]), min(ye, source.shape[0])
        full_mask[y0:y1, x0:x1] = avatar.masks[j][y0 - ys : y1 - ys, x0 - xs : x1 - xs]
        diff = np.abs(frame.astype(np.int16) - source).mean(axis=2)
        outside.append(diff[full_mask == 0].mean())
        inside.append(diff[full_mask == 255].mean())
    return float(np.mean(outside)), float(np.mean(inside))


def test_prepare_then_generate_through_the_real_stack(live_stack: Stack, media_dir: Path):
    client = api_user(live_stack.base_url, "flow-user")
    response = _prepare(client, "presenter", media_dir / "face.mp4", batch_size=8)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "queued"
    assert response.json()["status_url"] == "/avatars/presenter"

    follower = SseFollower(client, "/avatars/presenter/events", {"ready", "error"})
    events = follower.wait(timeout=240)
    assert events[-1]["event"] == "ready", events[-1]
    progress = [event["progress"] for event in events]
    assert progress == sorted(progress) and progress[-1] == 100
    assert len({event["stage"] for event in events}) >= 2  # real stages, not one jump

    avatar = client.get("/avatars/presenter").json()
    assert avatar["status"] == "ready" and avatar["frame_count"] == 25
    assert avatar["face_backend"].startswith("offline")
    assert avatar["model_profile"] == "random-tiny"

    response = _generate(client, "presenter", media_dir / "speech.wav", batch_size=4)
    assert response.status_code == 200, response.text
    request_id = response.json()["request_id"]
    assert request_id.startswith("presenter_req_")
    assert response.json()["status_url"] == f"/generate/{request_id}/status"

    ws = client.ws(f"/ws/generate/{request_id}/")
    ws_events = []
    while not ws_events or ws_events[-1]["event"] not in {"complete", "error"}:
        ws_events.append(__import__("json").loads(ws.recv()))
    ws.close()
    assert ws_events[-1]["event"] == "complete", ws_events[-1]
    job_progress = [event["progress"] for event in ws_events]
    assert job_progress == sorted(job_progress)

    status = client.get(f"/generate/{request_id}/status").json()
    assert status["state"] == "succeeded" and status["progress"] == 100
    assert status["status"] == "completed"  # the seed's word
    assert status["timings"]["first_frame_seconds"] is not None
    download = client.get(f"/generate/{request_id}/download")
    assert download.status_code == 200 and download.headers["Content-Type"] == "video/mp4"
    out = media_dir / "result.mp4"
    out.write_bytes(download.content)

    frames, info = _decode(out)
    expected = int(SPEECH_SECONDS * 25)
    assert len(frames) == expected == status["frame_count"]
    assert info["fps"] == 25.0 and info["audio_codec"] == "aac"
    assert abs(info["audio_seconds"] - SPEECH_SECONDS) <= 1 / 25 + 0.03
    owner_dir = Path(settings.MEDIA_ROOT) / "avatars"
    [avatar_dir] = [p for p in owner_dir.glob("*/presenter")]
    outside, mouth = _untouched_and_mouth_diff(frames, avatar_dir)
    assert outside < 3.0, f"pixels outside the mask changed by {outside:.2f} on average"
    assert mouth > 8.0, f"the mouth region barely changed ({mouth:.2f}): was the model run?"


def test_a_video_without_a_face_fails_with_a_reason_and_leaves_no_files(
    live_stack: Stack, media_dir: Path
):
    client = api_user(live_stack.base_url, "noface-user")
    assert _prepare(client, "nobody", media_dir / "noface.mp4").status_code == 200
    events = SseFollower(client, "/avatars/nobody/events", {"ready", "error"}).wait(timeout=240)
    assert events[-1]["event"] == "error"
    avatar = client.get("/avatars/nobody").json()
    assert avatar["status"] == "failed" and "face" in avatar["error"].lower()
    assert not list((Path(settings.MEDIA_ROOT) / "avatars").glob("*/nobody*"))
    refused = _generate(client, "nobody", media_dir / "speech.wav")
    assert refused.status_code == 409 and "not ready" in refused.json()["message"]


def test_force_recreate_keeps_serving_the_old_avatar_until_the_new_one_is_ready(
    live_stack: Stack, media_dir: Path
):
    client = api_user(live_stack.base_url, "recreate-user")
    _prepare(client, "host", media_dir / "face.mp4", batch_size=8)
    SseFollower(client, "/avatars/host/events", {"ready", "error"}).wait(timeout=240)
    again = _prepare(client, "host", media_dir / "face.mp4")
    assert again.json()["status"] == "ready" and "force_recreate" in again.json()["message"]

    response = _prepare(client, "host", media_dir / "face2.mp4", force_recreate="true")
    assert response.json()["status"] == "queued"
    # While the new revision prepares, the old assets still generate.
    job = _generate(client, "host", media_dir / "speech.wav", batch_size=8)
    assert job.status_code == 200, job.text
    events = SseFollower(client, "/avatars/host/events", {"ready", "error"}).wait(timeout=240)
    assert events[-1]["event"] == "ready"
    assert client.get("/avatars/host").json()["frame_count"] == 20
    request_id = job.json()["request_id"]
    done = wait_for(
        lambda: (
            client.get(f"/generate/{request_id}/status").json()["state"] in {"succeeded", "failed"}
            and client.get(f"/generate/{request_id}/status").json()
        ),
        timeout=240,
    )
    assert done["state"] == "succeeded", done


def test_deleting_an_avatar_removes_its_files(live_stack: Stack, media_dir: Path):
    client = api_user(live_stack.base_url, "delete-user")
    _prepare(client, "temp", media_dir / "face2.mp4", batch_size=8)
    SseFollower(client, "/avatars/temp/events", {"ready", "error"}).wait(timeout=240)
    [folder] = list((Path(settings.MEDIA_ROOT) / "avatars").glob("*/temp"))
    assert (folder / "manifest.json").exists()
    # Without ?from_disk=true a DELETE only evicts it from the workers' caches (the seed's way).
    assert client.delete("/avatars/temp").status_code == 200
    assert (folder / "manifest.json").exists()
    assert client.delete("/avatars/temp?from_disk=true").status_code == 200
    assert client.get("/avatars/temp").status_code == 404
    wait_for(lambda: not folder.exists(), timeout=10)


def _finished(client: ApiClient, request_id: str) -> dict:
    return wait_for(
        lambda: (
            (s := client.get(f"/generate/{request_id}/status").json())["state"]
            in {"succeeded", "failed"}
            and s
        ),
        timeout=240,
    )


def test_a_worker_killed_mid_job_leaves_the_job_failed_not_stuck(
    live_stack: Stack, media_dir: Path
):
    client = api_user(live_stack.base_url, "crash-user")
    _prepare(client, "victim", media_dir / "face2.mp4", batch_size=8)
    SseFollower(client, "/avatars/victim/events", {"ready", "error"}).wait(timeout=240)
    long_audio = media_dir / "long.wav"
    make_speech_wav(long_audio, seconds=12.0)
    request_id = _generate(client, "victim", long_audio, batch_size=1).json()["request_id"]
    wait_for(
        lambda: client.get(f"/generate/{request_id}/status").json()["state"] == "running",
        timeout=120,
    )
    follower = SseFollower(client, f"/generate/{request_id}/events", {"complete", "error"})
    worker = next(child for child in live_stack.children if child.name == "worker")
    os.killpg(worker.process.pid, signal.SIGKILL)
    try:
        status = wait_for(
            lambda: (
                (s := client.get(f"/generate/{request_id}/status").json())["state"] != "running"
                and s
            ),
            timeout=120,
        )
        assert status["status"] == "failed"
        assert "stopped unexpectedly" in status["error"]
        # The app following the video is told, not left waiting.
        error = follower.wait(timeout=60)[-1]
        assert error["event"] == "error" and error["message"] == status["error"]
    finally:
        live_stack.restart("worker")  # what the launcher's supervisor does
        live_stack.wait_healthy(timeout=120)
    # Nothing else to do: the next video of the same avatar is made.
    again = _generate(client, "victim", media_dir / "speech.wav", batch_size=8)
    assert again.status_code == 200, again.text
    assert _finished(client, again.json()["request_id"])["state"] == "succeeded"


def test_admin_commands_prepare_and_generate_with_progress(
    live_stack: Stack, media_dir: Path, capsys
):
    from django.core.management import call_command

    api_user(live_stack.base_url, "cmd-user")
    call_command(
        "prepare_avatar", "cmd-user", "cmdav", str(media_dir / "face2.mp4"), "--batch-size", "8"
    )
    out = media_dir / "cmd.mp4"
    call_command(
        "generate_video", "cmd-user", "cmdav", str(media_dir / "speech.wav"), "--out", str(out)
    )
    captured = capsys.readouterr()
    assert "cmdav is ready: 20 frames." in captured.out
    assert "100%" in captured.err  # the progress bar reached the end
    frames, info = _decode(out)
    assert len(frames) == int(SPEECH_SECONDS * 25) and info["audio_codec"] == "aac"
