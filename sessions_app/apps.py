from __future__ import annotations

from django.apps import AppConfig


class SessionsAppConfig(AppConfig):
    name = "sessions_app"
    verbose_name = "Streaming sessions"

    def ready(self) -> None:
        from sessions_app import receivers  # noqa: F401  (connects them)
