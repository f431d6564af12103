"""Authentication for plain (non-DRF) async views and WebSocket consumers.

Browsers' EventSource and WebSocket cannot send headers, so besides the session cookie
and ``Authorization: Token <key>`` these also accept ``?token=<key>``; a request without any
credentials may act as the anonymous-access user (``musetalk_site.anonymous``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.http import HttpRequest
from rest_framework.authentication import CSRFCheck
from rest_framework.authtoken.models import Token
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request

from musetalk_site.anonymous import TOKEN_PARAM, anonymous_access_user, anonymous_request_user
from musetalk_site.api_tokens import api_token_user
from musetalk_site.errors import ApplicationError, NotAuthenticatedError


def user_for_token(key: str) -> Any:
    """The active user an API token (named, or the sign-in token) belongs to, else the
    anonymous user."""
    if "\x00" in key:  # no token holds one, and PostgreSQL refuses NUL in a query
        return AnonymousUser()
    named = api_token_user(key=key)
    if named is not None:
        return named
    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return AnonymousUser()
    return token.user


def authenticated_user(request: HttpRequest | Request) -> User:
    """The signed-in user of a view behind ``IsAuthenticated`` or ``login_required``."""
    user = request.user
    if not isinstance(user, User):  # the permission check already refused anonymous requests
        raise NotAuthenticatedError()
    return user


def _token_from_header(value: str) -> str | None:
    scheme, _, key = value.partition(" ")
    return key.strip() if scheme.lower() == "token" and key.strip() else None


def _csrf_refusal(request: HttpRequest) -> str | None:
    """Why Django's CSRF check refuses ``request``, or None when it passes."""
    check = CSRFCheck(lambda _request: None)  # type: ignore[arg-type]  # DRF's: the reason, no page
    check.process_request(request)  # reads the CSRF cookie
    return check.process_view(request, None, (), {})  # type: ignore[arg-type,return-value]


async def request_user(request: HttpRequest) -> Any:
    """The user of an async Django view: session, token header or ``?token=``. An unsafe
    method that carries a token (header or query: a player page's calls) is that token's;
    one that relies on the session cookie passes Django's CSRF check first, as with DRF's
    session authentication (403 otherwise)."""
    header = request.headers.get("Authorization", "")
    unsafe = request.method not in SAFE_METHODS
    explicit = unsafe and bool(header or TOKEN_PARAM in request.GET)
    user = AnonymousUser() if explicit else await request.auser()
    if user.is_authenticated:
        if unsafe:
            # In a thread: the check may parse a multipart body for its form field.
            refused = await sync_to_async(_csrf_refusal, thread_sensitive=False)(request)
            if refused is not None:
                raise ApplicationError(f"CSRF Failed: {refused}", status=403)
        return user
    key = _token_from_header(header) or request.GET.get(TOKEN_PARAM)
    if key:
        return await sync_to_async(user_for_token)(key)
    if header or TOKEN_PARAM in request.GET:
        return AnonymousUser()  # credentials of a kind we do not take, or an empty token
    return await sync_to_async(anonymous_request_user)(request) or AnonymousUser()


class TokenAuthMiddleware:
    """Channels middleware: a ``?token=`` or ``Authorization`` token sets ``scope['user']``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        if not getattr(scope.get("user"), "is_authenticated", False):
            key = _scope_token(scope)
            if key:
                scope = {**scope, "user": await database_sync_to_async(user_for_token)(key)}
            elif key is None and settings.ANONYMOUS_ACCESS_USER:
                # The handshake's Origin is checked by the OriginValidator in front.
                user = await database_sync_to_async(anonymous_access_user)()
                scope = {**scope, "user": user or AnonymousUser()}
        return await self.app(scope, receive, send)


def _scope_token(scope: dict) -> str | None:
    """The token a handshake carries; "" when it carries credentials that hold none."""
    query = parse_qs(scope.get("query_string", b"").decode(), keep_blank_values=True)
    if TOKEN_PARAM in query:
        return query[TOKEN_PARAM][0]
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            return _token_from_header(value.decode()) or ""
    return None
