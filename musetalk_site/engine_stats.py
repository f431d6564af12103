"""The engines' work as the workers' heartbeats publish it, in the seed API's shapes.

``/health`` reads the counts (``cached_avatars``, ``active_requests``, ``gpu_available``);
``/stats`` and ``/stats/cache`` read the rest. Each function takes the live workers' details
from :func:`musetalk_site.health.live_workers` (freshest first), so the web process needs no
engine of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

GIB = 1024**3
MIB = 1024**2
# Queues whose messages are requests in the seed's sense: videos, utterances (and the short
# cache loads that run beside them). Avatar preparation is not one.
REQUEST_QUEUES = ("generate", "stream")


def workload(workers: list[dict[str, Any]], engine: Mapping[str, Any]) -> dict[str, Any]:
    """``/health``'s seed keys: avatars cached by any worker, requests running on any worker,
    and whether the generating engine has a GPU with more than 1 GiB free."""
    cached: set[str] = set()
    for worker in workers:
        cached.update(worker["engine"].get("cache", {}).get("entries", {}))
    gpu = gpu_stats(engine)
    return {
        "gpu_available": gpu["device"].startswith("cuda") and gpu["free_gb"] > 1,
        "cached_avatars": len(cached),
        "active_requests": active_requests(workers),
    }


def active_requests(workers: list[dict[str, Any]]) -> int:
    """Videos and utterances being made now, on all the workers: the messages running on
    their request queues, plus the live streams in their engines' schedulers (a stream
    message only starts its stream)."""
    running = [worker.get("running", {}) for worker in workers]
    messages = sum(counts.get(queue, 0) for counts in running for queue in REQUEST_QUEUES)
    streams = sum(
        int(worker.get("engine", {}).get("capacity", {}).get("active_streams", 0))
        for worker in workers
    )
    return messages + streams


def gpu_stats(engine: Mapping[str, Any]) -> dict[str, Any]:
    """The generating engine's memory budget (bytes) as the seed's ``gpu`` stats (GiB)."""
    budget = engine.get("budget", {})
    total = budget.get("total", 0)
    reserved = budget.get("reserved", 0)
    return {
        "device": str(engine.get("device") or "none"),
        "total_gb": round(total / GIB, 3),
        "reserved_gb": round(reserved / GIB, 3),
        "available_gb": round(total / GIB, 3),
        "current_usage_gb": round(reserved / GIB, 3),
        "free_gb": round(max(0, total - reserved) / GIB, 3),
        "peak_gb": round(budget.get("peak", 0) / GIB, 3),
    }


def cache_stats(workers: list[dict[str, Any]], *, names: Mapping[str, str]) -> dict[str, Any]:
    """The seed's ``/stats/cache``, summed over the workers' avatar caches.

    ``names`` maps the avatar folders the caller may see to their avatar ids: the counts
    cover every avatar, the ``avatars`` list only those.
    """
    totals = {"hits": 0, "misses": 0, "evictions": 0, "bytes": 0, "max_bytes": 0}
    entries: dict[str, list[dict[str, Any]]] = {}
    for worker in workers:
        cache = worker["engine"].get("cache", {})
        for key in totals:
            totals[key] += int(cache.get(key, 0))
        for folder, info in cache.get("entries", {}).items():
            entries.setdefault(folder, []).append(info)
    lookups = totals["hits"] + totals["misses"]
    return {
        "cached_avatars": len(entries),
        "max_cached_avatars": None,  # the cache is bounded by memory, not by a count
        "total_memory_mb": round(totals["bytes"] / MIB, 2),
        "max_memory_mb": round(totals["max_bytes"] / MIB, 2) or None,
        "hit_rate": f"{(totals['hits'] / lookups if lookups else 0):.2%}",
        "hits": totals["hits"],
        "misses": totals["misses"],
        "evictions": totals["evictions"],
        "loads": totals["misses"],  # every miss loads the avatar
        "avatars": [
            _avatar_entry(names[folder], infos)
            for folder, infos in sorted(entries.items())
            if folder in names
        ],
    }


def _avatar_entry(avatar_id: str, infos: list[dict[str, Any]]) -> dict[str, Any]:
    """One avatar as the seed lists it, over the workers that hold it."""
    return {
        "id": avatar_id,
        "memory_mb": round(sum(info.get("size", 0) for info in infos) / MIB, 2),
        "load_count": len(infos),
        "age_seconds": min(info.get("idle_seconds", 0.0) for info in infos),
        "hits": sum(info.get("hits", 0) for info in infos),
        "workers": len(infos),
    }
