"""Generation jobs whose uploaded audio and video exist in MEDIA_ROOT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings

from avatars.models import GenerationJob
from tests.factories import GenerationJobFactory


def job_with_files(owner: Any, status: str, **fields: Any) -> GenerationJob:
    job = GenerationJobFactory(owner=owner, status=status, **fields)
    job.audio_file.name = f"uploads/audio/{owner.pk}/{job.request_id}.wav"
    job.result.name = f"results/{owner.pk}/{job.request_id}.mp4"
    job.save()
    for path in files_of(job):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"media")
    return job


def files_of(job: GenerationJob) -> list[Path]:
    """The job's uploaded audio and video, as named when the job was made."""
    root = Path(settings.MEDIA_ROOT)
    return [root / str(job.audio_file.name), root / str(job.result.name)]
