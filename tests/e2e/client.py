"""Small HTTP/SSE/WebSocket helpers for talking to the live stack like an app would."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import websocket
from rest_framework.authtoken.models import Token

from tests.factories import UserFactory


@dataclass
class ApiClient:
    base_url: str
    token: str
    session: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        self.session.headers["Authorization"] = f"Token {self.token}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.url(path), timeout=30, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.post(self.url(path), timeout=60, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.delete(self.url(path), timeout=30, **kwargs)

    def ws(self, path: str) -> websocket.WebSocket:
        ws_url = self.base_url.replace("http://", "ws://") + path + f"?token={self.token}"
        return websocket.create_connection(ws_url, timeout=120, origin=self.base_url)


def api_user(base_url: str, username: str) -> ApiClient:
    user = UserFactory(username=username)
    token = Token.objects.create(user=user)
    return ApiClient(base_url, token.key)


def sse_payloads(response: requests.Response) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """(event id, JSON payload) for every data frame of an open SSE response."""
    event_id = None
    for raw in response.iter_lines(decode_unicode=True):
        if raw.startswith("id:"):
            event_id = raw[3:].strip()
        elif raw.startswith("data:"):
            yield event_id, json.loads(raw[5:].strip())
            event_id = None


class SseFollower:
    """Reads an SSE stream in a background thread until a terminal event."""

    def __init__(self, client: ApiClient, path: str, terminal: set[str]) -> None:
        self.events: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self._done = threading.Event()
        self._response = client.session.get(client.url(path), stream=True, timeout=(10, 300))
        self.status_code = self._response.status_code
        self._thread = threading.Thread(target=self._run, args=(terminal,), daemon=True)
        self._thread.start()

    def _run(self, terminal: set[str]) -> None:
        try:
            for _, payload in sse_payloads(self._response):
                self.events.append(payload)
                if payload.get("event") in terminal:
                    break
        except BaseException as exc:  # reported by wait()
            self.error = exc
        finally:
            self._response.close()
            self._done.set()

    def wait(self, timeout: float) -> list[dict[str, Any]]:
        if not self._done.wait(timeout):
            raise AssertionError(f"no terminal event in {timeout} s; got {self.events[-3:]}")
        if self.error is not None:
            raise self.error
        return self.events


def ready_avatar_user(
    base_url: str, video: Path, username: str, avatar_id: str = "host"
) -> ApiClient:
    """A new API user with one avatar prepared from ``video`` (waits until it is ready)."""
    client = api_user(base_url, username)
    with video.open("rb") as handle:
        response = client.post(
            "/avatars/prepare",
            data={"avatar_id": avatar_id, "batch_size": 8},
            files={"video_file": (video.name, handle, "video/mp4")},
        )
    assert response.status_code == 200, response.text
    follower = SseFollower(client, f"/avatars/{avatar_id}/events", {"ready", "error"})
    events = follower.wait(timeout=240)
    assert events[-1]["event"] == "ready", events[-1]
    return client


def wait_for(predicate: Any, *, timeout: float, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
