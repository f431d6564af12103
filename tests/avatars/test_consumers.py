from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from rest_framework.authtoken.models import Token

from avatars.models import GenerationJob
from musetalk_site import realtime
from tests.factories import GenerationJobFactory
from tests.websockets import other_user_token, ws_connect, ws_refusal

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@database_sync_to_async
def _job_with_token(status: str = GenerationJob.Status.RUNNING) -> tuple[GenerationJob, str]:
    job = GenerationJobFactory(status=status, progress=40)
    return job, Token.objects.create(user=job.owner).key


async def test_it_sends_the_snapshot_then_live_events_until_complete(redis_server):
    job, token = await _job_with_token()
    communicator, connected, _ = await ws_connect(f"/ws/generate/{job.request_id}/?token={token}")
    assert connected
    snapshot = await communicator.receive_json_from(timeout=5)
    assert snapshot["event"] == "progress" and snapshot["progress"] == 40
    group = realtime.job_group(job.owner_id, job.request_id)
    await database_sync_to_async(realtime.publish)(group, {"event": "progress", "progress": 70})
    assert (await communicator.receive_json_from(timeout=5))["progress"] == 70
    await database_sync_to_async(realtime.publish)(group, {"event": "complete", "progress": 100})
    assert (await communicator.receive_json_from(timeout=5))["event"] == "complete"
    assert (await communicator.receive_output(timeout=5))["type"] == "websocket.close"


async def test_it_refuses_anonymous_and_foreign_followers(redis_server):
    job, _ = await _job_with_token()
    assert await ws_refusal(f"/ws/generate/{job.request_id}/") == 4401
    other = await other_user_token()
    assert await ws_refusal(f"/ws/generate/{job.request_id}/?token={other}") == 4404
