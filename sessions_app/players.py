"""The WebView players: the session player (MSE), the minimal mobile player, and the
files they load with nothing but the player token of their URL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.models import AnonymousUser
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import render
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.views import APIView

from musetalk_site.auth import TOKEN_PARAM, request_user
from musetalk_site.errors import error_payload
from sessions_app import player_services
from sessions_app.tokens import PLAYER_TOKEN_QUERY

NO_STORE = "no-store"  # the page carries its token; no cache should keep it


def player_response(response: HttpResponse) -> HttpResponse:
    """A player page as it goes out: no cache keeps it (it carries its token), and any site
    may frame it (players are made to be embedded; they hold nothing but their own session,
    so there is nothing to click-jack)."""
    response["Cache-Control"] = NO_STORE
    response.xframe_options_exempt = True
    return response


async def session_player(request: HttpRequest, session_id: str) -> HttpResponse:
    """``GET /player/session/{id}?token=``: the Android / Chrome WebView player."""
    return await _player_page(request, "players/session.html", session_id)


async def mobile_player(request: HttpRequest) -> HttpResponse:
    """``GET /player/mobile?session_id=&token=``: the same player with a bare UI."""
    return await _player_page(request, "players/mobile.html", request.GET.get("session_id", ""))


async def webrtc_player(request: HttpRequest, session_id: str) -> HttpResponse:
    """``GET /webrtc/player/{id}?token=``: the WebRTC player (the seed's ``player_url``)."""
    return await _player_page(
        request, "players/webrtc.html", session_id, player_services.webrtc_player_config
    )


def _session_player_config(*, token: str | None, session_id: str, user: Any) -> dict[str, Any]:
    return player_services.player_config(token=token, session_id=session_id, user=user).to_dict()


PlayerConfig = Callable[..., dict[str, Any]]  # (token=, session_id=, user=) -> the page's config


async def _player_page(
    request: HttpRequest,
    template: str,
    session_id: str,
    config: PlayerConfig = _session_player_config,
) -> HttpResponse:
    """With ``?token=``, that player token is the only credential; without one, the
    session's owner may open the page (session cookie or ``Authorization`` header)."""
    token = request.GET.get(TOKEN_PARAM)
    user = AnonymousUser() if token else await request_user(request)
    return await sync_to_async(_player_page_render)(
        request, template, config, session_id, token, user
    )


def _player_page_render(
    request: HttpRequest,
    template: str,
    config: PlayerConfig,
    session_id: str,
    token: str | None,
    user: Any,
) -> HttpResponse:
    try:
        page = config(token=token, session_id=session_id, user=user)
    except Exception as exc:
        return player_error_page(request, exc)
    return player_response(render(request, template, {"player": page}))


def player_error_page(request: HttpRequest, exc: Exception) -> HttpResponse:
    """A plain page that says what to do and nothing about the session (every player);
    unexpected exceptions are raised again."""
    payload = error_payload(exc)
    if payload is None:
        raise exc
    if payload.status == 404:
        status, message = 404, "This session does not exist or has been removed."
    elif payload.status == 410:
        status, message = 410, "This session has ended."
    elif payload.extra.get("token") == "expired":
        status, message = 401, "This player link has expired. Ask the app for a new one."
    else:
        status, message = 401, "This player link is not valid."
    return player_response(
        render(request, "players/error.html", {"message": message}, status=status)
    )


class PlayerIdleVideoApi(APIView):
    """``GET /player/session/{id}/idle.mp4?token=``: the avatar's idle loop."""

    permission_classes = [AllowAny]  # the player token is the credential

    @extend_schema(
        parameters=[PLAYER_TOKEN_QUERY], responses={(200, "video/mp4"): bytes}, tags=["players"]
    )
    def get(self, request: Request, session_id: str) -> FileResponse:
        path = player_services.player_idle_video(
            token=request.query_params.get(TOKEN_PARAM), session_id=session_id
        )
        response = FileResponse(path.open("rb"), content_type="video/mp4")
        response["Cache-Control"] = "private, max-age=300"
        return response


class PlayerChunkApi(APIView):
    """``GET /player/chunks/{request_id}/chunk_0001.mp4?token=``: a chunk as fragmented
    MP4 for Media Source Extensions; the Content-Type carries its exact codecs."""

    permission_classes = [AllowAny]  # the owner, or a player token of the chunk's session

    @extend_schema(
        parameters=[PLAYER_TOKEN_QUERY], responses={(200, "video/mp4"): bytes}, tags=["players"]
    )
    def get(self, request: Request, request_id: str, name: str) -> FileResponse:
        chunk = player_services.player_chunk_fragmented(
            user=request.user,
            token=request.query_params.get(TOKEN_PARAM),
            request_id=request_id,
            name=name,
        )
        return FileResponse(chunk.path.open("rb"), content_type=chunk.content_type)
