"""The real stack: a Redis server, a worker process and daphne, started by the fixture."""

from __future__ import annotations

import os
import secrets
import time
import urllib.request

import pytest

from musetalk_site.services import ping_result
from musetalk_site.stack import Stack
from musetalk_site.tasks import platform_ping

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_health_is_all_green_on_the_real_stack(live_stack: Stack):
    status, body = live_stack.health()
    assert status == 200, body
    assert body["down"] == []
    assert body["checks"]["database"]["ok"] and body["checks"]["redis"]["ok"]
    assert body["checks"]["worker"]["ok"]
    assert body["checks"]["worker"]["age_seconds"] < 10
    engine = body["engine"]
    assert engine["loaded"] is True
    assert engine["profile"] == "random-tiny"
    assert engine["device"] == "cpu"


def test_an_actor_round_trips_through_the_broker_and_worker(live_stack: Stack):
    token = secrets.token_hex(8)
    platform_ping.send(token)
    deadline = time.monotonic() + 30
    result = None
    while result is None and time.monotonic() < deadline:
        result = ping_result(token=token)
        time.sleep(0.1)
    assert result is not None, "the worker never processed the ping"
    assert result["pid"] != os.getpid()
    assert result["engine"]["profile"] == "random-tiny"


def test_daphne_serves_the_login_page_and_static_files(live_stack: Stack):
    with urllib.request.urlopen(live_stack.base_url + "/login/") as response:
        page = response.read().decode()
    assert response.status == 200 and "Sign in" in page
    with urllib.request.urlopen(live_stack.base_url + "/static/css/site.css") as response:
        assert response.status == 200 and b".topbar" in response.read()
