from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

import pytest

from inference.cache import AvatarCache

JOIN_TIMEOUT = 10.0


class FakeClock:
    """A settable monotonic clock in seconds."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingLoader:
    """Loads ``bytes(size)`` for a key (size from ``sizes``, else 10) and records every call."""

    def __init__(self, sizes: dict[str, int] | None = None) -> None:
        self.sizes = sizes or {}
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, key: str) -> bytes:
        with self._lock:
            self.calls.append(key)
        return bytes(self.sizes.get(key, 10))


def make_cache(
    loader: RecordingLoader | None = None,
    *,
    max_bytes: int = 100,
    ttl_seconds: float = 60.0,
    clock: FakeClock | None = None,
    **kwargs: object,
) -> AvatarCache[bytes]:
    return AvatarCache(
        max_bytes=max_bytes,
        ttl_seconds=ttl_seconds,
        loader=loader or RecordingLoader(),
        sizeof=len,
        clock=clock or FakeClock(),
        cleanup_interval=None,
        **kwargs,  # type: ignore[arg-type]
    )


def join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a thread deadlocked"


def run_threads(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.start()
    join_all(threads)


def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate()`` until it is true; the deadline only guards against a hang."""
    deadline = time.monotonic() + JOIN_TIMEOUT
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.002)


def test_it_loads_on_a_miss_and_serves_hits_after() -> None:
    loader = RecordingLoader({"alice/1": 30})
    cache = make_cache(loader)

    first = cache.get("alice/1")
    second = cache.get("alice/1")

    assert first is second
    assert loader.calls == ["alice/1"]
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.loads) == (1, 1, 1)
    assert stats.bytes == 30
    assert stats.hit_rate == 0.5


def test_it_evicts_the_least_recently_used_entry_to_stay_within_max_bytes() -> None:
    loader = RecordingLoader({"a": 40, "b": 40, "c": 40})
    cache = make_cache(loader, max_bytes=100)
    cache.get("a")
    cache.get("b")
    cache.get("a")  # now "b" is the least recently used

    cache.get("c")

    assert cache.keys() == ["a", "c"]
    stats = cache.stats()
    assert stats.bytes == 80
    assert stats.evictions == {"lru": 1, "ttl": 0, "explicit": 0}


def test_it_evicts_several_entries_to_fit_a_large_one() -> None:
    loader = RecordingLoader({"a": 30, "b": 30, "c": 30, "big": 90})
    cache = make_cache(loader, max_bytes=100)
    for key in ("a", "b", "c"):
        cache.get(key)

    cache.get("big")

    assert cache.keys() == ["big"]
    assert cache.stats().evictions["lru"] == 3


def test_it_returns_but_does_not_cache_an_oversize_value() -> None:
    loader = RecordingLoader({"small": 50, "huge": 101})
    cache = make_cache(loader, max_bytes=100)
    cache.get("small")

    value = cache.get("huge")

    assert len(value) == 101
    assert not cache.contains("huge")
    assert cache.contains("small")
    stats = cache.stats()
    assert stats.oversize == 1
    assert stats.bytes == 50
    assert stats.evictions["lru"] == 0


def test_it_expires_an_entry_idle_for_the_ttl_and_reloads_it() -> None:
    clock = FakeClock()
    loader = RecordingLoader()
    cache = make_cache(loader, ttl_seconds=10.0, clock=clock)
    cache.get("a")
    clock.advance(9.0)
    cache.get("a")  # a hit refreshes the last access
    clock.advance(9.0)
    assert cache.contains("a")

    clock.advance(1.0)

    assert not cache.contains("a")
    cache.get("a")
    assert loader.calls == ["a", "a"]
    stats = cache.stats()
    assert stats.evictions["ttl"] == 1
    assert (stats.hits, stats.misses) == (1, 2)


def test_it_prefers_expired_entries_over_lru_ones_when_making_room() -> None:
    clock = FakeClock()
    loader = RecordingLoader({"old": 40, "fresh": 40, "new": 40})
    cache = make_cache(loader, max_bytes=100, ttl_seconds=10.0, clock=clock)
    cache.get("fresh")
    cache.get("old")
    clock.advance(5.0)
    cache.get("fresh")
    clock.advance(5.0)  # "old" is now 10 s idle, "fresh" 5 s

    cache.get("new")

    assert cache.keys() == ["fresh", "new"]
    assert cache.stats().evictions == {"lru": 0, "ttl": 1, "explicit": 0}


