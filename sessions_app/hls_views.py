"""HLS endpoints: the live playlist, its segments, and the iOS player page."""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import NotAuthenticated
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.views import APIView

from musetalk_site.errors import ApplicationError
from sessions_app import hls, selectors
from sessions_app.services import session_chunk_served

TOKEN_PARAM = OpenApiParameter(
    "token", str, description="Player token from player_url (or an API token)", required=False
)
PAGE_ERRORS = (Http404, NotAuthenticated, ApplicationError)


class AnyAccept(BaseContentNegotiation):
    """Media players send all sorts of Accept headers; these views answer one type."""

    def select_parser(self, request: Request, parsers: list[Any]) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(self, request: Request, renderers: list[Any], format_suffix: Any = None):
        return renderers[0], renderers[0].media_type


class HlsPlaylistApi(APIView):
    """``GET /hls/{id}/playlist.m3u8?token=``: the session's live playlist."""

    permission_classes = [AllowAny]  # the owner, or a player token of this session
    content_negotiation_class = AnyAccept

    @extend_schema(
        parameters=[TOKEN_PARAM],
        responses={(200, hls.PLAYLIST_CONTENT_TYPE): str},
        tags=["hls"],
    )
    def get(self, request: Request, session_id: str) -> HttpResponse:
        token = request.query_params.get("token")
        session = selectors.session_get_for_access(
            user=request.user, token=token, session_id=session_id
        )
        text = hls.hls_playlist(session=session, token=token)
        response = HttpResponse(text, content_type=hls.PLAYLIST_CONTENT_TYPE)
        response["Cache-Control"] = "no-store"  # a live playlist changes every second
        return response


class HlsSegmentApi(APIView):
    """``GET /hls/{id}/live_12.ts?token=``: one MPEG-TS segment of that playlist."""

    permission_classes = [AllowAny]
    content_negotiation_class = AnyAccept

    @extend_schema(
        parameters=[TOKEN_PARAM],
        responses={(200, hls.SEGMENT_CONTENT_TYPE): bytes},
        tags=["hls"],
    )
    def get(self, request: Request, session_id: str, name: str) -> HttpResponse:
        session = selectors.session_get_for_access(
            user=request.user, token=request.query_params.get("token"), session_id=session_id
        )
        data, segment = hls.hls_segment(session=session, name=name)
        if segment.kind == hls.LIVE:
            session_chunk_served(session=session)
        response = HttpResponse(data, content_type=hls.SEGMENT_CONTENT_TYPE)
        response["Cache-Control"] = "private, max-age=60"
        return response


def hls_player(request: HttpRequest, session_id: str) -> HttpResponse:
    """``GET /hls/player/{id}?token=``: the iOS (Safari / WKWebView) player. The owner,
    signed in, may open it without a token: the page then carries a fresh player token."""
    token = request.GET.get("token")
    try:
        session = selectors.session_get_for_access(
            user=request.user, token=token, session_id=session_id
        )
        config = hls.hls_player_config(session=session, token=token)
    except PAGE_ERRORS as exc:
        return _error_page(request, exc)
    response = render(request, "players/hls.html", {"player": config})
    response["Cache-Control"] = "no-store"  # the page carries its token
    return response


def _error_page(request: HttpRequest, exc: Exception) -> HttpResponse:
    if isinstance(exc, Http404):
        status, message = 404, "This session does not exist or has been removed."
    elif getattr(exc, "status_code", None) == 410:
        status, message = 410, "This session has ended."
    elif getattr(exc, "extra", {}).get("token") == "expired":
        status, message = 401, "This player link has expired. Ask the app for a new one."
    else:
        status, message = 401, "This player link is not valid."
    response = render(request, "players/error.html", {"message": message}, status=status)
    response["Cache-Control"] = "no-store"
    return response
