"""The seed API's JSON for HLS sessions (keys and meanings as its clients read them)."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User

from sessions_app import selectors
from sessions_app.models import StreamRequest, StreamSession
from sessions_app.seed_hls import Utterance, idle_clips_or_none, token_query, utterance_at
from sessions_app.tokens import player_token_make

# Our sessions have one frame rate, and no separate playback rate or server timing offsets.
TIMING = {"offset_seconds": 0.0, "offset_frames": 0, "timing_source": "default"}


def hls_urls(session: StreamSession) -> dict[str, str]:
    """The seed's URLs of a session, each with a player token (players send no headers)."""
    sid = session.session_id
    query = token_query(player_token_make(session_id=sid))
    return {
        "player_url": f"/hls/player/{sid}{query}",
        "manifest_url": f"/hls/sessions/{sid}/index.m3u8{query}",
        "live_manifest_url": f"/hls/sessions/{sid}/live.m3u8{query}",
        "status_url": f"/hls/sessions/{sid}/status{query}",
    }


def hls_config(session: StreamSession) -> dict[str, Any]:
    """The seed's HLS config keys, from what the session really uses."""
    return {
        "batch_size": session.batch_size,
        "playback_fps": session.fps,
        "musetalk_fps": session.fps,
        "segment_duration": session.chunk_duration,
        "part_duration": None,
        "hls_server_timing": False,
    }


def hls_created_payload(session: StreamSession) -> dict[str, Any]:
    """The seed's answer to ``POST /hls/sessions/create``. Its config says what the session
    uses (as ``status`` does later), which is not always what was asked: one frame rate for
    playback and speech, no partial segments, no server timing."""
    config = {**hls_config(session), "fps": session.fps, "chunk_duration": session.chunk_duration}
    return {
        "session_id": session.session_id,
        **hls_urls(session),
        "avatar_id": session.avatar.avatar_id,
        "user_id": session.user_id or None,
        "expires_in_seconds": settings.SESSION_TTL_SECONDS,
        "config": config,
        "avatar_cache_warm": None,
    }


def hls_stream_payload(session: StreamSession, request: StreamRequest) -> dict[str, Any]:
    """The seed's answer to ``POST /hls/sessions/{id}/stream``."""
    return {
        "request_id": request.request_id,
        "session_id": session.session_id,
        "status": "queued",
        "manifest_url": hls_urls(session)["live_manifest_url"],
        "message": "HLS stream queued.",
        "timing": TIMING,
    }


def _live_state(session: StreamSession, now: float) -> dict[str, Any]:
    """status, live_ready, active_stream and the last_completed_* keys (see seed_hls)."""
    latest = selectors.request_latest(session=session)
    utterance = utterance_at(request=latest, now=now) if latest is not None else None
    on_air = utterance is not None and utterance.off_air is None
    count = len(utterance.segments) if utterance is not None else 0
    done = utterance if utterance is not None and not on_air else None
    return {
        "status": _status(utterance, on_air),
        "live_ready": on_air and utterance is not None and utterance.ready,
        "active_stream": latest.request_id if on_air and latest is not None else None,
        "live_segment_count": count,
        "last_completed_stream": done.request.request_id if done else None,
        "last_completed_at": done.off_air if done else None,
        "last_completed_had_segments": bool(done and done.segments),
        "error": latest.error if latest is not None else "",
    }


def _status(utterance: Utterance | None, on_air: bool) -> str:
    if utterance is None:
        return "idle"
    if on_air:
        return "streaming" if utterance.segments else "queued"
    return "failed" if utterance.request.status == StreamRequest.Status.FAILED else "idle"


def _ages(session: StreamSession, now: float) -> dict[str, float]:
    return {
        "age_seconds": now - session.created_at.timestamp(),
        "idle_seconds": now - session.last_activity_at.timestamp(),
    }