def test_it_expires_entries_in_the_background_thread() -> None:
    clock = FakeClock()
    expired = threading.Event()

    def on_evict(key: str, value: bytes, reason: str) -> None:
        if reason == "ttl":
            expired.set()

    cache: AvatarCache[bytes] = AvatarCache(
        max_bytes=100,
        ttl_seconds=10.0,
        loader=RecordingLoader(),
        sizeof=len,
        clock=clock,
        cleanup_interval=0.01,
        on_evict=on_evict,
    )
    with cache:
        cache.get("a")
        clock.advance(10.0)
        assert expired.wait(JOIN_TIMEOUT), "the cleanup thread never expired the entry"
    assert cache.keys() == []
    assert cache.stats().evictions["ttl"] == 1


def test_it_stops_the_cleanup_thread_promptly_on_close() -> None:
    cache = AvatarCache(
        max_bytes=100,
        ttl_seconds=10.0,
        loader=RecordingLoader(),
        sizeof=len,
        cleanup_interval=3600.0,
    )
    cache.start()
    workers = [t for t in threading.enumerate() if t.name == "avatar-cache-cleanup"]
    assert len(workers) == 1 and workers[0].daemon

    closer = threading.Thread(target=cache.close, daemon=True)
    run_threads([closer])  # would hang for an hour if close() waited out the interval

    assert not workers[0].is_alive()


def test_it_loads_once_for_many_concurrent_misses() -> None:
    release = threading.Event()
    loader = RecordingLoader({"alice/1": 20})

    def slow_loader(key: str) -> bytes:
        value = loader(key)
        release.wait(JOIN_TIMEOUT)
        return value

    cache = AvatarCache(max_bytes=100, ttl_seconds=60.0, loader=slow_loader, sizeof=len)
    results: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get("alice/1")), daemon=True)
        for _ in range(16)
    ]
    for thread in threads:
        thread.start()
    # Every caller has missed (and is waiting) before the single load is allowed to finish.
    wait_until(lambda: cache.stats().misses == 16)
    release.set()
    join_all(threads)

    assert loader.calls == ["alice/1"]
    assert len(results) == 16
    assert all(result is results[0] for result in results)
    stats = cache.stats()
    assert (stats.misses, stats.loads, stats.entries) == (16, 1, 1)


def test_it_propagates_a_loader_error_to_every_waiter_and_caches_nothing() -> None:
    release = threading.Event()
    attempts: list[str] = []

    def failing_once(key: str) -> bytes:
        attempts.append(key)
        if len(attempts) == 1:
            release.wait(JOIN_TIMEOUT)
            raise RuntimeError("avatar files are corrupt")
        return bytes(10)

    cache = AvatarCache(max_bytes=100, ttl_seconds=60.0, loader=failing_once, sizeof=len)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            cache.get("alice/1")
        except RuntimeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call, daemon=True) for _ in range(8)]
    for thread in threads:
        thread.start()
    wait_until(lambda: cache.stats().misses == 8)
    release.set()
    join_all(threads)

    assert len(errors) == 8
    assert all("corrupt" in str(error) for error in errors)
    assert not cache.contains("alice/1")
    stats = cache.stats()
    assert (stats.loads, stats.load_errors, stats.entries, stats.bytes) == (0, 1, 0, 0)
    assert len(cache.get("alice/1")) == 10  # the failure was not cached: the next get retries
    assert attempts == ["alice/1", "alice/1"]


def test_it_runs_the_loader_outside_the_lock() -> None:
    slow_started = threading.Event()
    release = threading.Event()

    def loader(key: str) -> bytes:
        if key == "slow":
            slow_started.set()
            release.wait(JOIN_TIMEOUT)
        return bytes(10)

    cache = AvatarCache(max_bytes=100, ttl_seconds=60.0, loader=loader, sizeof=len)
    slow = threading.Thread(target=cache.get, args=("slow",), daemon=True)
    slow.start()
    assert slow_started.wait(JOIN_TIMEOUT)

    fast = threading.Thread(target=cache.get, args=("fast",), daemon=True)
    run_threads([fast])  # finishes while "slow" is still loading

    assert cache.contains("fast")
    assert not cache.contains("slow")
    release.set()
    slow.join(JOIN_TIMEOUT)
    assert cache.contains("slow")


