"""Signed, expiring player tokens: a WebView player reads one session and nothing else.

Players opened from ``player_url`` cannot send headers, so the URL carries a token that
names the session (django.core.signing, salted, timestamped). It is not an API token: it
opens the events, status, chunks and WebSocket of that one session only.
"""

from __future__ import annotations

from django.conf import settings
from django.core import signing
from drf_spectacular.utils import OpenApiParameter

from musetalk_site.auth import TOKEN_PARAM
from musetalk_site.errors import ApplicationError

# How the schema describes ``?token=``: pages and files behind player_url take the player
# token; the session's API reads take either it or an API token.
PLAYER_TOKEN_QUERY = OpenApiParameter(
    TOKEN_PARAM, str, description="The player token of player_url"
)
ACCESS_TOKEN_QUERY = OpenApiParameter(
    TOKEN_PARAM, str, description="Player token from player_url (or an API token)", required=False
)

SALT = "sessions_app.player"


def player_token_make(*, session_id: str) -> str:
    return signing.dumps({"sid": session_id}, salt=SALT)


def player_token_session_id(*, token: str) -> str | None:
    """The session a player token opens; None when ``token`` is not a player token.

    An expired player token is refused with a 401 rather than treated as unknown.
    """
    try:
        data = signing.loads(token, salt=SALT, max_age=settings.PLAYER_TOKEN_MAX_AGE_SECONDS)
    except signing.SignatureExpired:
        raise ApplicationError(
            "The player token has expired; ask the app for a new player_url.",
            {"token": "expired"},
            status=401,
        ) from None
    except signing.BadSignature:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("sid"), str):
        return None
    return data["sid"]


def player_url(*, session_id: str) -> str:
    return f"/player/session/{session_id}?{TOKEN_PARAM}={player_token_make(session_id=session_id)}"


def webrtc_player_url(*, session_id: str) -> str:
    token = player_token_make(session_id=session_id)
    return f"/webrtc/player/{session_id}?{TOKEN_PARAM}={token}"


def player_chunk_url(*, chunk_url: str, token: str | None = None) -> str:
    """Where the fragmented copy of the chunk at ``chunk_url`` (``/chunks/<request>/<name>``)
    is served, opened by ``token`` (a player token of its session) when given."""
    query = f"?{TOKEN_PARAM}={token}" if token else ""
    return f"/player{chunk_url}{query}"
