"""Authentication for plain (non-DRF) async views and WebSocket consumers.

Browsers' EventSource and WebSocket cannot send headers, so besides the session cookie
and ``Authorization: Token <key>`` these also accept ``?token=<key>``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest
from rest_framework.authtoken.models import Token


def _user_for_token(key: str) -> Any:
    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return AnonymousUser()
    return token.user


def _token_from_header(value: str) -> str | None:
    scheme, _, key = value.partition(" ")
    return key.strip() if scheme.lower() == "token" and key.strip() else None


async def request_user(request: HttpRequest) -> Any:
    """The user of an async Django view: session, token header or ``?token=``."""
    user = await request.auser()
    if user.is_authenticated:
        return user
    key = _token_from_header(request.headers.get("Authorization", "")) or request.GET.get("token")
    if not key:
        return AnonymousUser()
    return await sync_to_async(_user_for_token)(key)


class TokenAuthMiddleware:
    """Channels middleware: a ``?token=`` or ``Authorization`` token sets ``scope['user']``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        if not getattr(scope.get("user"), "is_authenticated", False):
            key = _scope_token(scope)
            if key:
                scope = {**scope, "user": await database_sync_to_async(_user_for_token)(key)}
        return await self.app(scope, receive, send)


def _scope_token(scope: dict) -> str | None:
    query = parse_qs(scope.get("query_string", b"").decode())
    if query.get("token"):
        return query["token"][0]
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            return _token_from_header(value.decode())
    return None
