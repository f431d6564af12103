from __future__ import annotations

import json

import pytest
from django.conf import settings

from musetalk_site.asgi import UPLOAD_FIELDS
from musetalk_site.body_limit import (
    UPLOAD_MARGIN_BYTES,
    body_rule,
    cors_lines,
    response_bytes,
)


def _rule(method: str = "POST", path: str = "/generate", **kwargs):
    fields = {"content_type": "multipart/form-data; boundary=x", "has_credentials": True}
    return body_rule(method=method, path=path, upload_fields=UPLOAD_FIELDS, **{**fields, **kwargs})


@pytest.mark.parametrize(
    "path,field,limit",
    [
        ("/avatars/prepare", "video_file", "MAX_VIDEO_UPLOAD_BYTES"),
        ("/generate", "audio_file", "MAX_AUDIO_UPLOAD_BYTES"),
        ("/sessions/s_1234/stream", "audio_file", "MAX_AUDIO_UPLOAD_BYTES"),
    ],
)
def test_an_upload_may_send_its_file_limit_and_the_other_fields(path, field, limit):
    rule = _rule(path=path)
    file_limit = getattr(settings, limit)
    assert rule.upload and rule.limit_bytes == file_limit + UPLOAD_MARGIN_BYTES
    assert rule.refusal.status == 413
    assert rule.refusal.extra == {"field": field, "limit_bytes": file_limit}
    assert rule.refusal.message == f"{field} is larger than the {file_limit // 2**20} MB limit."


@pytest.mark.parametrize(
    "method,path,content_type",
    [
        ("POST", "/generate", "application/json"),
        ("PUT", "/generate", "multipart/form-data; boundary=x"),
        ("POST", "/sessions/create", "multipart/form-data; boundary=x"),
        ("POST", "/no/such/page", "multipart/form-data; boundary=x"),
    ],
)
def test_any_other_body_gets_the_small_default(method, path, content_type):
    rule = _rule(method, path, content_type=content_type)
    assert not rule.upload and rule.limit_bytes == settings.MAX_REQUEST_BODY_BYTES
    assert rule.refusal.status == 413
    assert rule.refusal.message == "The request body is larger than the 1024 KB limit."


@pytest.mark.parametrize("path", ["/generate", "/login/", "/api/auth/token/"])
def test_a_caller_without_credentials_gets_the_small_allowance(path):
    rule = _rule(path=path, has_credentials=False)
    assert not rule.upload and rule.limit_bytes == settings.ANONYMOUS_REQUEST_BODY_BYTES
    assert rule.refusal.status == 401
    assert rule.refusal.message == "Authentication credentials were not provided."


def test_a_refusal_is_a_complete_json_response_that_closes_the_connection():
    raw = response_bytes(_rule(has_credentials=False).refusal)
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    assert status == "HTTP/1.1 401 Unauthorized"
    assert headers["Connection"] == "close" and headers["Content-Type"] == "application/json"
    assert headers["WWW-Authenticate"] == 'Token realm="api"'
    assert int(headers["Content-Length"]) == len(body)
    assert json.loads(body) == {
        "message": "Authentication credentials were not provided.",
        "extra": {},
    }


def test_a_refusal_before_django_carries_cors_headers_for_an_allowed_origin(settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    lines = cors_lines(origin="https://app.example.com", path="/generate")
    raw = response_bytes(_rule(has_credentials=False).refusal, extra_lines=lines)
    head = raw.partition(b"\r\n\r\n")[0].decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in head[1:])
    assert headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "Retry-After" in headers["Access-Control-Expose-Headers"]
    assert headers["Vary"] == "Origin"
    # Another origin, or a page outside the API, gets none.
    assert cors_lines(origin="https://evil.example.com", path="/generate") == []
    assert cors_lines(origin="https://app.example.com", path="/admin/login/") == []
    assert cors_lines(origin=None, path="/generate") == []