def hls_status_payload(session: StreamSession) -> dict[str, Any]:
    """The seed's ``GET /hls/sessions/{id}/status``."""
    now = time.time()
    created = session.created_at.timestamp()
    clips = idle_clips_or_none(session)
    idle = round(sum(clip.duration for clip in clips), 6) if clips else None
    return {
        "session_id": session.session_id,
        "avatar_id": session.avatar.avatar_id,
        "user_id": session.user_id or None,
        "created_at": created,
        "last_activity": session.last_activity_at.timestamp(),
        **_ages(session, now),
        "idle_start_wall_time": created,
        "idle_duration_seconds": idle,
        "idle_elapsed_seconds": (now - created) % idle if idle else None,
        "idle_cycle_frames": round(idle * (session.avatar.fps or 25)) if idle else None,
        "timing_source": "default",
        **hls_config(session),
        **_live_state(session, now),
        "live_timing": None,
        "expires_at": session.expires_at.timestamp(),
    }


def hls_brief(session: StreamSession, now: float) -> dict[str, Any]:
    """One session in ``/hls/sessions/stats`` and ``/sessions/live``."""
    state = _live_state(session, now)
    return {
        "session_id": session.session_id,
        "user_id": session.user_id or None,
        "avatar_id": session.avatar.avatar_id,
        **_ages(session, now),
        **hls_config(session),
        "status": state["status"],
        "active_stream": state["active_stream"],
        "live_manifest": f"/hls/sessions/{session.session_id}/live.m3u8",
        "player_url": f"/hls/player/{session.session_id}",
    }


def hls_stats_payload(user: User) -> dict[str, Any]:
    """The seed's ``GET /hls/sessions/stats``: the caller's open HLS sessions (staff: all)."""
    now = time.time()
    sessions = [
        hls_brief(session, now)
        for session in selectors.session_open_list(user=user, kind=StreamSession.Kind.HLS)
    ]
    return {
        "scope": "all" if user.is_staff else "user",
        "total_sessions": len(sessions),
        "active_streams": sum(1 for s in sessions if s["active_stream"] is not None),
        "sessions": sessions,
    }


def hls_group_payload(
    group: dict[str, Any], sessions: list[StreamSession | None]
) -> dict[str, Any]:
    """The seed's answer about an HLS group; a session that ended reads ``missing``."""
    now = time.time()
    gid = group["group_id"]
    listed = []
    for sid, session in zip(group["session_ids"], sessions):
        urls = hls_urls(session) if session is not None else {}
        listed.append(
            {
                "session_id": sid,
                "player_url": urls.get("player_url", f"/hls/player/{sid}"),
                "status_url": urls.get("status_url", f"/hls/sessions/{sid}/status"),
                "manifest_url": urls.get("manifest_url", f"/hls/sessions/{sid}/index.m3u8"),
                "status": _live_state(session, now)["status"] if session else "missing",
            }
        )
    return {
        "group_id": gid,
        "avatar_id": group["avatar_id"],
        "created_at": group["created_at"],
        "count": len(group["session_ids"]),
        "config": group["config"],
        "sessions": listed,
        "stream_all_url": f"/hls/groups/{gid}/stream",
    }


def _group_stream_answer(session_id: str, outcome: Any) -> dict[str, Any]:
    if isinstance(outcome, tuple):
        return hls_stream_payload(*outcome)
    if outcome == "missing":
        return {"session_id": session_id, "status": "missing"}
    return {"session_id": session_id, "status": "error", "detail": outcome}


def hls_group_stream_payload(group_id: str, results: list[tuple[str, Any]]) -> dict[str, Any]:
    """The seed's answer to ``POST /hls/groups/{id}/stream``."""
    answers = [_group_stream_answer(sid, outcome) for sid, outcome in results]
    started = sum(1 for answer in answers if answer["status"] == "queued")
    return {
        "group_id": group_id,
        "started": started,
        "failed": len(answers) - started,
        "results": answers,
    }
