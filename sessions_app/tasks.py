"""Streaming actors: the "stream" queue is consumed by the generation worker process."""

from __future__ import annotations

import dramatiq

from sessions_app import services

STREAM_QUEUE = "stream"


@dramatiq.actor(queue_name=STREAM_QUEUE, max_retries=0, time_limit=2 * 60 * 60 * 1000)
def session_stream(request_pk: int) -> None:
    """Generate one utterance of a session chunk by chunk, announcing each chunk."""
    services.stream_request_run(request_pk=request_pk)