def test_it_calls_on_evict_with_the_reason() -> None:
    clock = FakeClock()
    events: list[tuple[str, int, str]] = []
    loader = RecordingLoader({"a": 40, "b": 40, "c": 40, "d": 10})
    cache = make_cache(
        loader,
        max_bytes=100,
        ttl_seconds=10.0,
        clock=clock,
        on_evict=lambda key, value, reason: events.append((key, len(value), reason)),
    )
    cache.get("a")
    cache.get("b")
    cache.get("c")  # evicts "a"
    assert cache.evict("b") is True
    assert cache.evict("b") is False
    clock.advance(10.0)
    assert cache.purge_expired() == 1  # "c"
    cache.get("d")
    cache.clear()

    assert events == [
        ("a", 40, "lru"),
        ("b", 40, "explicit"),
        ("c", 40, "ttl"),
        ("d", 10, "explicit"),
    ]
    stats = cache.stats()
    assert stats.evictions == {"lru": 1, "ttl": 1, "explicit": 2}
    assert stats.evictions_total == 4
    assert (stats.entries, stats.bytes) == (0, 0)


def test_it_survives_a_failing_on_evict_callback(caplog: pytest.LogCaptureFixture) -> None:
    def broken(key: str, value: bytes, reason: str) -> None:
        raise RuntimeError("cannot free")

    cache = make_cache(on_evict=broken)
    cache.get("a")

    with caplog.at_level(logging.ERROR, logger="inference.cache"):
        assert cache.evict("a") is True

    assert "on_evict failed for avatar a" in caplog.text
    assert not cache.contains("a")


def test_it_does_not_cache_a_load_evicted_while_in_flight() -> None:
    started = threading.Event()
    release = threading.Event()

    def loader(key: str) -> bytes:
        started.set()
        release.wait(JOIN_TIMEOUT)
        return bytes(10)

    cache = AvatarCache(max_bytes=100, ttl_seconds=60.0, loader=loader, sizeof=len)
    results: list[bytes] = []
    getter = threading.Thread(target=lambda: results.append(cache.get("alice/1")), daemon=True)
    getter.start()
    assert started.wait(JOIN_TIMEOUT)

    assert cache.evict("alice/1") is False  # not cached yet, but its load is now stale
    release.set()
    getter.join(JOIN_TIMEOUT)

    assert len(results[0]) == 10
    assert not cache.contains("alice/1")
    assert cache.stats().loads == 1


def test_it_reports_entry_info_without_counting_an_access() -> None:
    clock = FakeClock()
    cache = make_cache(RecordingLoader({"a": 25}), clock=clock)
    clock.advance(1.0)
    cache.get("a")
    clock.advance(2.0)
    cache.get("a")
    cache.get("a")

    info = cache.entry_info("a")

    assert info == {"size": 25, "loaded_at": 1.0, "last_access": 3.0, "hits": 2}
    assert cache.entry_info("missing") is None
    assert cache.stats().hits == 2


def test_it_warms_without_counting_a_hit_or_miss() -> None:
    loader = RecordingLoader()
    cache = make_cache(loader)

    assert cache.warm("a") is True
    assert cache.warm("a") is False

    assert loader.calls == ["a"]
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.loads) == (0, 0, 1)
    cache.get("a")
    assert cache.stats().hits == 1


def test_its_stats_add_up_under_concurrent_use() -> None:
    sizes = {f"owner/{i}": 5 + 7 * i for i in range(12)}
    loader = RecordingLoader(sizes)
    cache = make_cache(loader, max_bytes=200)
    errors: list[BaseException] = []
    gets_per_thread = 300

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(gets_per_thread):
                key = rng.choice(list(sizes))
                assert len(cache.get(key)) == sizes[key]
                assert cache.stats().bytes <= 200
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    run_threads([threading.Thread(target=worker, args=(seed,), daemon=True) for seed in range(8)])

    assert errors == []
    stats = cache.stats()
    assert stats.hits + stats.misses == 8 * gets_per_thread
    assert stats.loads == len(loader.calls) <= stats.misses
    assert stats.entries == len(cache.keys())
    assert stats.bytes == sum(sizes[key] for key in cache.keys()) <= 200
    # Every loaded value is either still cached or was evicted (none is oversize here).
    assert stats.entries + stats.evictions_total == stats.loads
    assert stats.evictions["lru"] > 0


@pytest.mark.parametrize(
    "kwargs",
    [{"max_bytes": 0}, {"ttl_seconds": 0.0}, {"cleanup_interval": 0.0}],
)
def test_it_rejects_invalid_settings(kwargs: dict[str, float]) -> None:
    settings: dict[str, object] = {
        "max_bytes": 100,
        "ttl_seconds": 10.0,
        "loader": RecordingLoader(),
        "sizeof": len,
        "cleanup_interval": None,
    }
    settings.update(kwargs)
    with pytest.raises(ValueError):
        AvatarCache(**settings)  # type: ignore[arg-type]
