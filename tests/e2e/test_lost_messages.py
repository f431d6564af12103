"""On the real stack: work whose broker message Redis lost before a worker fetched it is found
by the workers' own maintenance within QUEUE_CHECK_AFTER_SECONDS + WORKER_MAINTENANCE_SECONDS.
A preparation and a video are sent again and finished by a worker; an utterance fails with an
``error`` event, and its session, which answered 409 meanwhile, streams the next one."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import requests
from django.conf import settings
from dramatiq.brokers.redis import RedisBroker

from avatars.models import Avatar, GenerationJob
from musetalk_site.stack import Stack
from sessions_app.models import StreamRequest
from tests.e2e.client import ApiClient, SseFollower, ready_avatar_user, wait_for
from tests.media import make_face_video, make_speech_wav

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("lost-media")
    make_face_video(folder / "face.mp4", seconds=0.6, fps=25, size=(256, 320))
    make_speech_wav(folder / "speech.wav", seconds=1.2, sample_rate=16000)
    return folder


@contextmanager
def _workers_frozen(stack: Stack) -> Iterator[None]:
    """Every worker process stopped (SIGSTOP): nothing fetches what is sent meanwhile."""
    workers = [child for child in stack.children if child.name.startswith("worker")]
    for child in workers:
        os.killpg(child.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for child in workers:
            os.killpg(child.process.pid, signal.SIGCONT)


def _lose(queue_name: str, message_id: str) -> None:
    """What Redis losing a waiting message leaves: its id and its data are gone. An id
    ``<queue>/<id>`` names the queue it went to (an utterance placed on a worker's own)."""
    broker = dramatiq.get_broker()
    assert isinstance(broker, RedisBroker)
    named, _, message_id = message_id.rpartition("/")
    queue = f"{broker.namespace}:{named or queue_name}"
    assert broker.client.lrem(queue, 0, message_id) == 1
    assert broker.client.hdel(queue + ".msgs", message_id) == 1


def _post(client: ApiClient, path: str, media: Path, field: str, **data: Any) -> requests.Response:
    with media.open("rb") as handle:
        return client.post(path, data=data, files={field: (media.name, handle)})


def test_lost_messages_are_sent_again_or_failed_by_the_workers_maintenance(
    live_stack: Stack, media_dir: Path
) -> None:
    face, speech = media_dir / "face.mp4", media_dir / "speech.wav"
    client = ready_avatar_user(live_stack.base_url, face, "lost-messages", avatar_id="host")
    session_id = client.post("/sessions/create?avatar_id=host").json()["session_id"]
    follower = SseFollower(client, f"/sessions/{session_id}/events", {"error"})
    with _workers_frozen(live_stack):
        prepared = _post(client, "/avatars/prepare", face, "video_file", avatar_id="second")
        generated = _post(client, "/generate", speech, "audio_file", avatar_id="host")
        streamed = _post(client, f"/sessions/{session_id}/stream", speech, "audio_file")
        assert [r.status_code for r in (prepared, generated, streamed)] == [200, 200, 200]
        avatar = Avatar.objects.get(avatar_id="second")
        job = GenerationJob.objects.get(request_id=generated.json()["request_id"])
        request = StreamRequest.objects.get(request_id=streamed.json()["request_id"])
        _lose("prepare", avatar.message_id)
        _lose("generate", job.message_id)
        _lose("stream", request.message_id)
    lost_at = time.monotonic()

    # What the platform did before: stuck, and every retry refused.
    assert _post(client, f"/sessions/{session_id}/stream", speech, "audio_file").status_code == 409
    again = _post(client, "/avatars/prepare", face, "video_file", avatar_id="second")
    assert again.status_code == 409

    bound = settings.QUEUE_CHECK_AFTER_SECONDS + settings.WORKER_MAINTENANCE_SECONDS + 5
    events = follower.wait(timeout=bound)
    failed_after = time.monotonic() - lost_at
    assert events[-1] == {
        "event": "error",
        "request_id": request.request_id,
        "message": "the queue lost this utterance (a worker or Redis restarted); "
        "please send it again",
    }
    wait_for(lambda: Avatar.objects.get(pk=avatar.pk).resends == 1, timeout=bound)
    wait_for(lambda: GenerationJob.objects.get(pk=job.pk).resends == 1, timeout=bound)
    resent_after = time.monotonic() - lost_at

    ready = wait_for(lambda: client.get("/avatars/second").json()["status"] == "ready", timeout=240)
    done = wait_for(
        lambda: (
            (s := client.get(f"/generate/{job.request_id}/status").json())["state"]
            in ("succeeded", "failed")
            and s
        ),
        timeout=240,
    )
    assert ready and done["state"] == "succeeded", done
    seen = client.get(f"/sessions/{session_id}/status").json()["last_event_id"]
    path = f"/sessions/{session_id}/events?last_event_id={seen}"
    follower = SseFollower(client, path, {"speaking_ended"})
    next_one = _post(client, f"/sessions/{session_id}/stream", speech, "audio_file")
    assert next_one.status_code == 200, next_one.text
    assert follower.wait(timeout=240)[-1]["reason"] == "complete"
    print(  # noqa: T201 - the recovery times, shown with -s
        f"lost utterance failed after {failed_after:.1f} s, "
        f"preparation and video re-sent after {resent_after:.1f} s (bound {bound:.0f} s)"
    )
