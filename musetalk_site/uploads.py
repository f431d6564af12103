"""Upload checks shared by every endpoint that takes a media file.

Size is enforced while the body streams in (``LimitedUploadHandler``), so a huge upload
never lands on disk; type and content are then checked cheaply with a PyAV probe of the
temporary file before anything is queued.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from django.conf import settings
from django.core.files import File
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import SkipFile, TemporaryFileUploadHandler

from inference.errors import MediaError
from inference.media import AudioInfo, VideoInfo, probe_audio, probe_video
from musetalk_site.errors import ApplicationError

VIDEO_EXTENSIONS = {".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi"}
AUDIO_EXTENSIONS = {".wav", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".flac", ".webm"}
_TOO_LARGE_ATTR = "_musetalk_too_large"
T = TypeVar("T")
VIDEO_KIND = ("a video", "a readable video")
AUDIO_KIND = ("audio", "readable audio")


def field_limit(field_name: str) -> int:
    if field_name == "video_file":
        return settings.MAX_VIDEO_UPLOAD_BYTES
    return settings.MAX_AUDIO_UPLOAD_BYTES


class LimitedUploadHandler(TemporaryFileUploadHandler):
    """Streams files to disk and drops any file over its field's size limit."""

    def new_file(
        self,
        field_name: str,
        file_name: str,
        content_type: str,
        content_length: int | None,
        charset: str | None = None,
        content_type_extra: dict[str, bytes] | None = None,
    ) -> None:
        super().new_file(
            field_name, file_name, content_type, content_length, charset, content_type_extra
        )
        self._received = 0
        self._limit = field_limit(field_name)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self._received += len(raw_data)
        if self._received > self._limit:
            too_large = getattr(self.request, _TOO_LARGE_ATTR, {})
            too_large[self.field_name] = self._limit
            setattr(self.request, _TOO_LARGE_ATTR, too_large)
            self.file.close()
            raise SkipFile()
        return super().receive_data_chunk(raw_data, start)


def require_upload(request: object, files: dict, field: str) -> UploadedFile:
    """The uploaded file ``field``, or a 413/400 that says what is wrong."""
    too_large = getattr(request, _TOO_LARGE_ATTR, {})
    if field in too_large:
        limit_mb = too_large[field] // (1024 * 1024)
        raise ApplicationError(
            f"{field} is larger than the {limit_mb} MB limit.",
            {"field": field, "limit_bytes": too_large[field]},
            status=413,
        )
    upload = files.get(field)
    if upload is None:
        raise ApplicationError(f"{field}: This field is required.", {"field": field})
    if upload.size == 0:
        raise ApplicationError(f"{field} is empty.", {"field": field})
    return upload


def _suffix(upload: File) -> str:
    return Path(upload.name or "").suffix.lower()


def _path(upload: File) -> str:
    """The file on disk: the spooled upload (LimitedUploadHandler) or a local file."""
    if hasattr(upload, "temporary_file_path"):
        return upload.temporary_file_path()
    if upload.file is None:
        raise ValueError(f"{upload!r} has no open file to probe.")
    return str(upload.file.name)


def _probe(
    upload: File,
    field: str,
    kind: tuple[str, str],
    extensions: set[str],
    probe: Callable[[str], T],
) -> T:
    """Extension check (415), then a header probe of the file (400 when unreadable)."""
    if _suffix(upload) not in extensions:
        raise ApplicationError(
            f"{field} must be {kind[0]} ({', '.join(sorted(extensions))}); got {upload.name!r}.",
            {"field": field},
            status=415,
        )
    try:
        return probe(_path(upload))
    except MediaError as exc:
        raise ApplicationError(
            f"{field} is not {kind[1]}: {exc.message}", {"field": field}
        ) from None


def _check_duration(field: str, seconds: float, limit: float) -> None:
    if seconds > limit:
        raise ApplicationError(
            f"{field} is {seconds:.1f} s long; the limit is {limit:g} s.",
            {"field": field, "duration_seconds": seconds},
        )


def video_upload_check(*, upload: File) -> VideoInfo:
    """Refuse what is not a short, readable video; return its header facts."""
    info = _probe(upload, "video_file", VIDEO_KIND, VIDEO_EXTENSIONS, probe_video)
    _check_duration("video_file", info.duration_s, settings.MAX_VIDEO_SECONDS)
    if info.frame_count and info.frame_count < 2:
        raise ApplicationError(
            "video_file has a single frame; an avatar needs a video of at least 2 frames.",
            {"field": "video_file"},
        )
    return info


def audio_upload_check(*, upload: File) -> AudioInfo:
    """Refuse what is not readable audio of a sane length; return its header facts."""
    info = _probe(upload, "audio_file", AUDIO_KIND, AUDIO_EXTENSIONS | {".mp4"}, probe_audio)
    _check_duration("audio_file", info.duration_s, settings.MAX_AUDIO_SECONDS)
    if info.duration_s < 0.1:
        raise ApplicationError("audio_file is shorter than 0.1 s.", {"field": "audio_file"})
    return info
