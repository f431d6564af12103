"""HLS for iOS: an always-valid live playlist per session, built lazily from what exists.

The worker cuts each avatar's idle loop into parts once, when the avatar is prepared (or
when a session first uses an avatar prepared earlier); nothing else in the worker knows
about HLS. A playlist request encodes nothing and never touches the idle parts: it extends
the session's timeline (a short JSON file) with what has appeared since the last request:
the next chunk MP4s of an utterance, or else parts of the avatar's idle loop, paced by the
wall clock. Until the idle parts exist it answers 503 with Retry-After. A segment request
remuxes (never re-encodes) the one clip behind that segment into MPEG-TS, shifted to the
segment's place on the media timeline, so the timestamps run on across segments and across
each wrap of the idle loop. Only a switch idle <-> live is a discontinuity (a different
encoder). Players open a multivariant playlist of one variant, the live playlist, which
tells Apple devices the codecs, size and bit rate before the first segment.

    timeline.py   the timeline and the playlists' text (pure)
    media.py      PyAV: idle parts, MPEG-TS remux, the variant's codecs and bit rates
    idle.py       the idle parts on disk: built in the worker, read by the playlists
    mpegts.py     continuity counters that run on from segment to segment
    services.py   files, locks, the database: what the views and hooks call
"""

from __future__ import annotations

from sessions_app.hls.idle import (
    IDLE_RETRY_AFTER_SECONDS,
    hls_idle_build,
    hls_idle_build_run,
    hls_idle_missing,
)
from sessions_app.hls.services import (
    PLAYLIST_CONTENT_TYPE,
    SEGMENT_CONTENT_TYPE,
    hls_avatar_files_remove,
    hls_master_playlist,
    hls_player_config,
    hls_playlist,
    hls_segment,
    hls_session_dir,
    hls_session_files_remove,
)
from sessions_app.hls.timeline import IDLE, LIVE

__all__ = [
    "IDLE",
    "IDLE_RETRY_AFTER_SECONDS",
    "LIVE",
    "PLAYLIST_CONTENT_TYPE",
    "SEGMENT_CONTENT_TYPE",
    "hls_avatar_files_remove",
    "hls_idle_build",
    "hls_idle_build_run",
    "hls_idle_missing",
    "hls_master_playlist",
    "hls_player_config",
    "hls_playlist",
    "hls_segment",
    "hls_session_dir",
    "hls_session_files_remove",
]
