"""Multipart bodies reach Django's parser as they arrive, instead of being copied first.

Django's ASGI handler reads a whole body into a temporary file (in memory, with our
settings) before any view runs, and its multipart parser then copies each file into an
upload file: every upload was held twice before the view saw it. :class:`StreamingASGIHandler`
gives multipart bodies to the parser as :class:`StreamedBody`, a file that pulls the ASGI body
messages as the parser reads, so ``LimitedUploadHandler`` writes the only copy (and storing
it is a rename, see ``musetalk_site/uploads.py``). Under daphne the messages come as the bytes
arrive (``musetalk_site/body_limit.py``).

A body cut short (the client left, or stopped sending for ``BODY_IDLE_SECONDS``) stops the
parser with ``StopUpload``, which closes (and so deletes) the partial file at once;
``LimitedUploadHandler`` then fails the request with the reason (``cut_short``).

Parsing runs in the view's worker thread, which waits on the event loop for each message; an
async view must not read such a body synchronously.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any, NoReturn

from asgiref.sync import async_to_sync
from django.core.files.uploadhandler import StopUpload
from django.core.handlers.asgi import ASGIHandler

BODY_IDLE_SECONDS = 60.0  # a body that stops arriving for this long is given up


class StreamedBody(io.RawIOBase):
    """A request body read from the ASGI ``receive`` as the reader asks for it."""

    def __init__(self, receive: Any) -> None:
        super().__init__()
        self._receive = receive
        self._pending = memoryview(b"")
        self._ended = False
        self._disconnected = False
        self._done = asyncio.Event()
        self.cut_short = ""  # why the body ended early, if it did

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._pending:
            if self._ended:
                return 0
            self._pending = memoryview(async_to_sync(self._next)())
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    async def _next(self) -> bytes:
        """The next non-empty piece of body, or b"" at its end."""
        while not self._ended:
            try:
                message = await asyncio.wait_for(self._receive(), BODY_IDLE_SECONDS)
            except TimeoutError:
                self._cut("The request body stopped arriving.")
            if message["type"] == "http.disconnect":
                self._disconnected = True
                self._cut("The connection closed before the whole body arrived.")
            if not message.get("more_body", False):
                self._end()
            if message.get("body"):
                return bytes(message["body"])
        return b""

    def _end(self) -> None:
        self._ended = True
        self._done.set()

    def _cut(self, reason: str) -> NoReturn:
        self.cut_short = reason
        self._end()
        raise StopUpload(connection_reset=True)

    async def receive_after_body(self) -> dict[str, Any]:
        """``receive`` for Django's disconnect listener: it may listen once the body is in."""
        await self._done.wait()
        if self._disconnected:
            return {"type": "http.disconnect"}
        message: dict[str, Any] = await self._receive()
        return message


class _BodyReceive:
    """The ``receive`` Django's handler gets for a streamed body: its body is ``body``."""

    def __init__(self, body: StreamedBody) -> None:
        self.body = body

    async def __call__(self) -> dict[str, Any]:
        return await self.body.receive_after_body()


class StreamingASGIHandler(ASGIHandler):
    """Django's ASGI handler, reading multipart bodies as the parser asks for them."""

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not _is_multipart(scope):
            await super().handle(scope, receive, send)
            return
        await super().handle(scope, _BodyReceive(StreamedBody(receive)), send)

    async def read_body(self, receive: Any) -> Any:
        if isinstance(receive, _BodyReceive):
            return receive.body
        return await super().read_body(receive)


def _is_multipart(scope: dict[str, Any]) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            return bool(value.lower().startswith(b"multipart/form-data"))
    return False
