"""Plain dicts that the API serializers, SSE and WebSocket events share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings

from avatars.models import Avatar, GenerationJob
from avatars.services.avatar import avatar_dir
from musetalk_site.health import check_worker


def avatar_payload(avatar: Avatar) -> dict[str, Any]:
    return {
        "avatar_id": avatar.avatar_id,
        "status": avatar.status,
        "progress": avatar.progress,
        "stage": avatar.stage,
        "error": avatar.error,
        "frame_count": avatar.frame_count,
        "fps": avatar.fps,
        "width": avatar.width,
        "height": avatar.height,
        "size_bytes": avatar.size_bytes,
        "face_backend": avatar.face_backend,
        "model_profile": avatar.model_profile,
        "bbox_shift": avatar.bbox_shift,
        "batch_size": avatar.batch_size,
        "created_at": avatar.created_at,
        "updated_at": avatar.updated_at,
        "prepared_at": avatar.finished_at if avatar.status == Avatar.Status.READY else None,
        "status_url": f"/avatars/{avatar.avatar_id}",
        "events_url": f"/avatars/{avatar.avatar_id}/events",
    }


def _seconds(start: Any, end: Any) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def job_payload(job: GenerationJob) -> dict[str, Any]:
    succeeded = job.status == GenerationJob.Status.SUCCEEDED
    return {
        "request_id": job.request_id,
        "avatar_id": job.avatar.avatar_id,
        "status": job.status,
        "state": job.status,
        "output_name": job.output_name,
        "progress": job.progress,
        "error": job.error,
        "batch_size": job.batch_size,
        "fps": job.fps,
        "frame_count": job.frame_count,
        "duration_seconds": job.duration_seconds,
        "status_url": f"/generate/{job.request_id}/status",
        "events_url": f"/generate/{job.request_id}/events",
        "download_url": f"/generate/{job.request_id}/download" if succeeded else None,
        "queued_at": job.queued_at,
        "started_at": job.started_at,
        "first_frame_at": job.first_frame_at,
        "finished_at": job.finished_at,
        "timings": {
            "queue_seconds": _seconds(job.queued_at, job.started_at),
            "first_frame_seconds": _seconds(job.started_at, job.first_frame_at),
            "run_seconds": _seconds(job.started_at, job.finished_at),
            "total_seconds": _seconds(job.queued_at, job.finished_at),
        },
    }


# The seed's words for a generation's state, which its clients poll for.
SEED_JOB_STATUS = {
    GenerationJob.Status.QUEUED: "processing",
    GenerationJob.Status.RUNNING: "processing",
    GenerationJob.Status.SUCCEEDED: "completed",
    GenerationJob.Status.FAILED: "failed",
    GenerationJob.Status.CANCELLED: "failed",
}


def job_seed_status(job: GenerationJob) -> dict[str, Any]:
    """``GET /generate/{id}/status``: the seed's ``status`` word (and its ``result`` once
    completed, ``error`` once failed) beside our fields; our own word is in ``state``."""
    payload = job_payload(job)
    status = SEED_JOB_STATUS[GenerationJob.Status(job.status)]
    payload["status"] = status
    if status == "completed":
        payload["result"] = {"success": True, "output_path": payload["download_url"]}
    elif status == "failed":
        payload["error"] = job.error or "cancelled"
    return payload


def result_path(job: GenerationJob) -> Path | None:
    name = job.result.name  # a FieldFile is false exactly when its name is empty
    if not name:
        return None
    path = Path(settings.MEDIA_ROOT) / name
    return path if path.is_file() else None


def avatar_seed_entry(avatar: Avatar) -> dict[str, Any]:
    """One avatar of ``GET /avatars/list`` in the seed's shape, beside our fields."""
    idle = avatar.idle_video.name
    return {
        **avatar_payload(avatar),
        "version": "v15",
        "video_layout": "separate_idle_talking" if idle else "single_video",
        "has_idle_video": (avatar_dir(avatar) / "idle.mp4").is_file(),
        "idle_poses": avatar_idle_poses(avatar),
        "video_url": f"/avatars/{avatar.avatar_id}/video",
    }


def avatar_idle_poses(avatar: Avatar) -> list[dict[str, Any]]:
    """The seed's idle pose entries: the one idle loop each avatar has, as its default pose."""
    return [
        {
            "pose_id": "default",
            "video_path": f"/avatars/{avatar.avatar_id}/video",
            "exists": (avatar_dir(avatar) / "idle.mp4").is_file(),
            "is_default": True,
        }
    ]


def cache_status(avatar: Avatar) -> dict[str, Any]:
    """Whether each live worker holds the avatar in its cache (from their heartbeats), with
    the seed's ``status``: ``ready`` (cached), ``not_cached`` (prepared) or ``missing``."""
    key = str(avatar_dir(avatar))
    workers = []
    for item in check_worker(True).detail.get("workers", []):
        cache = item.get("engine", {}).get("cache", {})
        entry = cache.get("entries", {}).get(key)
        workers.append(
            {"worker_id": item["worker_id"], "cached": entry is not None, **(entry or {})}
        )
    cached = any(w["cached"] for w in workers)
    prepared = (avatar_dir(avatar) / "manifest.json").is_file()
    return {
        "avatar_id": avatar.avatar_id,
        "status": "ready" if cached else ("not_cached" if prepared else "missing"),
        "cached": cached,
        "disk_prepared": prepared,
        "workers": workers,
    }
