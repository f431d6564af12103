"""What a worker publishes of its engine follows the work it does (not the state it had at
boot): the avatar cache status, /health's counts and /stats/cache, on the real stack."""

from __future__ import annotations

from pathlib import Path

import pytest

from musetalk_site.stack import Stack
from tests.e2e.client import ApiClient, api_user, ready_avatar_user, wait_for
from tests.media import make_face_video, make_speech_wav

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FINISHED = {"succeeded", "completed", "failed", "cancelled"}


def _generate(client: ApiClient, audio: Path) -> dict:
    with audio.open("rb") as handle:
        response = client.post(
            "/generate",
            data={"avatar_id": "host"},
            files={"audio_file": (audio.name, handle, "audio/wav")},
        )
    assert response.status_code == 200, response.text
    status_url = f"/generate/{response.json()['request_id']}/status"
    return wait_for(
        lambda: (
            (body := client.get(status_url).json()).get("state", body["status"]) in FINISHED
            and body
        ),
        timeout=180,
    )


def _cached_on(client: ApiClient) -> list[dict]:
    status = client.get("/avatars/host/cache/status").json()
    return [worker for worker in status["workers"] if worker["cached"]]


def test_the_published_engine_state_follows_the_work(live_stack: Stack, tmp_path: Path):
    make_face_video(tmp_path / "face.mp4", seconds=0.6, fps=25, size=(256, 320))
    make_speech_wav(tmp_path / "speech.wav", seconds=1.0, sample_rate=16000)
    owner = ready_avatar_user(live_stack.base_url, tmp_path / "face.mp4", "cache_state_owner")
    job = _generate(owner, tmp_path / "speech.wav")
    assert job.get("state", job["status"]) in {"succeeded", "completed"}, job

    # The generating worker loaded the avatar: its next heartbeats say so; a warm is then
    # served from its cache (a hit).
    holders = wait_for(lambda: _cached_on(owner), timeout=60)
    assert holders[0]["size"] > 0
    assert owner.post("/avatars/host/cache/warm?wait=true").status_code == 200
    holders = wait_for(
        lambda: (found := _cached_on(owner)) and found[0]["hits"] >= 1 and found, timeout=60
    )

    status, health = live_stack.health()
    assert status == 200, health
    assert health["cached_avatars"] >= 1
    cache, budget = health["engine"]["cache"], health["engine"]["budget"]
    assert cache["misses"] >= 1 and cache["bytes"] > 0  # the first use loaded it
    assert budget["peak"] > 0  # the generation reserved memory

    stats = owner.get("/stats/cache").json()
    assert stats["cached_avatars"] >= 1 and stats["misses"] >= 1
    assert "host" in [avatar["id"] for avatar in stats["avatars"]]
    stranger = api_user(live_stack.base_url, "cache_state_stranger")
    assert "host" not in [avatar["id"] for avatar in stranger.get("/stats/cache").json()["avatars"]]
