"""ASGI entry point: HTTP through Django, WebSockets through Channels consumers.

Under daphne, request bodies are checked before they are read and uploads stream into
Django's parser as they arrive (``body_limit``, ``body_stream``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "musetalk_site.settings")
django.setup(set_prefix=False)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security import websocket as websocket_security  # noqa: E402
from django.conf import settings  # noqa: E402

from musetalk_site import body_limit  # noqa: E402
from musetalk_site.anonymous import anonymous_access_warning  # noqa: E402
from musetalk_site.auth import TokenAuthMiddleware  # noqa: E402
from musetalk_site.body_stream import StreamingASGIHandler  # noqa: E402
from musetalk_site.routing import websocket_urlpatterns  # noqa: E402

# The routes that take a media file (URL name -> the file field), for the body limits.
UPLOAD_FIELDS = {
    "avatar-prepare": "video_file",
    "job-create": "audio_file",
    "session-stream": "audio_file",
    "generate-stream": "audio_file",
    "hls-session-stream": "audio_file",
    "hls-group-stream": "audio_file",
}


class OriginValidator(websocket_security.OriginValidator):
    """Channels' check of a handshake's ``Origin`` against ALLOWED_HOSTS, letting in a
    handshake without one: browsers always send it, so only native apps leave it out, and
    they are not the cross-site pages the check keeps out."""

    def valid_origin(self, parsed_origin: Any) -> bool:
        return parsed_origin is None or bool(super().valid_origin(parsed_origin))


def _allowed_origins() -> list[str]:
    # As channels' AllowedHostsOriginValidator has it.
    if settings.DEBUG and not settings.ALLOWED_HOSTS:
        return ["localhost", "127.0.0.1", "[::1]"]
    return list(settings.ALLOWED_HOSTS)


body_limit.install(upload_fields=UPLOAD_FIELDS)
if settings.ANONYMOUS_ACCESS_USER:
    logging.getLogger(__name__).warning("!!! %s !!!", anonymous_access_warning())
django_asgi_app = StreamingASGIHandler()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": OriginValidator(
            AuthMiddlewareStack(TokenAuthMiddleware(URLRouter(websocket_urlpatterns))),
            _allowed_origins(),
        ),
    }
)
