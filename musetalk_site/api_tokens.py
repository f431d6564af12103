"""Named API tokens: a user's keys for the REST API, the players and the WebSockets.

A key is made of random bytes and stored only as its SHA-256 digest, so it is shown once, when
it is created: a lost key is revoked and replaced, and a copy of the database opens nothing.
Its first characters are kept to tell keys apart. The sign-in token that
``POST /api/auth/token/`` hands out (DRF's ``Token``) keeps working beside them.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone
from rest_framework.authtoken.models import Token

from musetalk_site.errors import ApplicationError
from musetalk_site.models import ApiToken

KEY_PREFIX = "mtk_"  # lets secret scanners and people recognise a key
SHOWN_CHARS = len(KEY_PREFIX) + 6
NAME_MAX = 64
TOKENS_MAX = 50  # per user
# last_used_at is written at most this often per key, not on every request.
LAST_USED_STEP = timedelta(minutes=1)


@dataclass(frozen=True)
class NewToken:
    token: ApiToken
    key: str  # shown to its owner once; never stored


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def api_token_create(*, user: User, name: str) -> NewToken:
    """A new key named ``name`` (unique among the user's keys)."""
    name = name.strip()
    if not name or len(name) > NAME_MAX:
        raise ApplicationError(f"A token needs a name of 1 to {NAME_MAX} characters.", {})
    if ApiToken.objects.filter(user=user).count() >= TOKENS_MAX:
        raise ApplicationError(
            f"You have {TOKENS_MAX} tokens already: revoke one first.", {}, status=409
        )
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    try:
        with transaction.atomic():
            token = ApiToken.objects.create(
                user=user, name=name, prefix=key[:SHOWN_CHARS], digest=_digest(key)
            )
    except IntegrityError:
        raise ApplicationError(
            f"You already have a token named {name!r}.", {"name": name}, status=409
        ) from None
    return NewToken(token=token, key=key)


def api_token_revoke(*, user: User, token_id: int) -> None:
    """Revoke one of the user's keys: it stops working at once."""
    deleted, _ = ApiToken.objects.filter(user=user, pk=token_id).delete()
    if not deleted:
        raise ApplicationError("No such token.", {"token_id": token_id}, status=404)


def api_token_user(*, key: str) -> Any:
    """The active owner of ``key``, or None; notes when the key was last used."""
    if not key.startswith(KEY_PREFIX):
        return None
    token = ApiToken.objects.select_related("user").filter(digest=_digest(key)).first()
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or token.last_used_at <= now - LAST_USED_STEP:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user


def api_tokens_for_user(*, user: User) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=user).order_by("-created_at")


def signin_token_for_user(*, user: User) -> Token | None:
    """The sign-in token ``POST /api/auth/token/`` hands out, when the user has one."""
    return Token.objects.filter(user=user).first()


def signin_token_revoke(*, user: User) -> None:
    """Revoke the sign-in token: it stops working at once; the next sign-in makes a new one."""
    deleted, _ = Token.objects.filter(user=user).delete()
    if not deleted:
        raise ApplicationError("You have no sign-in token.", status=404)
