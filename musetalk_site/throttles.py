"""Request rates (DRF throttles), set from the environment.

``THROTTLE_TOKEN_RATE`` limits token requests per client address; ``THROTTLE_UPLOAD_RATE``
limits the uploads of each user (avatar videos, generation audio, streamed utterances), all
kinds together. A refused request gets 429, the error body with ``extra.wait_seconds`` and
``Retry-After``.

The rate is read from the settings on every request, so a changed setting applies at once.
The counts live in Django's cache: the local memory of each web process, so with several web
processes each one counts on its own.
"""

from __future__ import annotations

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle
from rest_framework.views import APIView

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class TokenThrottle(AnonRateThrottle):
    """Token requests per client address (``TRUSTED_PROXY_COUNT`` says which one)."""

    scope = "token"

    def get_rate(self) -> str | None:
        return settings.THROTTLE_TOKEN_RATE


class UploadThrottle(UserRateThrottle):
    """Uploads per user; only the writes of a view count."""

    scope = "upload"

    def get_rate(self) -> str | None:
        return settings.THROTTLE_UPLOAD_RATE

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        if request.method in SAFE_METHODS:
            return None
        return super().get_cache_key(request, view)
