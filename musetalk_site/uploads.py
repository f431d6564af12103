"""Upload checks shared by every endpoint that takes a media file.

Size is enforced twice while the body streams in: a body longer than its file's limit is
refused before it is read (``musetalk_site/body_limit.py``), and ``LimitedUploadHandler``
drops a file part over its field's limit. The file is written once, as it arrives, into
``MEDIA_ROOT/incoming``: on MEDIA_ROOT's file system, so storing it is a rename, not a copy.
Type and content are then checked cheaply with a PyAV probe of that file before anything is
queued: a file is judged by what it holds, not by its name (the seed's sample audio is an MP3
named ``.mpga``), so any name, or none, is accepted when the probe finds the stream wanted.
Content that is not media of that kind is refused with 415; a file named as a type we read that
turns out damaged is a 400. The messages name the file as the client named it, never the
temporary file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from django.conf import settings
from django.core.files import File
from django.core.files.uploadedfile import TemporaryUploadedFile, UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, SkipFile, TemporaryFileUploadHandler
from django.http.multipartparser import MultiPartParserError

from inference.errors import MediaError
from inference.media import AudioInfo, VideoInfo, probe_audio, probe_video
from musetalk_site.errors import ApplicationError

VIDEO_EXTENSIONS = {".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi"}
AUDIO_EXTENSIONS = {".wav", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".flac", ".webm"}
_TOO_LARGE_ATTR = "_musetalk_too_large"
T = TypeVar("T")
VIDEO_KIND = ("a video", "a readable video")
AUDIO_KIND = ("audio", "readable audio")


VIDEO_FIELDS = {"video_file", "idle_video_file"}


def field_limit(field_name: str) -> int:
    if field_name in VIDEO_FIELDS:
        return settings.MAX_VIDEO_UPLOAD_BYTES
    return settings.MAX_AUDIO_UPLOAD_BYTES


def incoming_dir() -> Path:
    """Where uploads are spooled while they arrive."""
    return Path(settings.MEDIA_ROOT) / "incoming"


class IncomingUploadedFile(TemporaryUploadedFile):
    """An upload spooled into :func:`incoming_dir` (Django's would go to the temp folder,
    often another file system, from where storing it is a second copy)."""

    def __init__(
        self,
        name: str,
        content_type: str,
        size: int,
        charset: str | None,
        content_type_extra: dict[str, bytes] | None = None,
    ) -> None:
        folder = incoming_dir()
        folder.mkdir(parents=True, exist_ok=True)
        suffix = ".upload" + os.path.splitext(name)[1]
        file = tempfile.NamedTemporaryFile(suffix=suffix, dir=folder)
        # TemporaryUploadedFile.__init__ would open its file in FILE_UPLOAD_TEMP_DIR.
        UploadedFile.__init__(self, file, name, content_type, size, charset, content_type_extra)


class LimitedUploadHandler(TemporaryFileUploadHandler):
    """Streams files to :func:`incoming_dir` and drops any file over its field's limit."""

    def new_file(
        self,
        field_name: str,
        file_name: str,
        content_type: str,
        content_length: int | None,
        charset: str | None = None,
        content_type_extra: dict[str, bytes] | None = None,
    ) -> None:
        FileUploadHandler.new_file(
            self, field_name, file_name, content_type, content_length, charset, content_type_extra
        )
        self.file = IncomingUploadedFile(
            self.file_name or "", self.content_type or "", 0, self.charset, self.content_type_extra
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

    def upload_complete(self) -> None:
        """A body cut short fails the request instead of leaving the parts that had arrived
        (its partial file is closed, so deleted, already: see ``body_stream``)."""
        cut_short = getattr(getattr(self.request, "_stream", None), "cut_short", "")
        if cut_short:
            raise MultiPartParserError(cut_short)


def too_large_error(field: str, limit_bytes: int) -> ApplicationError:
    """The 413 of a file over its field's limit."""
    return ApplicationError(
        f"{field} is larger than the {limit_bytes // (1024 * 1024)} MB limit.",
        {"field": field, "limit_bytes": limit_bytes},
        status=413,
    )


def require_upload(request: object, files: dict, field: str) -> UploadedFile:
    """The uploaded file ``field``, or a 413/400 that says what is wrong."""
    too_large = getattr(request, _TOO_LARGE_ATTR, {})
    if field in too_large:
        raise too_large_error(field, too_large[field])
    upload = files.get(field)
    if upload is None:
        raise ApplicationError(f"{field}: This field is required.", {"field": field})
    if upload.size == 0:
        raise ApplicationError(f"{field} is empty.", {"field": field})
    return upload


def optional_upload(request: object, files: dict, field: str) -> UploadedFile | None:
    """The uploaded file ``field`` when one was sent (a 413/400 when it is too large or empty)."""
    too_large = getattr(request, _TOO_LARGE_ATTR, {})
    if field not in too_large and files.get(field) is None:
        return None
    return require_upload(request, files, field)


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
    """A header probe of the file's content, whatever its name: 415 when it holds no stream of
    the kind wanted, 400 when a file named as a type we read is damaged."""
    path = _path(upload)
    try:
        return probe(path)
    except MediaError as exc:
        message = _as_client_named(exc.message, path, upload.name)
        if _suffix(upload) in extensions and not _lacks_stream(exc):
            raise ApplicationError(
                f"{field} is not {kind[1]}: {message}", {"field": field}
            ) from None
        raise ApplicationError(
            f"{field} must be {kind[0]} (a file holding a stream of that kind, such as "
            f"{', '.join(sorted(extensions))}): {message}",
            {"field": field},
            status=415,
        ) from None


def _lacks_stream(exc: MediaError) -> bool:
    """Whether the file opened as media but holds no stream of the kind wanted."""
    return "has no audio stream" in exc.message or "has no video stream" in exc.message


def _as_client_named(message: str, path: str, client_name: str | None) -> str:
    """``message`` about the file as the client named it: the temporary file's path and name
    mean nothing to the client, and say where our files are."""
    shown = Path(client_name or "").name or "the upload"
    return message.replace(path, shown).replace(Path(path).name, shown)


def _check_duration(field: str, seconds: float, limit: float) -> None:
    if seconds > limit:
        raise ApplicationError(
            f"{field} is {seconds:.1f} s long; the limit is {limit:g} s.",
            {"field": field, "duration_seconds": seconds},
        )


def video_upload_check(*, upload: File, field: str = "video_file") -> VideoInfo:
    """Refuse what is not a short, readable video; return its header facts."""
    info = _probe(upload, field, VIDEO_KIND, VIDEO_EXTENSIONS, probe_video)
    _check_duration(field, info.duration_s, settings.MAX_VIDEO_SECONDS)
    if info.frame_count and info.frame_count < 2:
        raise ApplicationError(
            f"{field} has a single frame; an avatar needs a video of at least 2 frames.",
            {"field": field},
        )
    return info


def audio_upload_check(*, upload: File) -> AudioInfo:
    """Refuse what is not readable audio of a sane length; return its header facts."""
    info = _probe(upload, "audio_file", AUDIO_KIND, AUDIO_EXTENSIONS | {".mp4"}, probe_audio)
    _check_duration("audio_file", info.duration_s, settings.MAX_AUDIO_SECONDS)
    if info.duration_s < 0.1:
        raise ApplicationError("audio_file is shorter than 0.1 s.", {"field": "audio_file"})
    return info
