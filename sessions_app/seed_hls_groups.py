"""The seed API's HLS groups: several HLS sessions on one avatar, created, streamed to and
deleted together.

A group is a list of sessions, kept as ``group.json`` in the HLS folder of its first session
(its id is that session's id): it needs no table, and it goes when that session ends, with
the rest of the folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from typing import Any

from django.contrib.auth.models import User
from django.core.files.uploadedfile import TemporaryUploadedFile, UploadedFile
from django.http import Http404

from musetalk_site.errors import error_payload
from sessions_app import selectors, services
from sessions_app.hls import hls_session_dir
from sessions_app.models import StreamSession

GROUP_FILE = "group.json"
GROUP_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")  # a session id
MAX_GROUP_SESSIONS = 12


def hls_group_create(
    *, owner: User, count: int, config: dict[str, Any], **session: Any
) -> dict[str, Any]:
    """Open ``count`` HLS sessions with the same settings; all or none. ``config`` is kept
    to be shown with the group."""
    created: list[StreamSession] = []
    try:
        for _ in range(count):
            created.append(
                services.session_create(owner=owner, kind=StreamSession.Kind.HLS, **session)
            )
    except BaseException:
        for opened in created:
            services.session_delete(session=opened)
        raise
    group = {
        "group_id": created[0].session_id,
        "owner_id": owner.pk,
        "avatar_id": session["avatar_id"],
        "created_at": time.time(),
        "session_ids": [opened.session_id for opened in created],
        "config": config,
    }
    _save(group)
    return group


def _path(group_id: str) -> Any:
    return hls_session_dir(group_id) / GROUP_FILE


def _save(group: dict[str, Any]) -> None:
    path = _path(group["group_id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".group.{uuid.uuid4().hex[:8]}.json")
    partial.write_text(json.dumps(group))
    os.replace(partial, path)


def hls_group_get(*, owner: User, group_id: str) -> dict[str, Any]:
    """The owner's group; anyone else's, or one whose first session ended, is not found."""
    try:
        group = json.loads(_path(group_id).read_text()) if GROUP_ID.fullmatch(group_id) else None
    except (OSError, ValueError):
        group = None
    if not isinstance(group, dict) or group.get("owner_id") != owner.pk:
        raise Http404(f"Group {group_id!r} not found.")
    return group


def hls_group_sessions(*, owner: User, group: dict[str, Any]) -> list[StreamSession | None]:
    """The group's sessions in order; None for one that ended or expired."""
    found = {
        session.session_id: session
        for session in selectors.session_list_for_user(user=owner).filter(
            session_id__in=group["session_ids"]
        )
    }
    return [
        session if session is not None and selectors.session_is_open(session=session) else None
        for session in (found.get(sid) for sid in group["session_ids"])
    ]


def hls_group_stream(
    *, owner: User, group: dict[str, Any], audio: UploadedFile, interrupt: bool = False
) -> list[tuple[str, Any]]:
    """Start the same utterance in every open session of the group: for each session id,
    its new request, or the message of why it did not start."""
    results: list[tuple[str, Any]] = []
    for sid, session in zip(group["session_ids"], hls_group_sessions(owner=owner, group=group)):
        if session is None:
            results.append((sid, "missing"))
            continue
        try:
            with _copy_of(audio) as copy:  # storing an upload moves its file away
                request = services.session_stream_start(
                    session=session, audio=copy, interrupt=interrupt
                )
        except Exception as exc:
            payload = error_payload(exc)
            if payload is None:
                raise
            results.append((sid, payload.message))
            continue
        results.append((sid, (session, request)))
    return results


def _copy_of(upload: UploadedFile) -> TemporaryUploadedFile:
    name = upload.name or "audio"
    copy = TemporaryUploadedFile(name, upload.content_type, upload.size, upload.charset)
    upload.seek(0)
    shutil.copyfileobj(upload, copy)
    copy.flush()
    copy.seek(0)
    return copy


def hls_group_delete(*, owner: User, group: dict[str, Any]) -> list[str]:
    """End every open session of the group (the first one last: it holds the group)."""
    sessions = hls_group_sessions(owner=owner, group=group)
    deleted = []
    for session in reversed(sessions):
        if session is not None:
            services.session_delete(session=session)
            deleted.append(session.session_id)
    _path(group["group_id"]).unlink(missing_ok=True)
    return list(reversed(deleted))
