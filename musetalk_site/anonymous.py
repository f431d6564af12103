"""Opt-in anonymous access: requests that carry no credentials act as one named user.

``ANONYMOUS_ACCESS_USER`` (off by default) is for clients that cannot send credentials, on a
trusted network. The REST API (:class:`AnonymousAccessAuthentication`, last of DRF's
authentication classes), the async views and the WebSocket handshakes
(``musetalk_site.auth``) share it. A request with credentials is checked as always (bad ones
still get a 401), and a browser page on an origin other than ours or CORS_ALLOWED_ORIGINS
never gets it, so a foreign page cannot act as that user through a visitor's browser.

DRF imports this module while it loads its settings: nothing here may import
``rest_framework.views`` (nor ``musetalk_site.errors``, which does).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import User
from django.http import HttpRequest
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

logger = logging.getLogger(__name__)

TOKEN_PARAM = "token"  # the query parameter of API and player tokens

ANONYMOUS_ACCESS_WARNING = (
    "ANONYMOUS ACCESS IS ON: requests without credentials act as user {user!r} "
    "(ANONYMOUS_ACCESS_USER); use this only on a trusted network"
)


def anonymous_access_warning() -> str:
    """The warning the launcher, the web process, /health and every page show, or ''."""
    name = settings.ANONYMOUS_ACCESS_USER
    return ANONYMOUS_ACCESS_WARNING.format(user=name) if name else ""


def anonymous_access_user() -> User | None:
    """The active user that ANONYMOUS_ACCESS_USER names; None when off or when it names none."""
    name = settings.ANONYMOUS_ACCESS_USER
    if not name:
        return None
    user = User.objects.filter(username=name, is_active=True).first()
    if user is None:
        logger.error("ANONYMOUS_ACCESS_USER=%r names no active user: refusing the request", name)
    return user


def _foreign_origin(origin: str, host: str) -> bool:
    """Whether a browser's ``Origin`` is neither ours nor one of CORS_ALLOWED_ORIGINS."""
    if not origin:
        return False  # not a browser, or a same-origin GET
    # The host alone: behind a TLS proxy the scheme we see may differ from the browser's.
    return urlsplit(origin).netloc != host and origin not in settings.CORS_ALLOWED_ORIGINS


def anonymous_request_user(request: HttpRequest) -> User | None:
    """The anonymous-access user for a request that carries no credentials, else None."""
    if not settings.ANONYMOUS_ACCESS_USER:
        return None
    if _foreign_origin(request.headers.get("Origin", ""), request.get_host()):
        return None
    return anonymous_access_user()


class AnonymousAccessAuthentication(BaseAuthentication):
    """DRF: a request without any credentials acts as ANONYMOUS_ACCESS_USER, when set.

    Listed after the token and session classes, so it only sees requests they let through.
    """

    def authenticate(self, request: Request) -> tuple[User, None] | None:
        if "Authorization" in request.headers or TOKEN_PARAM in request.query_params:
            return None  # credentials that were not accepted: a 401, never the fallback
        user = anonymous_request_user(request._request)
        return (user, None) if user is not None else None
