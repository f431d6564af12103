"""Request bodies under daphne: refused before they are read, uploads streamed as they arrive.

Twisted reads a whole request body into a temporary file before daphne starts the
application, so a limit checked in Django comes after the disk has been filled. ``install``
makes daphne use :class:`LimitedWebRequest`, which decides as soon as the headers are in:

- a caller without credentials (no ``Authorization`` header, no session cookie, no
  ``?token=``) may send ``ANONYMOUS_REQUEST_BODY_BYTES``; a longer body gets a 401 (unless
  anonymous access is on: such a caller then acts as a user and gets a user's limits);
- an upload (a multipart POST to one of the upload routes) may send its file's limit plus a
  margin for the other fields, and must announce its length (411 otherwise, as Django cannot
  parse a multipart body without one); any other body may send ``MAX_REQUEST_BODY_BYTES``;
  a longer body gets a 413;
- a body of unannounced length is counted as it arrives and cut at the limit;
- an upload goes to the application as it arrives, never stored first: the application
  starts at once, the connection is paused while it lags behind, and Django's upload handler
  writes the only copy (``musetalk_site/body_stream.py``).

A refusal is the JSON error body with ``Connection: close``. Whatever of the body still
arrives is read and dropped, never stored, for ``LINGER_SECONDS`` (so that the client reads
the answer instead of a reset), then the connection is cut.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote

from daphne import http_protocol
from django.conf import settings
from django.urls import Resolver404, resolve
from twisted.web.http import RESPONSES

from musetalk_site.auth import TOKEN_PARAM
from musetalk_site.errors import (
    TOKEN_CHALLENGE,
    ApplicationError,
    ErrorPayload,
    NotAuthenticatedError,
    error_payload,
)
from musetalk_site.uploads import field_limit, too_large_error

logger = logging.getLogger(__name__)

UPLOAD_MARGIN_BYTES = 64 * 1024  # the other form fields and the multipart framing
LINGER_SECONDS = 5.0
QUEUE_HIGH = 16  # body messages waiting for the application: pause the connection (<= 1 MB)
QUEUE_LOW = 4  # ... and read on once it is down to this
POLL_SECONDS = 0.01


@dataclass(frozen=True)
class BodyRule:
    """How much body a request may send, and what it gets for more."""

    limit_bytes: int
    refusal: ErrorPayload
    upload: bool = False  # streamed to the application as it arrives


LENGTH_REQUIRED = ErrorPayload(
    411, "An upload must be sent with a Content-Length header (not chunked).", {}
)


def body_rule(
    *,
    method: str,
    path: str,
    content_type: str,
    has_credentials: bool,
    upload_fields: Mapping[str, str],
) -> BodyRule:
    """The rule for a request, from its head alone."""
    if not has_credentials:
        return BodyRule(settings.ANONYMOUS_REQUEST_BODY_BYTES, _payload(NotAuthenticatedError()))
    field = _upload_field(method, path, content_type, upload_fields)
    if field is not None:
        limit = field_limit(field)
        return BodyRule(limit + UPLOAD_MARGIN_BYTES, _payload(too_large_error(field, limit)), True)
    limit = settings.MAX_REQUEST_BODY_BYTES
    message = f"The request body is larger than the {limit // 1024} KB limit."
    return BodyRule(limit, _payload(ApplicationError(message, {"limit_bytes": limit}, status=413)))


def _upload_field(
    method: str, path: str, content_type: str, upload_fields: Mapping[str, str]
) -> str | None:
    """The file field of an upload route, for a multipart POST to one."""
    if method != "POST" or not content_type.lower().startswith("multipart/form-data"):
        return None
    try:
        name = resolve(path).url_name
    except Resolver404:
        return None
    return upload_fields.get(name or "")


def _payload(exc: ApplicationError) -> ErrorPayload:
    payload = error_payload(exc)
    assert payload is not None  # an ApplicationError always has one
    return payload


def cors_lines(*, origin: str | None, path: str) -> list[str]:
    """The CORS headers django-cors-headers would add for ``origin`` on ``path``, for answers
    sent before Django runs (a browser on an allowed origin must be able to read them)."""
    if not origin or origin not in settings.CORS_ALLOWED_ORIGINS:
        return []
    if not re.match(settings.CORS_URLS_REGEX, path):
        return []
    exposed = ", ".join(settings.CORS_EXPOSE_HEADERS)
    return [
        f"Access-Control-Allow-Origin: {origin}",
        f"Access-Control-Expose-Headers: {exposed}",
        "Vary: Origin",
    ]


def response_bytes(payload: ErrorPayload, *, extra_lines: Sequence[str] = ()) -> bytes:
    """A complete HTTP/1.1 response carrying the JSON error body, closing the connection."""
    body = json.dumps(payload.body(), separators=(",", ":")).encode()
    reason = RESPONSES.get(payload.status, b"Error").decode()
    lines = [f"HTTP/1.1 {payload.status} {reason}", "Content-Type: application/json"]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    if payload.status == 401:
        lines.append(f"WWW-Authenticate: {TOKEN_CHALLENGE}")
    lines += extra_lines
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def install(*, upload_fields: Mapping[str, str]) -> None:
    """Make this process's daphne use :class:`LimitedWebRequest` for every HTTP request.

    ``upload_fields`` names the upload routes (URL name -> the file field each takes).
    """
    LimitedWebRequest.upload_fields = dict(upload_fields)
    # daphne has no setting for its request class: its factory builds the one of this name.
    http_protocol.WebRequest = LimitedWebRequest


class _StreamedBody:
    """Stands in for Twisted's body file while an upload streams to the application.

    It reads as closed, so daphne's ``process()`` starts the application and sends no body:
    the body messages come from :meth:`LimitedWebRequest.handleContentChunk`.
    """

    closed = True

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def read(self, size: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        pass


class LimitedWebRequest(http_protocol.WebRequest):
    """daphne's request, checking the body as it arrives (see the module docstring).

    Twisted calls ``gotLength`` once the headers are in, ``handleContentChunk`` for each
    piece of body and ``requestReceived`` when the body is complete.
    """

    upload_fields: ClassVar[dict[str, str]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Django parses bodies. Twisted would first read each multipart body into memory to
        # parse it too, and answer one it cannot parse with an empty 400 of its own.
        self._parsePOSTFormSubmission = False
        self.rule = BodyRule(0, LENGTH_REQUIRED)
        self.received = 0
        self.refused = False
        self.streaming = False
        self.paused = False

    def gotLength(self, length: int | None) -> None:
        channel = self.channel
        self.method, self.uri, self.clientproto = channel._command, channel._path, channel._version
        self.path = self.uri.split(b"?", 1)[0]
        self.rule = self._rule()
        if length is None and self.rule.upload:
            self.refuse(LENGTH_REQUIRED)
        elif length is not None and length > self.rule.limit_bytes:
            self.refuse(self.rule.refusal)
        elif self.rule.upload:
            self._start_streaming()
        else:
            super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.refused or self.finished:
            return
        self.received += len(data)
        if self.received > self.rule.limit_bytes:
            self.refuse(self.rule.refusal)
        elif self.streaming:
            self._forward(data, more_body=True)
        else:
            super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.refused or self.finished:
            return
        if self.streaming:
            self._forward(b"", more_body=False)
        else:
            super().requestReceived(command, path, version)

    def handle_reply(self, message: dict[str, Any]) -> None:
        if self.refused:
            return  # answered already
        if self.streaming and message["type"] == "http.response.start":
            # The answer may come before the whole body: the connection ends with it.
            message = {
                **message,
                "headers": [*message.get("headers", []), (b"Connection", b"close")],
            }
        super().handle_reply(message)

    def refuse(self, payload: ErrorPayload) -> None:
        """Answer ``payload`` now, store no more of the body, and cut the connection soon."""
        self.refused = True
        logger.info(
            "%s %s refused (%s): %s",
            self.method.decode("ascii", "replace"),
            self.path.decode("ascii", "replace"),
            payload.status,
            payload.message,
        )
        if self.application_queue is not None:
            self.application_queue.put_nowait({"type": "http.disconnect"})
        self.requestHeaders.removeHeader(b"Expect")  # no "100 Continue" after the answer
        channel, transport = self.channel, self.transport
        channel.dataReceived = _drop
        origin = self.getHeader(b"origin")
        path = self.path.decode("ascii", "replace").split("?", 1)[0]
        cors = cors_lines(origin=origin.decode("latin-1") if origin else None, path=path)
        transport.write(response_bytes(payload, extra_lines=cors))
        if self.paused:
            transport.resumeProducing()
        getattr(transport, "loseWriteConnection", transport.loseConnection)()
        channel.callLater(LINGER_SECONDS, transport.abortConnection)

    def _rule(self) -> BodyRule:
        content_type = self.requestHeaders.getRawHeaders(b"Content-Type", [b""])[0]
        return body_rule(
            method=self.method.decode("ascii", "replace"),
            path=unquote(self.path.decode("ascii", "replace")),
            content_type=content_type.decode("latin1"),
            has_credentials=self._has_credentials(),
            upload_fields=self.upload_fields,
        )

    def _has_credentials(self) -> bool:
        """Whether the request carries any credentials, or may act as the anonymous-access
        user without any; the application checks them."""
        if settings.ANONYMOUS_ACCESS_USER:
            return True
        if self.requestHeaders.hasHeader(b"Authorization"):
            return True
        if settings.SESSION_COOKIE_NAME.encode() in self.received_cookies:
            return True
        return TOKEN_PARAM.encode() in parse_qs(self.uri.partition(b"?")[2])

    def _start_streaming(self) -> None:
        """Start the application now; the body follows as messages (see ``_forward``)."""
        # An answer can come before the body is all in; the connection cannot be reused then.
        self.channel.persistent = False
        self.content = _StreamedBody()
        self.process()
        self.streaming = self.application_queue is not None and not self.finished

    def _forward(self, data: bytes, *, more_body: bool) -> None:
        queue = self.application_queue
        queue.put_nowait({"type": "http.request", "body": data, "more_body": more_body})
        if more_body and queue.qsize() >= QUEUE_HIGH:
            # The application lags behind: let TCP hold the client back meanwhile.
            self.transport.pauseProducing()
            if not self.paused:
                self.paused = True
                self.channel.callLater(POLL_SECONDS, self._resume_when_drained)

    def _resume_when_drained(self) -> None:
        if self.refused or self.finished or self._disconnected:
            return
        if self.application_queue.qsize() > QUEUE_LOW:
            self.channel.callLater(POLL_SECONDS, self._resume_when_drained)
            return
        self.paused = False
        self.transport.resumeProducing()


def _drop(data: bytes) -> None:
    """What a refused connection does with the rest of the body."""
