"""An in-memory, byte-budgeted LRU + TTL cache for prepared avatars.

A worker keeps prepared avatars (latents, masks, crop boxes, frames) resident so that each
utterance does not reload them from disk. ``AvatarCache`` is generic over the cached value: the
engine decides what an avatar is; the cache only needs a ``loader(key) -> value`` and a
``sizeof(value) -> bytes``. Keys are strings such as ``"owner/avatar_id"``.

Guarantees:

- The total size of cached values never exceeds ``max_bytes``; the least recently used entries are
  evicted first. A single value larger than ``max_bytes`` is returned to the caller but not
  cached (counted in ``CacheStats.oversize``).
- An entry not accessed for ``ttl_seconds`` expires: lazily on access, and in the background when
  ``start()`` runs the cleanup thread.
- Concurrent misses for one key call the loader once ("single flight"); the loader runs outside
  the cache lock, so loads of different keys proceed in parallel and hits are never blocked by a
  slow load. A loader exception reaches every caller waiting for that load and nothing is cached.
- ``on_evict(key, value, reason)`` runs outside the lock after an entry leaves the cache (reason
  ``"lru"``, ``"ttl"`` or ``"explicit"``), e.g. to free GPU memory held by the value.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

REASON_LRU = "lru"
REASON_TTL = "ttl"
REASON_EXPLICIT = "explicit"
EVICTION_REASONS = (REASON_LRU, REASON_TTL, REASON_EXPLICIT)


@dataclass(frozen=True)
class CacheStats:
    """A consistent snapshot of the cache counters.

    ``hits + misses`` is the number of ``get`` calls; ``loads`` counts successful loader calls
    (``warm`` included), ``load_errors`` failed ones; ``evictions`` maps each reason in
    ``EVICTION_REASONS`` to a count; ``oversize`` counts loaded values too large to cache.
    """

    hits: int
    misses: int
    loads: int
    load_errors: int
    evictions: dict[str, int]
    oversize: int
    entries: int
    bytes: int
    max_bytes: int

    @property
    def hit_rate(self) -> float:
        """Hits over ``get`` calls, 0.0 before the first call."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    @property
    def evictions_total(self) -> int:
        return sum(self.evictions.values())


@dataclass
class _Entry(Generic[T]):
    value: T
    size: int
    loaded_at: float
    last_access: float
    hits: int = 0


@dataclass
class _Load(Generic[T]):
    """One in-flight loader call; callers that miss on the same key wait on ``done``."""

    done: threading.Event = field(default_factory=threading.Event)
    value: T | None = None
    error: BaseException | None = None
    # Set by evict()/clear() while the load runs: the result is returned but not cached, so a
    # deleted avatar cannot come back from a load that started before its deletion.
    invalidated: bool = False

    def result(self) -> T:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


_Evicted = list[tuple[str, Any, str]]


