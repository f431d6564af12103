"""The SSE feed, through Django's async test client."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient
from rest_framework.authtoken.models import Token

from sessions_app.realtime import event_publish
from sessions_app.tokens import player_token_make
from tests.factories import StreamSessionFactory, UserFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@database_sync_to_async
def _session_and_tokens() -> tuple[str, str, str]:
    session = StreamSessionFactory()
    other = Token.objects.create(user=UserFactory()).key
    return session.session_id, Token.objects.create(user=session.owner).key, other


async def _frames(response, count: int) -> list[tuple[str, dict]]:
    frames, buffer = [], ""
    async for part in response.streaming_content:
        buffer += part.decode() if isinstance(part, bytes) else part
        while "\n\n" in buffer and len(frames) < count:
            frame, buffer = buffer.split("\n\n", 1)
            lines = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
            if "data" not in lines:  # a comment: the opening frame, a keep-alive
                continue
            frames.append((lines.get("id", ""), json.loads(lines["data"])))
        if len(frames) >= count:
            return frames
    return frames


async def test_it_resumes_after_last_event_id_with_id_lines(redis_server):
    sid, token, _ = await _session_and_tokens()
    for index in range(3):
        await database_sync_to_async(event_publish)(sid, {"event": "chunk", "index": index})
    response = await AsyncClient().get(
        f"/sessions/{sid}/events?token={token}", headers={"Last-Event-ID": "1"}
    )
    assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
    frames = await _frames(response, 2)
    assert frames == [("2", {"event": "chunk", "index": 1}), ("3", {"event": "chunk", "index": 2})]


async def test_it_refuses_strangers_and_bad_ids(redis_server):
    sid, token, other = await _session_and_tokens()
    client = AsyncClient()
    assert (await client.get(f"/sessions/{sid}/events")).status_code == 401
    assert (await client.get(f"/sessions/{sid}/events?token={other}")).status_code == 404
    theirs = player_token_make(session_id="someone-else")
    assert (await client.get(f"/sessions/{sid}/events?token={theirs}")).status_code == 404
    bad = await client.get(f"/sessions/{sid}/events?token={token}&last_event_id=x")
    assert bad.status_code == 400 and "last_event_id" in json.loads(bad.content)["message"]
