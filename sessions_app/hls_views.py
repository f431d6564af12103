"""HLS endpoints: the multivariant and live playlists, the segments, the iOS player page."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import patch_vary_headers
from django.utils.text import compress_string
from drf_spectacular.utils import extend_schema
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from musetalk_site.auth import TOKEN_PARAM, request_user
from musetalk_site.errors import ApplicationError
from musetalk_site.schema import error
from sessions_app import hls, selectors
from sessions_app.models import StreamSession
from sessions_app.players import player_error_page, player_response
from sessions_app.services import session_chunk_served
from sessions_app.tokens import ACCESS_TOKEN_QUERY

ACCEPTS_GZIP = re.compile(r"\bgzip\b")


class AnyAccept(BaseContentNegotiation):
    """Media players send all sorts of Accept headers; these views answer one type."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser | None:
        return next(iter(parsers), None)

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = list(renderers)[0]
        return renderer, renderer.media_type


def hls_response(content: str | bytes, *, content_type: str, cache: str) -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    response["Cache-Control"] = cache
    # The token is in the URL and no cookie is needed, so players on other origins (an
    # app's own hls.js page) may read the stream; credentialed reads stay same-origin.
    response["Access-Control-Allow-Origin"] = "*"
    return response


def playlist_response(request: Request, text: str) -> HttpResponse:
    """A playlist, gzipped for clients that accept it, however short: Apple's authoring
    spec (10.1) asks for it. It changes every second (and carries a token): no caching."""
    response = hls_response(text, content_type=hls.PLAYLIST_CONTENT_TYPE, cache="no-store")
    patch_vary_headers(response, ["Accept-Encoding"])
    if ACCEPTS_GZIP.search(request.headers.get("Accept-Encoding", "")):
        response.content = compress_string(response.content)
        response["Content-Encoding"] = "gzip"
    return response


class HlsMediaView(APIView):
    """A playlist or segment of one session, for its owner or a player token of it."""

    permission_classes = [AllowAny]
    content_negotiation_class = AnyAccept

    def handle_exception(self, exc: Exception) -> Response:
        """A 503 (the idle parts are not built yet) says when to retry, to any origin."""
        response = super().handle_exception(exc)
        if isinstance(exc, ApplicationError) and "retry_after" in exc.extra:
            response["Retry-After"] = str(exc.extra["retry_after"])
            response["Access-Control-Allow-Origin"] = "*"
        return response


class _PlaylistApi(HlsMediaView):
    """A playlist of one session."""

    @staticmethod
    def playlist(*, session: StreamSession, token: str | None) -> str:
        raise NotImplementedError

    @extend_schema(
        parameters=[ACCESS_TOKEN_QUERY],
        responses={
            (200, hls.PLAYLIST_CONTENT_TYPE): str,
            410: error("The session has ended or expired."),
            503: error("The idle loop is still being built; retry after `Retry-After` s."),
        },
        tags=["hls"],
    )
    def get(self, request: Request, session_id: str) -> HttpResponse:
        token = request.query_params.get(TOKEN_PARAM)
        session = selectors.session_get_for_access(
            user=request.user, token=token, session_id=session_id
        )
        return playlist_response(request, self.playlist(session=session, token=token))


class HlsMasterPlaylistApi(_PlaylistApi):
    """``GET /hls/{id}/master.m3u8?token=``: the multivariant playlist players open."""

    playlist = staticmethod(hls.hls_master_playlist)


class HlsPlaylistApi(_PlaylistApi):
    """``GET /hls/{id}/playlist.m3u8?token=``: the session's live media playlist."""

    playlist = staticmethod(hls.hls_playlist)


class HlsSegmentApi(APIView):
    """``GET /hls/{id}/live_12.ts?token=``: one MPEG-TS segment of that playlist."""

    permission_classes = [AllowAny]
    content_negotiation_class = AnyAccept

    @extend_schema(
        parameters=[ACCESS_TOKEN_QUERY],
        responses={
            (200, hls.SEGMENT_CONTENT_TYPE): bytes,
            410: error("The session has ended or expired."),
        },
        tags=["hls"],
    )
    def get(self, request: Request, session_id: str, name: str) -> HttpResponse:
        session = selectors.session_get_for_access(
            user=request.user, token=request.query_params.get(TOKEN_PARAM), session_id=session_id
        )
        data, segment = hls.hls_segment(session=session, name=name)
        if segment.kind == hls.LIVE:
            session_chunk_served(session=session)
        # A published segment never changes; the token keeps it out of shared caches.
        return hls_response(
            data, content_type=hls.SEGMENT_CONTENT_TYPE, cache="private, max-age=60"
        )


async def hls_player(request: HttpRequest, session_id: str) -> HttpResponse:
    """``GET /hls/player/{id}?token=``: the iOS (Safari / WKWebView) player, also the page
    of the seed API's HLS ``player_url``. Without a token, the session's owner may open it
    (session cookie or ``Authorization`` header): the page then carries a fresh player token."""
    token = request.GET.get(TOKEN_PARAM)
    user = AnonymousUser() if token else await request_user(request)
    return await sync_to_async(_hls_player_render)(request, session_id, token, user)


def _hls_player_render(
    request: HttpRequest, session_id: str, token: str | None, user: Any
) -> HttpResponse:
    try:
        session = selectors.session_get_for_access(user=user, token=token, session_id=session_id)
        config = hls.hls_player_config(session=session, token=token)
    except Exception as exc:
        return player_error_page(request, exc)
    return player_response(render(request, "players/hls.html", {"player": config}))