class AvatarCache(Generic[T]):
    """A thread-safe LRU + TTL cache whose capacity is counted in bytes.

    Args:
        max_bytes: capacity; the sum of ``sizeof(value)`` over cached entries never exceeds it.
        ttl_seconds: an entry expires this long after its last access (``clock`` units).
        loader: builds the value for a key on a miss; called outside the lock.
        sizeof: the size of a value in bytes (e.g. the sum of its tensors' ``nbytes``).
        clock: monotonic time source in seconds; tests pass a fake one.
        cleanup_interval: seconds between background TTL sweeps after ``start()``; ``None``
            disables the thread (entries then expire only when touched or in ``purge_expired``).
        on_evict: called as ``on_evict(key, value, reason)`` after an entry leaves the cache.
    """

    def __init__(
        self,
        *,
        max_bytes: int,
        ttl_seconds: float,
        loader: Callable[[str], T],
        sizeof: Callable[[T], int],
        clock: Callable[[], float] = time.monotonic,
        cleanup_interval: float | None = 60.0,
        on_evict: Callable[[str, T, str], None] | None = None,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be > 0, got {ttl_seconds}")
        if cleanup_interval is not None and cleanup_interval <= 0:
            raise ValueError(f"cleanup_interval must be > 0 or None, got {cleanup_interval}")
        self.max_bytes = max_bytes
        self.ttl_seconds = ttl_seconds
        self._loader = loader
        self._sizeof = sizeof
        self._clock = clock
        self._cleanup_interval = cleanup_interval
        self._on_evict = on_evict
        # One lock guards every field below; it is never held while calling loader, sizeof
        # or on_evict, so those may be slow or re-enter the cache.
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry[T]] = OrderedDict()  # oldest access first
        self._inflight: dict[str, _Load[T]] = {}
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._loads = 0
        self._load_errors = 0
        self._oversize = 0
        self._evictions = dict.fromkeys(EVICTION_REASONS, 0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lookups -------------------------------------------------------------------------------

    def get(self, key: str) -> T:
        """Return the value for ``key``, loading it on a miss (once, however many callers miss)."""
        evicted: _Evicted = []
        load: _Load[T] | None = None
        owner = False
        with self._lock:
            entry = self._live_entry_locked(key, evicted)
            if entry is None:
                self._misses += 1
                load, owner = self._join_load_locked(key)
            else:
                self._touch_locked(key, entry)
                self._hits += 1
        self._notify(evicted)
        if entry is not None:
            return entry.value
        assert load is not None
        return self._run_load(key, load) if owner else load.result()

    def warm(self, key: str) -> bool:
        """Load ``key`` if it is not cached, without counting a hit or miss.

        Returns True if this call ran the loader, False if the value was already cached or
        another caller's load was awaited. Loader errors propagate.
        """
        evicted: _Evicted = []
        load: _Load[T] | None = None
        owner = False
        with self._lock:
            if self._live_entry_locked(key, evicted) is None:
                load, owner = self._join_load_locked(key)
        self._notify(evicted)
        if load is None:
            return False
        if owner:
            self._run_load(key, load)
        else:
            load.result()
        return owner

    def contains(self, key: str) -> bool:
        """Whether ``key`` is cached and unexpired; does not count as an access."""
        return self.entry_info(key) is not None

    def entry_info(self, key: str) -> dict[str, float | int] | None:
        """``{"size", "loaded_at", "last_access", "hits"}`` for a cached key, else None."""
        evicted: _Evicted = []
        with self._lock:
            entry = self._live_entry_locked(key, evicted)
            info = None
            if entry is not None:
                info = {
                    "size": entry.size,
                    "loaded_at": entry.loaded_at,
                    "last_access": entry.last_access,
                    "hits": entry.hits,
                }
        self._notify(evicted)
        return info

    def keys(self) -> list[str]:
        """Cached keys, least recently used first (expired entries not yet swept included)."""
        with self._lock:
            return list(self._entries)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                loads=self._loads,
                load_errors=self._load_errors,
                evictions=dict(self._evictions),
                oversize=self._oversize,
                entries=len(self._entries),
                bytes=self._bytes,
                max_bytes=self.max_bytes,
            )

    # -- removal -------------------------------------------------------------------------------

    def evict(self, key: str) -> bool:
        """Drop ``key``; True if it was cached. A load of ``key`` in flight will not be cached."""
        evicted: _Evicted = []
        with self._lock:
            load = self._inflight.get(key)
            if load is not None:
                load.invalidated = True
            found = key in self._entries
            if found:
                self._remove_locked(key, REASON_EXPLICIT, evicted)
        self._notify(evicted)
        return found

    def clear(self) -> None:
        """Drop every entry (counted as explicit evictions) and invalidate loads in flight."""
        evicted: _Evicted = []
        with self._lock:
            for load in self._inflight.values():
                load.invalidated = True
            for key in list(self._entries):
                self._remove_locked(key, REASON_EXPLICIT, evicted)
        self._notify(evicted)

    def purge_expired(self) -> int:
        """Drop every entry idle for ``ttl_seconds`` or more; returns how many were dropped."""
        evicted: _Evicted = []
        with self._lock:
            self._expire_locked(evicted)
        self._notify(evicted)
        return len(evicted)

    # -- background cleanup --------------------------------------------------------------------

    def start(self) -> None:
        """Start the daemon thread that purges expired entries every ``cleanup_interval``."""
        if self._cleanup_interval is None or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._cleanup_loop, name="avatar-cache-cleanup", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop the cleanup thread (returns promptly); cached entries are kept, see ``clear``."""
        thread = self._thread
        self._stop.set()
        # An on_evict callback on the cleanup thread may call close(): it cannot join itself.
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self._thread = None

    def __enter__(self) -> AvatarCache[T]:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _cleanup_loop(self) -> None:
        assert self._cleanup_interval is not None
        # Event.wait instead of sleep: close() wakes the thread at once.
        while not self._stop.wait(self._cleanup_interval):
            try:
                count = self.purge_expired()
            except Exception:  # keep sweeping: one bad on_evict must not end cleanup
                logger.exception("avatar cache cleanup failed")
                continue
            if count:
                logger.debug("avatar cache expired %d entries", count)

    # -- internals (the *_locked ones require self._lock) ---------------------------------------

    def _join_load_locked(self, key: str) -> tuple[_Load[T], bool]:
        """The in-flight load for ``key`` and whether this caller owns (must run) it."""
        load = self._inflight.get(key)
        if load is not None:
            return load, False
        load = _Load()
        self._inflight[key] = load
        return load, True

    def _run_load(self, key: str, load: _Load[T]) -> T:
        """Call the loader outside the lock, publish the result to waiters, cache it."""
        try:
            value = self._loader(key)
            size = int(self._sizeof(value))
        except BaseException as exc:
            with self._lock:
                del self._inflight[key]
                self._load_errors += 1
            load.error = exc
            load.done.set()
            raise
        evicted: _Evicted = []
        with self._lock:
            del self._inflight[key]
            self._loads += 1
            if not load.invalidated:
                self._store_locked(key, value, size, evicted)
        load.value = value
        load.done.set()
        self._notify(evicted)
        return value

    def _store_locked(self, key: str, value: T, size: int, evicted: _Evicted) -> None:
        if size > self.max_bytes:
            self._oversize += 1
            logger.warning(
                "avatar %s (%d bytes) exceeds the cache budget of %d bytes; not cached",
                key,
                size,
                self.max_bytes,
            )
            return
        if key in self._entries:  # defensive: a load only starts on a miss
            self._remove_locked(key, REASON_EXPLICIT, evicted)
        self._expire_locked(evicted)
        while self._bytes + size > self.max_bytes:
            oldest = next(iter(self._entries))
            self._remove_locked(oldest, REASON_LRU, evicted)
        now = self._clock()
        self._entries[key] = _Entry(value=value, size=size, loaded_at=now, last_access=now)
        self._bytes += size

    def _live_entry_locked(self, key: str, evicted: _Evicted) -> _Entry[T] | None:
        entry = self._entries.get(key)
        if entry is not None and self._is_expired(entry, self._clock()):
            self._remove_locked(key, REASON_TTL, evicted)
            return None
        return entry

    def _touch_locked(self, key: str, entry: _Entry[T]) -> None:
        entry.last_access = self._clock()
        entry.hits += 1
        self._entries.move_to_end(key)

    def _expire_locked(self, evicted: _Evicted) -> None:
        now = self._clock()
        expired = [key for key, e in self._entries.items() if self._is_expired(e, now)]
        for key in expired:
            self._remove_locked(key, REASON_TTL, evicted)

    def _is_expired(self, entry: _Entry[T], now: float) -> bool:
        return now - entry.last_access >= self.ttl_seconds

    def _remove_locked(self, key: str, reason: str, evicted: _Evicted) -> None:
        entry = self._entries.pop(key)
        self._bytes -= entry.size
        self._evictions[reason] += 1
        evicted.append((key, entry.value, reason))

    def _notify(self, evicted: _Evicted) -> None:
        """Run ``on_evict`` outside the lock; a failing callback is logged, not raised."""
        if self._on_evict is None:
            return
        for key, value, reason in evicted:
            try:
                self._on_evict(key, value, reason)
            except Exception:
                logger.exception("on_evict failed for avatar %s (%s)", key, reason)
