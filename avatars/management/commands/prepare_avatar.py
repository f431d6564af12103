from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.files import File
from django.core.management.base import BaseCommand, CommandError, CommandParser

from avatars import services
from avatars.management.commands._follow import follow
from avatars.models import Avatar
from musetalk_site.errors import ApplicationError


class Command(BaseCommand):
    help = "Prepare an avatar for USERNAME from VIDEO in the worker, with a progress bar."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("avatar_id")
        parser.add_argument("video", type=Path)
        parser.add_argument("--batch-size", type=int, default=20)
        parser.add_argument("--bbox-shift", type=int, default=0)
        parser.add_argument("--force-recreate", action="store_true")
        parser.add_argument("--no-wait", action="store_true", help="queue and return")
        parser.add_argument("--timeout", type=float, default=3600)

    def handle(self, *args: Any, **opts: Any) -> None:
        owner = _user(opts["username"])
        if not opts["video"].is_file():
            raise CommandError(f"{opts['video']} is not a file")
        with opts["video"].open("rb") as handle:
            try:
                avatar, queued = services.avatar_prepare_request(
                    owner=owner,
                    avatar_id=opts["avatar_id"],
                    video=File(handle, name=opts["video"].name),
                    batch_size=opts["batch_size"],
                    bbox_shift=opts["bbox_shift"],
                    force_recreate=opts["force_recreate"],
                )
            except ApplicationError as exc:
                raise CommandError(exc.message) from None
        if not queued:
            self.stdout.write(f"{avatar.avatar_id} is already prepared (use --force-recreate).")
            return
        if opts["no_wait"]:
            self.stdout.write(f"Queued preparation of {avatar.avatar_id}.")
            return

        def read() -> tuple[str, int, str]:
            avatar.refresh_from_db()
            return avatar.status, avatar.progress, avatar.error

        follow(
            read,
            done={Avatar.Status.READY},
            failed={Avatar.Status.FAILED},
            label=f"prepare {avatar.avatar_id}",
            timeout=opts["timeout"],
        )
        self.stdout.write(
            self.style.SUCCESS(f"{avatar.avatar_id} is ready: {avatar.frame_count} frames.")
        )


def _user(username: str) -> Any:
    User = get_user_model()
    user = User.objects.filter(**{User.USERNAME_FIELD: username}).first()
    if user is None:
        raise CommandError(f"No user named {username!r}.")
    return user
