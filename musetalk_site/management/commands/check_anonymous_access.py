from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from musetalk_site.anonymous import anonymous_access_user, anonymous_access_warning


class Command(BaseCommand):
    help = (
        "Fail unless ANONYMOUS_ACCESS_USER is unset or names an active user (the launcher "
        "refuses to start otherwise); print the warning when it is on."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        name = settings.ANONYMOUS_ACCESS_USER
        if not name:
            return
        if anonymous_access_user() is None:
            raise CommandError(
                f"ANONYMOUS_ACCESS_USER={name!r} names no active user. Create that user first "
                "(python manage.py createsuperuser, or the admin) or unset ANONYMOUS_ACCESS_USER."
            )
        self.stdout.write(anonymous_access_warning())
