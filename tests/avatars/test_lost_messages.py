"""Queued preparations and videos whose message the broker lost are sent again, or failed
with a reason after QUEUE_RESEND_LIMIT re-sends; work waiting its turn is never touched.

Real Redis and the real broker; the actors send to queues of each test's own, so no worker
of a live stack takes the messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from django.conf import settings
from django.db.models import Model
from django.utils import timezone
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis
from dramatiq.message import Message

from avatars.models import Avatar, GenerationJob
from avatars.tasks import avatar_prepare, job_generate
from musetalk_site.maintenance import maintenance_run
from tests.factories import AvatarFactory, GenerationJobFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def broker(redis_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisBroker]:
    broker = dramatiq.get_broker()
    assert isinstance(broker, RedisBroker)
    for actor in (avatar_prepare, job_generate):
        monkeypatch.setattr(actor, "queue_name", f"test_lost_{actor.actor_name}")
    yield broker
    for actor in (avatar_prepare, job_generate):
        broker.flush(actor.queue_name)


@pytest.fixture
def sent(django_capture_on_commit_callbacks: Any) -> Any:
    """Runs the on-commit callbacks (the sends) of what the block does."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


def _queued(broker: RedisBroker, actor: dramatiq.Actor) -> list[tuple[str, list[Any]]]:
    """(redis message id, args) of every message waiting in the actor's queue, in order."""
    queue = f"{broker.namespace}:{actor.queue_name}"
    ids = [raw.decode() for raw in broker.client.lrange(queue, 0, -1)]
    return [(i, list(Message.decode(broker.client.hget(queue + ".msgs", i)).args)) for i in ids]


def _lose(broker: RedisBroker, actor: dramatiq.Actor, message_id: str) -> None:
    """What Redis losing a waiting message leaves: its id and its data are gone."""
    queue = f"{broker.namespace}:{actor.queue_name}"
    broker.client.lrem(queue, 0, message_id)
    broker.client.hdel(queue + ".msgs", message_id)


def _age(row: Model) -> None:
    """As if the message was sent longer ago than the broker is asked after."""
    long_ago = timezone.now() - timedelta(seconds=settings.QUEUE_CHECK_AFTER_SECONDS + 1)
    type(row)._default_manager.filter(pk=row.pk).update(sent_at=long_ago, queued_at=long_ago)
    row.refresh_from_db()


def _prepare(api: Any, video: Path, sent: Any, **fields: Any) -> Avatar:
    with video.open("rb") as upload, sent():
        response = api.post(
            "/avatars/prepare", {"avatar_id": "anna", "video_file": upload, **fields}
        )
    assert response.status_code == 200, response.json()
    return Avatar.objects.get(owner=api.user, avatar_id="anna")


def _generate(api: Any, audio: Path, sent: Any) -> GenerationJob:
    with audio.open("rb") as upload, sent():
        response = api.post("/generate", {"avatar_id": "anna", "audio_file": upload})
    assert response.status_code == 200, response.json()
    return GenerationJob.objects.get(request_id=response.json()["request_id"])


def test_a_preparation_whose_message_redis_lost_is_sent_again(
    api: Any, upload_media: dict[str, Path], broker: RedisBroker, sent: Any
) -> None:
    avatar = _prepare(api, upload_media["video"], sent)
    first = avatar.message_id
    assert _queued(broker, avatar_prepare) == [(first, [avatar.pk, 1])]
    _lose(broker, avatar_prepare, first)
    _age(avatar)

    assert maintenance_run() == 1

    avatar.refresh_from_db()
    assert (avatar.status, avatar.resends, avatar.revision) == (Avatar.Status.QUEUED, 1, 1)
    assert avatar.message_id not in ("", first)
    assert _queued(broker, avatar_prepare) == [(avatar.message_id, [avatar.pk, 1])]
    assert maintenance_run() == 0  # the new message waits its turn


def test_a_preparation_waiting_behind_a_long_queue_is_left_alone(
    api: Any, upload_media: dict[str, Path], broker: RedisBroker, sent: Any
) -> None:
    for _ in range(50):
        avatar_prepare.send(0, 0)  # other work ahead of it (no such avatar: a no-op)
    avatar = _prepare(api, upload_media["video"], sent)
    _age(avatar)

    assert maintenance_run() == 0

    waiting = avatar.message_id
    avatar.refresh_from_db()
    assert (avatar.status, avatar.message_id, avatar.resends) == ("queued", waiting, 0)
    assert _queued(broker, avatar_prepare)[-1] == (waiting, [avatar.pk, 1])


