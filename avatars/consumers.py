"""WebSocket feeds of preparation and generation progress (same events as the SSE feeds)."""

from __future__ import annotations

import json
from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.core.serializers.json import DjangoJSONEncoder

from avatars.feeds import AVATAR_TERMINAL, JOB_TERMINAL, avatar_snapshot, job_snapshot
from musetalk_site import realtime
from musetalk_site.errors import NotAuthenticatedError, websocket_refuse


class _ProgressConsumer(AsyncJsonWebsocketConsumer):
    terminal: set[str] = set()
    group = ""

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return json.dumps(content, cls=DjangoJSONEncoder)

    async def snapshot(self) -> dict[str, Any]:
        raise NotImplementedError

    def group_for(self, user: Any) -> str:
        raise NotImplementedError

    async def connect(self) -> None:
        user = self.scope.get("user")
        try:
            if user is None or not user.is_authenticated:
                raise NotAuthenticatedError()
            current = await self.snapshot()
        except Exception as exc:
            await websocket_refuse(self, exc)
            return
        self.group = self.group_for(user)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json(current)

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def progress_event(self, message: dict[str, Any]) -> None:
        await self.send_json(message["payload"])
        if message["payload"].get("event") in self.terminal:
            await self.close()


class AvatarProgressConsumer(_ProgressConsumer):
    terminal = AVATAR_TERMINAL

    async def snapshot(self) -> dict[str, Any]:
        return await avatar_snapshot(
            self.scope["user"], self.scope["url_route"]["kwargs"]["avatar_id"]
        )

    def group_for(self, user: Any) -> str:
        return realtime.avatar_group(user.pk, self.scope["url_route"]["kwargs"]["avatar_id"])


class JobProgressConsumer(_ProgressConsumer):
    terminal = JOB_TERMINAL

    async def snapshot(self) -> dict[str, Any]:
        return await job_snapshot(
            self.scope["user"], self.scope["url_route"]["kwargs"]["request_id"]
        )

    def group_for(self, user: Any) -> str:
        return realtime.job_group(user.pk, self.scope["url_route"]["kwargs"]["request_id"])
