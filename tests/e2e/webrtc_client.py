"""A WebRTC viewer for the end-to-end tests: an aiortc peer that negotiates through the
``/webrtc/sessions/{id}/offer`` endpoint like the seed's clients (recvonly video and audio,
waits for its own ICE gathering), and keeps every frame it receives with its arrival time."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import requests
from aiortc import RTCPeerConnection, RTCSessionDescription


@dataclass
class Received:
    at: float
    frame: Any


@dataclass
class Viewer:
    base_url: str
    session_id: str
    token: str  # the player token, as the player page has it
    pc: RTCPeerConnection = field(default_factory=RTCPeerConnection)
    video: list[Received] = field(default_factory=list)
    audio: list[Received] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.base_url}/webrtc/sessions/{self.session_id}/{path}?token={self.token}"

    async def post(self, path: str, body: Any) -> requests.Response:
        return await asyncio.to_thread(requests.post, self.url(path), json=body, timeout=60)

    async def connect(self, timeout: float = 30) -> None:
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            into = self.video if track.kind == "video" else self.audio

            async def pull() -> None:
                while True:
                    try:
                        frame = await track.recv()
                    except Exception:
                        return
                    into.append(Received(time.monotonic(), frame))

            self._tasks.append(asyncio.ensure_future(pull()))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        response = await self.post("offer", offer)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["type"] == "answer"
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        deadline = time.monotonic() + timeout
        while self.pc.connectionState != "connected":
            assert time.monotonic() < deadline, f"ICE did not connect: {self.pc.connectionState}"
            await asyncio.sleep(0.05)

    async def frames_after(self, start: int, count: int, timeout: float = 30) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.video) < start + count:
            assert time.monotonic() < deadline, f"{len(self.video) - start} of {count} frames"
            await asyncio.sleep(0.02)
        return self.video[start : start + count]

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()


def luma(frame: av.VideoFrame) -> np.ndarray:
    return frame.to_ndarray(format="yuv420p")[: frame.height].astype(np.int16)


def loud(frame: av.AudioFrame, level: int = 300) -> bool:
    return bool(np.abs(frame.to_ndarray()).max() > level)
