from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files import File
from django.core.management.base import BaseCommand, CommandError, CommandParser

from avatars import services
from avatars.management.commands._follow import follow
from avatars.management.commands.prepare_avatar import _user
from avatars.models import GenerationJob
from musetalk_site.errors import ApplicationError

FAILED = {GenerationJob.Status.FAILED, GenerationJob.Status.CANCELLED}


class Command(BaseCommand):
    help = "Generate a video of USERNAME's AVATAR_ID speaking AUDIO in the worker."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("avatar_id")
        parser.add_argument("audio", type=Path)
        parser.add_argument("--out", type=Path, help="copy the finished MP4 here")
        parser.add_argument("--batch-size", type=int, default=2)
        parser.add_argument("--fps", type=int, default=25)
        parser.add_argument("--timeout", type=float, default=3600)

    def handle(self, *args: Any, **opts: Any) -> None:
        owner = _user(opts["username"])
        if not opts["audio"].is_file():
            raise CommandError(f"{opts['audio']} is not a file")
        with opts["audio"].open("rb") as handle:
            try:
                job = services.job_create(
                    owner=owner,
                    avatar_id=opts["avatar_id"],
                    audio=File(handle, name=opts["audio"].name),
                    batch_size=opts["batch_size"],
                    fps=opts["fps"],
                )
            except ApplicationError as exc:
                raise CommandError(exc.message) from None

        def read() -> tuple[str, int, str]:
            job.refresh_from_db()
            return job.status, job.progress, job.error

        follow(
            read,
            done={GenerationJob.Status.SUCCEEDED},
            failed=FAILED,
            label=job.request_id,
            timeout=opts["timeout"],
        )
        assert job.result.name is not None  # follow() returned: the job succeeded
        result = Path(settings.MEDIA_ROOT) / job.result.name
        if opts["out"]:
            shutil.copyfile(result, opts["out"])
            result = opts["out"]
        self.stdout.write(
            self.style.SUCCESS(f"{job.request_id}: {job.frame_count} frames -> {result}")
        )
