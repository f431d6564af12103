"""Anonymous access on a real stack of its own: a client that sends no credentials at all
(as the seed API's players, load tester and request collections do) uploads, follows and
reads as the named user; the web process says so loudly; CORS answers before any check."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from django.conf import settings

from musetalk_site.launcher import check_anonymous_access, read_launch_config
from musetalk_site.stack import Stack, StackConfig, free_port
from tests.conftest import database_url, live_stack_workers_paused
from tests.e2e.client import api_user, sse_payloads
from tests.factories import UserFactory
from tests.media import make_face_video

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

KIOSK = "seed_kiosk"
APP = "https://app.example.com"


@pytest.fixture
def anonymous_stack(tmp_path: Path) -> Iterator[Stack]:
    from django.db import connection

    UserFactory(username=KIOSK)
    var = tmp_path / "var"
    env = {
        "DATABASE_URL": database_url(connection.settings_dict),
        "VAR_DIR": str(var),
        "MEDIA_ROOT": str(var / "media"),
        "ANONYMOUS_ACCESS_USER": KIOSK,
        "CORS_ALLOWED_ORIGINS": APP,
    }
    config = StackConfig(port=free_port(), var_dir=var, env=env, log_dir=var / "logs")
    stack = Stack(config)
    with live_stack_workers_paused():
        try:
            stack.start(health_timeout=180)
            yield stack
        finally:
            stack.stop()


def test_a_client_without_credentials_works_as_the_named_user(
    anonymous_stack: Stack, tmp_path: Path
):
    base = anonymous_stack.base_url
    web_log = (anonymous_stack.config.var_dir / "logs" / "web.log").read_text()
    assert f"ANONYMOUS ACCESS IS ON: requests without credentials act as user '{KIOSK}'" in web_log
    health = requests.get(f"{base}/health", timeout=10).json()
    assert (
        health["anonymous_access"]["enabled"] is True
        and health["anonymous_access"]["user"] == KIOSK
    )

    # An upload larger than a caller without credentials may otherwise send.
    video = make_face_video(tmp_path / "face.mp4", seconds=2.0, fps=25, size=(480, 600))
    assert video.stat().st_size > settings.ANONYMOUS_REQUEST_BODY_BYTES
    with video.open("rb") as handle:
        prepared = requests.post(
            f"{base}/avatars/prepare",
            data={"avatar_id": "kiosk_host", "batch_size": 8},
            files={"video_file": (video.name, handle, "video/mp4")},
            timeout=60,
        )
    assert prepared.status_code == 200, prepared.text

    with requests.get(f"{base}/avatars/kiosk_host/events", stream=True, timeout=(10, 240)) as feed:
        assert feed.status_code == 200
        for _, event in sse_payloads(feed):
            if event.get("event") in {"ready", "error"}:
                break
    assert event["event"] == "ready", event

    listed = requests.get(f"{base}/avatars/", timeout=10).json()
    items = listed["results"] if isinstance(listed, dict) else listed
    assert "kiosk_host" in [item["avatar_id"] for item in items]
    other = api_user(base, "seed_other")
    assert other.get("/avatars/kiosk_host").status_code == 404  # never another user's
    bad = requests.get(f"{base}/avatars/", headers={"Authorization": "Token bad"}, timeout=10)
    assert bad.status_code == 401


def test_cors_answers_the_seed_paths_before_any_credentials(anonymous_stack: Stack):
    base = anonymous_stack.base_url
    preflight_headers = {
        "Origin": APP,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, last-event-id",
    }
    for path in ("/avatars/prepare", "/generate", "/stats", "/health", "/sessions/x/events"):
        preflight = requests.options(f"{base}{path}", headers=preflight_headers, timeout=10)
        assert preflight.status_code == 200, path
        assert preflight.headers["Access-Control-Allow-Origin"] == APP, path
    for path in ("/stats", "/stats/cache", "/capabilities", "/health", "/avatars/"):
        answer = requests.get(f"{base}{path}", headers={"Origin": APP}, timeout=10)
        assert answer.status_code == 200, path
        assert answer.headers["Access-Control-Allow-Origin"] == APP, path
    foreign = requests.get(
        f"{base}/avatars/", headers={"Origin": "https://evil.example"}, timeout=10
    )
    assert foreign.status_code == 401 and "Access-Control-Allow-Origin" not in foreign.headers
    # A body refused before Django runs (413 as soon as the headers are in) is readable too.
    too_big = b"x" * (settings.MAX_REQUEST_BODY_BYTES + 1)
    refused = requests.post(
        f"{base}/sessions/x/keepalive",
        data=too_big,
        headers={"Origin": APP, "Content-Type": "application/octet-stream"},
        timeout=30,
    )
    assert refused.status_code == 413, refused.text
    assert refused.headers["Access-Control-Allow-Origin"] == APP


def test_the_launcher_refuses_to_start_for_a_user_that_does_not_exist(caplog):
    from django.db import connection

    UserFactory(username=KIOSK)
    env = {**os.environ, "DATABASE_URL": database_url(connection.settings_dict)}
    env["ANONYMOUS_ACCESS_USER"] = "nobody_here"
    reason = check_anonymous_access(env, read_launch_config(env))
    assert (
        reason is not None and "ANONYMOUS_ACCESS_USER='nobody_here' names no active user" in reason
    )
    env["ANONYMOUS_ACCESS_USER"] = KIOSK
    with caplog.at_level(logging.WARNING, logger="musetalk.launcher"):
        assert check_anonymous_access(env, read_launch_config(env)) is None
    assert (
        f"ANONYMOUS ACCESS IS ON: requests without credentials act as user '{KIOSK}'" in caplog.text
    )
    env.pop("ANONYMOUS_ACCESS_USER")
    assert check_anonymous_access(env, read_launch_config(env)) is None  # off: nothing to say
