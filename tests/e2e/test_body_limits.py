"""Request bodies on the real stack: refused before they are stored, stored once when accepted.

A raw socket plays the client, so the test controls exactly how much of a body is sent and
can watch what the web process holds on disk (its open files, via /proc) while it arrives.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from avatars.models import Avatar
from musetalk_site.stack import Stack
from tests.e2e.client import api_user, wait_for
from tests.media import make_face_video

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

MB = 1024 * 1024
SLACK = 16 * MB  # socket buffers on both ends, and what is in flight between them
BOUNDARY = "body-limit-boundary"


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _connect(stack: Stack) -> socket.socket:
    sock = socket.create_connection((stack.config.host, stack.config.port), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
    return sock


def _head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_response(sock: socket.socket) -> RawResponse:
    """The whole response: every request here says ``Connection: close``."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _unchunk(body)
    return RawResponse(int(status_line.split()[1]), headers, body)


def _unchunk(data: bytes) -> bytes:
    body = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        body, data = body + data[:size], data[size + 2 :]
    return body


def _answered(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def _web_pid(stack: Stack) -> int:
    return next(child for child in stack.children if child.name == "web").process.pid


def _held_files(pid: int) -> dict[str, os.stat_result]:
    """The regular files the web process holds open in the temp folder or MEDIA_ROOT
    (deleted ones too: an unlinked spool file still fills the disk)."""
    roots = (tempfile.gettempdir(), str(settings.MEDIA_ROOT))
    held = {}
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
            stat = os.stat(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith(roots) and not target.endswith(".log") and ".sqlite3" not in target:
            held[target] = stat
    return held


def _held_bytes(pid: int) -> int:
    return sum(stat.st_size for stat in _held_files(pid).values())


def _multipart(fields: dict[str, str], field: str, name: str, size: int) -> tuple[bytes, bytes]:
    """The multipart body around one file part of ``size`` bytes: (before it, after it)."""
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'
        for key, value in fields.items()
    ]
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    return "".join(parts).encode(), f"\r\n--{BOUNDARY}--\r\n".encode()


def _upload_headers(token: str | None, length: int | None) -> dict[str, str]:
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    if token is not None:
        headers["Authorization"] = f"Token {token}"
    if length is None:
        headers["Transfer-Encoding"] = "chunked"
    else:
        headers["Content-Length"] = str(length)
    return headers


def _announce_and_wait(stack: Stack, path: str, headers: dict[str, str]) -> RawResponse:
    """Send the headers and the first 64 KB of a huge body, then wait for the answer."""
    before, _ = _multipart({"avatar_id": "host"}, "audio_file", "talk.wav", 0)
    start = before + b"\0" * (64 * 1024)
    if headers.get("Transfer-Encoding") == "chunked":
        start = b"%x\r\n%s\r\n" % (len(start), start)
    with _connect(stack) as sock:
        sock.sendall(_head("POST", path, headers) + start)
        return _read_response(sock)


def test_an_announced_body_over_the_limit_is_refused_before_it_is_read(live_stack: Stack):
    client = api_user(live_stack.base_url, "huge-announcer")
    pid = _web_pid(live_stack)
    headers = {**_upload_headers(client.token, 600 * MB), "Expect": "100-continue"}
    response = _announce_and_wait(live_stack, "/generate", headers)
    assert response.status == 413, response  # and no "100 Continue" before it
    limit = settings.MAX_AUDIO_UPLOAD_BYTES
    assert response.json() == {
        "message": "audio_file is larger than the 50 MB limit.",
        "extra": {"field": "audio_file", "limit_bytes": limit},
    }
    assert response.headers["connection"] == "close"
    assert _held_bytes(pid) < MB


@pytest.mark.parametrize("path", ["/generate", "/avatars/prepare", "/sessions/create"])
def test_a_stranger_is_refused_before_the_body_is_read(live_stack: Stack, path: str):
    pid = _web_pid(live_stack)
    response = _announce_and_wait(live_stack, path, _upload_headers(None, 300 * MB))
    assert response.status == 401, response
    assert response.json()["message"] == "Authentication credentials were not provided."
    assert response.headers["www-authenticate"] == 'Token realm="api"'
    assert _held_bytes(pid) < MB


def test_a_made_up_token_is_refused_before_the_body_is_read(live_stack: Stack):
    headers = _upload_headers("not-a-real-token", 40 * MB)
    response = _announce_and_wait(live_stack, "/generate", headers)
    assert response.status == 401, response
    assert response.json()["message"] == "Invalid token."


def test_an_upload_must_announce_its_length(live_stack: Stack):
    client = api_user(live_stack.base_url, "chunked-uploader")
    response = _announce_and_wait(live_stack, "/generate", _upload_headers(client.token, None))
    assert response.status == 411, response
    assert "Content-Length" in response.json()["message"]


def _send_chunks_until_answered(sock: socket.socket, pid: int, cap: int) -> tuple[int, int]:
    """Send a chunked body, 256 KB at a time, until the server answers, stops reading or
    ``cap`` bytes are out. Returns (bytes sent, the most the web process held meanwhile)."""
    sent, held = 0, 0
    chunk = b"%x\r\n%s\r\n" % (256 * 1024, b"\0" * 256 * 1024)
    while sent < cap and not _answered(sock):
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            break
        sent += 256 * 1024
        held = max(held, _held_bytes(pid))
    return sent, held


@pytest.mark.parametrize(
    "user,status,limit",
    [
        (None, 401, settings.ANONYMOUS_REQUEST_BODY_BYTES),
        ("chunked-json", 413, settings.MAX_REQUEST_BODY_BYTES),
    ],
)
def test_a_body_without_a_length_is_cut_at_the_limit(
    live_stack: Stack, user: str | None, status: int, limit: int
):
    token = api_user(live_stack.base_url, user).token if user else None
    pid = _web_pid(live_stack)
    headers = {"Transfer-Encoding": "chunked", "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    with _connect(live_stack) as sock:
        sock.sendall(_head("POST", "/sessions/create", headers))
        sent, held = _send_chunks_until_answered(sock, pid, cap=limit + 48 * MB)
        response = _read_response(sock)
    assert response.status == status, response
    assert response.headers["connection"] == "close"
    assert sent <= limit + SLACK
    assert held <= limit


def _padded_video(path: Path, size: int) -> Path:
    """A real clip grown to ``size`` bytes with an MP4 ``free`` box, which readers skip."""
    make_face_video(path, seconds=0.4, fps=25, size=(128, 160))
    padding = size - path.stat().st_size
    with path.open("ab") as handle:
        handle.write(struct.pack(">I4s", padding, b"free") + b"\0" * (padding - 8))
    return path


def test_an_accepted_upload_is_written_once_as_it_arrives(live_stack: Stack, tmp_path: Path):
    client = api_user(live_stack.base_url, "one-copy")
    video = _padded_video(tmp_path / "big.mp4", 24 * MB).read_bytes()
    before, after = _multipart({"avatar_id": "big"}, "video_file", "big.mp4", len(video))
    pid = _web_pid(live_stack)
    held_before = _held_files(pid)
    tail = 256 * 1024
    with _connect(live_stack) as sock:
        headers = _upload_headers(client.token, len(before) + len(video) + len(after))
        sock.sendall(_head("POST", "/avatars/prepare", headers) + before + video[:-tail])

        # All but the last 256 KB is out: the server holds one growing file, nothing else.
        def growing_upload() -> tuple[str, os.stat_result] | None:
            new = {k: v for k, v in _held_files(pid).items() if k not in held_before}
            big = [(k, v) for k, v in new.items() if v.st_size >= len(video) - tail - SLACK]
            return big[0] if len(big) == 1 and len(new) == 1 else None

        spool, stat = wait_for(growing_upload, timeout=60)
        assert "(deleted)" not in spool and stat.st_size <= len(video)
        sock.sendall(video[-tail:] + after)
        response = _read_response(sock)
    assert response.status == 200, response
    avatar = Avatar.objects.get(owner__username="one-copy", avatar_id="big")
    stored = os.stat(Path(settings.MEDIA_ROOT) / avatar.source_video.name)
    assert stored.st_size == len(video)
    assert (stored.st_dev, stored.st_ino) == (stat.st_dev, stat.st_ino)  # moved, never copied
    assert not Path(spool).exists()


def test_malformed_multipart_gets_the_json_error_body(live_stack: Stack):
    client = api_user(live_stack.base_url, "bad-multipart")
    body = b"--nope\r\nthis is not multipart\r\n"
    headers = {
        "Authorization": f"Token {client.token}",
        "Content-Type": "multipart/form-data; boundary=different",
        "Content-Length": str(len(body)),
    }
    with _connect(live_stack) as sock:
        sock.sendall(_head("POST", "/generate", headers) + body)
        response = _read_response(sock)
    assert response.status == 400, response
    assert set(response.json()) == {"message", "extra"}
