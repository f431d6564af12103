from __future__ import annotations

import json

import pytest
from django.urls import reverse

from avatars.models import Avatar, GenerationJob
from musetalk_site.redis_conn import redis_client
from tests.factories import AvatarFactory, GenerationJobFactory

pytestmark = pytest.mark.django_db

PREPARE_QUEUE = "musetalk:dramatiq:prepare"


def _queued_prepare_messages() -> list[dict]:
    client = redis_client()
    ids = [raw.decode() for raw in client.lrange(PREPARE_QUEUE, 0, -1)]
    messages = [json.loads(client.hget(PREPARE_QUEUE + ".msgs", i)) for i in ids]
    client.delete(PREPARE_QUEUE, PREPARE_QUEUE + ".msgs")
    return messages


def _run_action(client, model: str, action: str, pks: list[int]):
    url = reverse(f"admin:{model}_changelist")
    return client.post(url, {"action": action, "_selected_action": pks}, follow=True)


def test_reprepare_action_queues_a_new_revision_through_the_broker(
    admin_client, redis_server, django_capture_on_commit_callbacks
):
    avatar = AvatarFactory(status=Avatar.Status.FAILED, error="boom", source_video="v.mp4")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = _run_action(admin_client, "avatars_avatar", "reprepare", [avatar.pk])
    assert response.status_code == 200
    assert len(callbacks) == 1
    avatar.refresh_from_db()
    assert avatar.status == Avatar.Status.QUEUED and avatar.error == "" and avatar.revision == 1
    assert avatar.queued_at is not None
    [message] = _queued_prepare_messages()
    assert message["actor_name"] == "avatar_prepare"
    assert message["args"] == [avatar.pk, 1]


def test_reprepare_action_refuses_avatars_without_a_video(admin_client):
    avatar = AvatarFactory(status=Avatar.Status.FAILED, source_video="")
    response = _run_action(admin_client, "avatars_avatar", "reprepare", [avatar.pk])
    assert "has no source video" in response.content.decode()
    avatar.refresh_from_db()
    assert avatar.status == Avatar.Status.FAILED and avatar.revision == 0


def test_cancel_action_cancels_queued_and_flags_running_jobs(admin_client):
    queued = GenerationJobFactory(status=GenerationJob.Status.QUEUED)
    running = GenerationJobFactory(status=GenerationJob.Status.RUNNING)
    done = GenerationJobFactory(status=GenerationJob.Status.SUCCEEDED)
    response = _run_action(
        admin_client, "avatars_generationjob", "cancel", [queued.pk, running.pk, done.pk]
    )
    assert "has already succeeded" in response.content.decode()
    queued.refresh_from_db(), running.refresh_from_db(), done.refresh_from_db()
    assert queued.status == GenerationJob.Status.CANCELLED and queued.finished_at is not None
    assert running.status == GenerationJob.Status.RUNNING and running.cancel_requested
    assert done.status == GenerationJob.Status.SUCCEEDED and not done.cancel_requested


def test_admin_lists_search_and_filter_avatars(admin_client):
    AvatarFactory(avatar_id="findme", status=Avatar.Status.READY)
    AvatarFactory(avatar_id="other", status=Avatar.Status.FAILED)
    url = reverse("admin:avatars_avatar_changelist")
    page = admin_client.get(url, {"q": "findme"}).content.decode()
    assert "findme" in page and ">other<" not in page
    page = admin_client.get(url, {"status__exact": "failed"}).content.decode()
    assert ">other<" in page and "findme" not in page
