"""An avatar's idle loop as HLS parts: built in the worker, only read by the web process.

On disk, under MEDIA_ROOT/hls/avatars/<owner_id>/<avatar_id>/:

    <stamp>/idle_000.mp4 ...   the idle loop cut into ~1 s parts (H.264 opening on a key
                               frame + AAC silence)
    <stamp>/parts.json         those parts in order, with their durations
    <stamp>/variant.json       what the multivariant playlist says of the stream, measured
                               on those parts
    .lock                      held by the worker that builds

``<stamp>`` names the idle.mp4 the parts were cut from (its mtime and size), so an avatar
prepared again gets a new folder. A folder is built aside and renamed into place complete:
a reader finds all of it or nothing, and never waits, writes or deletes. The build removes
the folders of earlier idle.mp4s. It runs when a preparation succeeds (the avatar_prepared
receiver) and, for avatars prepared before the parts existed, when a session is first
created on one (the ``hls_idle_build`` actor).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from django.conf import settings
from django.http import Http404

from avatars.models import Avatar
from avatars.services.avatar import avatar_dir
from musetalk_site.errors import ApplicationError
from sessions_app.hls.media import idle_parts_encode, variant_measure
from sessions_app.hls.timeline import Clip, Variant

logger = logging.getLogger(__name__)

PARTS, VARIANT = "parts.json", "variant.json"
# Seconds a player should wait before asking again while the worker builds the parts (about
# a second per 100 frames of the idle loop).
IDLE_RETRY_AFTER_SECONDS = 2


def hls_idle_home(avatar: Avatar) -> Path:
    """The folder of ``avatar``'s idle parts, one subfolder per idle.mp4."""
    return Path(settings.MEDIA_ROOT) / "hls" / avatar.storage_key


def _idle_source(avatar: Avatar) -> Path | None:
    source = avatar_dir(avatar) / "idle.mp4"
    return source if source.is_file() else None


def _idle_folder(avatar: Avatar, source: Path) -> Path:
    stat = source.stat()
    return hls_idle_home(avatar) / f"{stat.st_mtime_ns:x}-{stat.st_size:x}"


def _complete(folder: Path) -> bool:
    return (folder / PARTS).is_file() and (folder / VARIANT).is_file()


def hls_idle_missing(*, avatar: Avatar) -> bool:
    """Whether ``avatar`` has an idle loop whose parts are not built yet (a read)."""
    source = _idle_source(avatar)
    return source is not None and not _complete(_idle_folder(avatar, source))


def _ready_folder(avatar: Avatar) -> Path:
    """The built parts of ``avatar``: 404 without an idle loop, 503 while not built yet."""
    source = _idle_source(avatar)
    if source is None:
        raise Http404("This avatar has no idle video.")
    folder = _idle_folder(avatar, source)
    if not _complete(folder):
        raise ApplicationError(
            f"The idle loop of avatar {avatar.avatar_id!r} is still being prepared for HLS; "
            "retry shortly.",
            {"avatar_id": avatar.avatar_id, "retry_after": IDLE_RETRY_AFTER_SECONDS},
            status=503,
        )
    return folder


def hls_idle_clips(*, avatar: Avatar) -> list[Clip]:
    """The idle parts of ``avatar`` as the timeline plays them (a read; see _ready_folder)."""
    parts = json.loads((_ready_folder(avatar) / PARTS).read_text())
    return [Clip(**clip) for clip in parts]


def hls_idle_variant(*, avatar: Avatar) -> Variant:
    """The variant of ``avatar``'s stream, as measured on its idle parts (a read)."""
    return Variant(**json.loads((_ready_folder(avatar) / VARIANT).read_text()))


@contextmanager
def dir_locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` across threads and processes."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def hls_idle_build(*, avatar: Avatar) -> bool:
    """Cut ``avatar``'s idle loop into parts and measure their variant, unless that is
    done; remove the parts of earlier idle loops. Idempotent; runs in the worker.
    Returns whether it built anything."""
    source = _idle_source(avatar)
    if source is None:
        logger.info("avatar %s has no idle video: no HLS parts to build", avatar.pk)
        return False
    home = hls_idle_home(avatar)
    with dir_locked(home):  # another worker may build the same parts now
        folder = _idle_folder(avatar, source)
        built = not _complete(folder)
        if built:
            _build(source, folder, home)
        _stale_remove(home, keep=folder)
    return built


def hls_idle_build_run(*, avatar_pk: int) -> bool:
    """:func:`hls_idle_build` for the avatar ``avatar_pk``, if it still exists (the actor)."""
    avatar = Avatar.objects.filter(pk=avatar_pk).first()
    if avatar is None:
        logger.info("avatar %s is gone: no HLS parts to build", avatar_pk)
        return False
    return hls_idle_build(avatar=avatar)


def _build(source: Path, folder: Path, home: Path) -> None:
    staging = home / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    clips = idle_parts_encode(source, staging, relative_to=staging)
    variant = variant_measure([(staging / clip.source, clip.duration) for clip in clips])
    media_root = Path(settings.MEDIA_ROOT)
    clips = [
        Clip(str((folder / clip.source).relative_to(media_root)), clip.duration) for clip in clips
    ]
    (staging / PARTS).write_text(json.dumps([asdict(clip) for clip in clips]))
    (staging / VARIANT).write_text(json.dumps(asdict(variant)))
    shutil.rmtree(folder, ignore_errors=True)  # an older build, without its variant.json
    os.rename(staging, folder)  # readers see the whole folder at once


def _stale_remove(home: Path, *, keep: Path) -> None:
    """Parts of an earlier idle.mp4 (the avatar was prepared again) and what a killed build
    left. Sessions still playing them get 404 for those segments and move on."""
    for stale in home.iterdir():
        if stale.is_dir() and stale != keep:
            shutil.rmtree(stale, ignore_errors=True)
