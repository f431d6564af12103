"""Streaming actors: the "stream" queue is consumed by the generation worker process."""

from __future__ import annotations

import dramatiq

from sessions_app import hls, services

STREAM_QUEUE = "stream"
IDLE_QUEUE = "default"  # also served by the generation worker process


@dramatiq.actor(queue_name=STREAM_QUEUE, max_retries=0, time_limit=2 * 60 * 60 * 1000)
def session_stream(request_pk: int, wait_for_room: bool = False) -> None:
    """Start one utterance of a session in this worker's engine (its chunks are announced
    as they are made); ``wait_for_room``: it was queued beyond capacity and waits in the
    engine until its fps fits beside the running streams."""
    services.stream_request_run(request_pk=request_pk, wait_for_room=wait_for_room)


@dramatiq.actor(queue_name=IDLE_QUEUE, max_retries=0, time_limit=15 * 60 * 1000)
def hls_idle_build(avatar_pk: int) -> None:
    """Cut an avatar's idle loop into its HLS parts, unless they exist (idempotent)."""
    hls.hls_idle_build_run(avatar_pk=avatar_pk)