@pytest.mark.parametrize("worker_alive", [True, False])
def test_a_preparation_a_worker_fetched_is_sent_again_only_once_that_worker_died(
    api: Any, upload_media: dict[str, Path], broker: RedisBroker, sent: Any, worker_alive: bool
) -> None:
    avatar = _prepare(api, upload_media["video"], sent)
    worker = RedisBroker(client=broker.client, namespace=broker.namespace)
    consumer = worker.consume(avatar_prepare.queue_name, prefetch=1, timeout=100)
    while next(consumer) is None:  # fetched (prefetched or running), not acked
        pass
    if not worker_alive:  # killed: no command, so no heartbeat, since
        silent_since = current_millis() - broker.heartbeat_timeout - 1000
        broker.client.zadd(f"{broker.namespace}:__heartbeats__", {worker.broker_id: silent_since})
    _age(avatar)

    assert maintenance_run() == (0 if worker_alive else 1)

    fetched = avatar.message_id
    avatar.refresh_from_db()
    assert (avatar.message_id == fetched) is worker_alive
    expected = [] if worker_alive else [(avatar.message_id, [avatar.pk, 1])]
    assert _queued(broker, avatar_prepare) == expected
    broker.client.delete(f"{broker.namespace}:__acks__.{worker.broker_id}.{consumer.queue_name}")
    broker.client.zrem(f"{broker.namespace}:__heartbeats__", worker.broker_id)


@pytest.mark.parametrize(
    "has_assets,status,prefix",
    [(False, "failed", ""), (True, "ready", "re-preparation failed: ")],
)
def test_a_preparation_lost_too_often_fails_with_a_reason_and_can_be_prepared_again(
    api: Any,
    upload_media: dict[str, Path],
    broker: RedisBroker,
    sent: Any,
    settings: Any,
    has_assets: bool,
    status: str,
    prefix: str,
) -> None:
    settings.QUEUE_RESEND_LIMIT = 1
    avatar = _prepare(api, upload_media["video"], sent)
    Avatar.objects.filter(pk=avatar.pk).update(has_assets=has_assets)
    for lost in range(2):
        _lose(broker, avatar_prepare, Avatar.objects.get(pk=avatar.pk).message_id)
        _age(avatar)
        assert maintenance_run() == 1

    avatar.refresh_from_db()
    assert avatar.status == status and avatar.finished_at is not None
    assert (
        avatar.error
        == prefix + "the queue lost this preparation 2 times (a worker or Redis restarted)"
    )
    assert _queued(broker, avatar_prepare) == []
    again = _prepare(api, upload_media["video"], sent, force_recreate="true")
    assert (again.status, again.revision, again.resends) == ("queued", 2, 0)
    assert _queued(broker, avatar_prepare) == [(again.message_id, [avatar.pk, 2])]


def test_a_video_whose_message_redis_lost_is_sent_again_then_failed_with_a_reason(
    api: Any, upload_media: dict[str, Path], broker: RedisBroker, sent: Any, settings: Any
) -> None:
    settings.QUEUE_RESEND_LIMIT = 1
    AvatarFactory(owner=api.user, avatar_id="anna")
    job = _generate(api, upload_media["audio"], sent)
    first = job.message_id
    assert _queued(broker, job_generate) == [(first, [job.pk])]
    _lose(broker, job_generate, first)
    _age(job)

    assert maintenance_run() == 1

    job.refresh_from_db()
    assert (job.status, job.resends) == ("queued", 1)
    assert _queued(broker, job_generate) == [(job.message_id, [job.pk])]
    _lose(broker, job_generate, job.message_id)
    _age(job)

    assert maintenance_run() == 1

    body = api.get(f"/generate/{job.request_id}/status").json()
    assert body["status"] == "failed"
    assert body["error"] == "the queue lost this video 2 times (a worker or Redis restarted)"
    assert _queued(broker, job_generate) == []


def test_a_video_whose_message_was_never_sent_is_sent(broker: RedisBroker) -> None:
    """The process stopped between the commit and the send (or the row predates the check)."""
    job = GenerationJobFactory()
    _age(job)
    assert job.message_id == ""

    assert maintenance_run() == 1

    job.refresh_from_db()
    assert (job.status, job.resends) == ("queued", 1)
    assert _queued(broker, job_generate) == [(job.message_id, [job.pk])]


def test_fresh_and_finished_work_is_not_looked_up(broker: RedisBroker) -> None:
    fresh = GenerationJobFactory()  # just queued: its message may be on its way
    cancelled = GenerationJobFactory(status=GenerationJob.Status.CANCELLED)
    _age(cancelled)
    preparing = AvatarFactory(status=Avatar.Status.PREPARING, started_at=timezone.now())
    _age(preparing)

    assert maintenance_run() == 0

    assert _queued(broker, job_generate) == [] and _queued(broker, avatar_prepare) == []
    fresh.refresh_from_db(), cancelled.refresh_from_db()
    assert (fresh.resends, cancelled.status) == (0, "cancelled")
