from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.uploadedfile import TemporaryUploadedFile

from musetalk_site.errors import ApplicationError
from musetalk_site.uploads import (
    LimitedUploadHandler,
    audio_upload_check,
    incoming_dir,
    video_upload_check,
)


@pytest.fixture(autouse=True)
def _private_media_root(settings, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


def _spooled(name: str, data: bytes) -> TemporaryUploadedFile:
    """An upload as the parser leaves it, written through LimitedUploadHandler."""
    handler = LimitedUploadHandler()
    handler.new_file("video_file", name, "application/octet-stream", len(data))
    handler.receive_data_chunk(data, 0)
    upload = handler.file_complete(len(data))
    assert isinstance(upload, TemporaryUploadedFile)
    return upload


@pytest.mark.parametrize("check", [video_upload_check, audio_upload_check])
def test_a_probe_failure_names_the_file_as_the_client_named_it(check):
    upload = _spooled("holiday.mp4", b"\x00\x01 certainly not a media file " * 64)
    temp_path = Path(upload.temporary_file_path())
    with pytest.raises(ApplicationError) as refused:
        check(upload=upload)
    upload.close()
    message = refused.value.message
    assert "holiday.mp4" in message
    assert temp_path.name not in message and ".upload" not in message
    assert str(temp_path.parent) not in message


def test_uploads_are_spooled_in_media_root_so_storing_them_is_a_rename(settings):
    upload = _spooled("a.wav", b"RIFF")
    spooled = Path(upload.temporary_file_path())
    assert spooled.parent == incoming_dir() == Path(settings.MEDIA_ROOT) / "incoming"
    assert spooled.read_bytes() == b"RIFF"
    upload.close()
    assert not spooled.exists()
