"""Writes for streaming sessions."""

from sessions_app.services.session import (
    chunk_dir,
    session_chunk_served,
    session_create,
    session_delete,
    session_end,
    session_interrupt,
    session_keepalive,
    session_stream_admit,
    session_stream_start,
    sessions_expire,
)
from sessions_app.services.stream import stream_orphans_reap, stream_request_run

__all__ = [
    "chunk_dir",
    "session_chunk_served",
    "session_create",
    "session_delete",
    "session_end",
    "session_interrupt",
    "session_keepalive",
    "session_stream_admit",
    "session_stream_start",
    "sessions_expire",
    "stream_orphans_reap",
    "stream_request_run",
]
