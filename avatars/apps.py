from __future__ import annotations

from django.apps import AppConfig


class AvatarsConfig(AppConfig):
    name = "avatars"
    verbose_name = "Avatars and videos"

    def ready(self) -> None:
        from avatars import receivers  # noqa: F401  (connects them)
