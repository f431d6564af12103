"""The demo banner on every page: read from the worker heartbeats, cached for a few seconds."""

from __future__ import annotations

import time

import pytest
from django.test import RequestFactory

from musetalk_site import context_processors
from musetalk_site.health import DEMO_BANNER
from musetalk_site.heartbeat import WorkerBeat, beat_write
from musetalk_site.redis_conn import redis_client

pytestmark = pytest.mark.django_db


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(context_processors, "clock", clock)
    monkeypatch.setattr(context_processors, "_banner", None)
    return clock


def _demo_beat() -> None:
    engine = {"profile": "random-tiny", "loaded": True, "demo": True}
    now = time.time()
    beat = WorkerBeat("demo-worker", 1, "test", now - 10, now, engine=engine)
    beat_write(redis_client(), beat, ttl_seconds=60)


def _heartbeat_scans() -> int:
    """How many times Redis was asked for the heartbeat keys (SCAN), by anyone."""
    return int(redis_client().info("commandstats").get("cmdstat_scan", {}).get("calls", 0))


def _banner() -> str:
    return context_processors.platform(RequestFactory().get("/"))["engine_banner"]


def test_pages_read_the_heartbeats_at_most_once_per_window(redis_server, clock):
    _demo_beat()
    scans = _heartbeat_scans()
    for _ in range(5):
        assert _banner() == DEMO_BANNER
        clock.now += context_processors.BANNER_TTL_SECONDS / 10
    assert _heartbeat_scans() == scans + 1


def test_a_new_reading_is_shown_once_the_window_passed(redis_server, clock):
    assert _banner() == ""
    _demo_beat()
    clock.now += context_processors.BANNER_TTL_SECONDS - 0.1
    assert _banner() == ""  # still the cached reading
    clock.now += 0.1
    scans = _heartbeat_scans()
    assert _banner() == DEMO_BANNER
    assert _heartbeat_scans() == scans + 1


def test_a_clock_that_goes_back_reads_again(redis_server, clock):
    assert _banner() == ""
    _demo_beat()
    clock.now -= 1
    assert _banner() == DEMO_BANNER
