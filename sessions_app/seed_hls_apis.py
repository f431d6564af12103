"""The seed API's HLS sessions: ``/hls/sessions/...`` (see sessions_app/seed_hls.py).

Playlists, segments and the status take the owner's credentials or the player token in the
URLs the create answer returns; creating, streaming and deleting take the owner's. A
session that ended or expired is not found (404), as in the seed API.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from musetalk_site.auth import TOKEN_PARAM, authenticated_user
from musetalk_site.params import query_or_form
from musetalk_site.schema import QUOTA_MINUTES, QUOTA_SESSIONS, error
from musetalk_site.throttles import UploadThrottle
from musetalk_site.uploads import require_upload
from sessions_app import hls, seed_hls, selectors, services
from sessions_app import seed_hls_serializers as out
from sessions_app.hls_views import HlsMediaView, hls_response, playlist_response
from sessions_app.models import StreamSession
from sessions_app.seed_hls_groups import (
    MAX_GROUP_SESSIONS,
    hls_group_create,
    hls_group_delete,
    hls_group_get,
    hls_group_sessions,
    hls_group_stream,
)
from sessions_app.seed_hls_payloads import (
    hls_created_payload,
    hls_group_payload,
    hls_group_stream_payload,
    hls_stats_payload,
    hls_status_payload,
    hls_stream_payload,
)
from sessions_app.tokens import ACCESS_TOKEN_QUERY

NOT_FOUND = error("No such open session: it never existed, was deleted or expired.")
STREAM_ID_QUERY = OpenApiParameter(
    "stream_id", str, description="The utterance (request_id); default: the latest"
)
GROUP_CONFIG = (
    "batch_size",
    "playback_fps",
    "musetalk_fps",
    "segment_duration",
    "part_duration",
    "hls_server_timing",
)
SEGMENT_CACHE = "private, max-age=60"  # a segment never changes; its URL carries a token


def _session(request: Request, session_id: str) -> StreamSession:
    """The open session, for its owner or a player token of it."""
    return selectors.session_get_open_for_access(
        user=request.user, token=request.query_params.get(TOKEN_PARAM), session_id=session_id
    )


class HlsCreateInputSerializer(serializers.Serializer):
    avatar_id = serializers.CharField(max_length=64)
    user_id = serializers.CharField(max_length=128, required=False, default="")
    batch_size = serializers.IntegerField(default=2, min_value=1, max_value=64)
    playback_fps = serializers.IntegerField(
        required=False, allow_null=True, default=None, min_value=1, max_value=60
    )
    musetalk_fps = serializers.IntegerField(
        required=False, allow_null=True, default=None, min_value=1, max_value=60
    )
    segment_duration = serializers.FloatField(default=2.0, min_value=0.2, max_value=30.0)
    part_duration = serializers.FloatField(required=False, allow_null=True, default=None)
    hls_server_timing = serializers.BooleanField(required=False, allow_null=True, default=None)


def _session_settings(asked: dict[str, Any]) -> dict[str, Any]:
    """Our session's settings from the seed's: speech at ``musetalk_fps`` (else
    ``playback_fps``, else 15) in chunks of ``segment_duration`` seconds."""
    return {
        "avatar_id": asked["avatar_id"],
        "user_id": asked["user_id"],
        "batch_size": asked["batch_size"],
        "fps": asked["musetalk_fps"] or asked["playback_fps"] or 15,
        "chunk_duration": asked["segment_duration"],
    }


class HlsSessionCreateApi(APIView):
    InputSerializer = HlsCreateInputSerializer

    @extend_schema(
        parameters=[InputSerializer],
        request=None,
        responses={
            200: out.HlsCreatedSerializer,
            403: error(QUOTA_SESSIONS),
            404: error("The caller has no avatar of that avatar_id."),
            409: error("The avatar is not ready."),
        },
        tags=["hls"],
        description="An HLS session (the seed's): the speech is made at `musetalk_fps` "
        "(else `playback_fps`, else 15) in chunks of `segment_duration` seconds.",
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=query_or_form(request))
        data.is_valid(raise_exception=True)
        asked = data.validated_data
        settings = _session_settings(asked)
        owner = authenticated_user(request)
        session = services.session_create(owner=owner, kind=StreamSession.Kind.HLS, **settings)
        return Response(out.HlsCreatedSerializer(hls_created_payload(session)).data)


class HlsSessionStreamApi(APIView):
    parser_classes = [MultiPartParser, FormParser]
    throttle_classes = [UploadThrottle]

    class InputSerializer(serializers.Serializer):
        audio_file = serializers.FileField(required=False, help_text="WAV/MP3/M4A/OGG audio")
        start_offset_seconds = serializers.FloatField(
            required=False, allow_null=True, help_text="Accepted and ignored"
        )
        interrupt = serializers.BooleanField(default=False)

    @extend_schema(
        request=InputSerializer,
        responses={
            200: out.HlsStreamStartedSerializer,
            404: NOT_FOUND,
            409: error("Another utterance is streaming (send interrupt=true to replace it)."),
            429: error(QUOTA_MINUTES),
        },
        tags=["hls"],
    )
    def post(self, request: Request, session_id: str) -> Response:
        data = self.InputSerializer(data=query_or_form(request))
        data.is_valid(raise_exception=True)
        session = selectors.session_get_open_for_user(
            user=authenticated_user(request), session_id=session_id
        )
        audio = require_upload(request._request, request.FILES, "audio_file")
        stream = services.session_stream_start(
            session=session, audio=audio, interrupt=data.validated_data["interrupt"]
        )
        return Response(out.HlsStreamStartedSerializer(hls_stream_payload(session, stream)).data)


class HlsSessionStatusApi(APIView):
    permission_classes = [AllowAny]  # the owner, or a player token of this session

    @extend_schema(
        parameters=[ACCESS_TOKEN_QUERY],
        responses={200: out.HlsStatusSerializer, 404: NOT_FOUND},
        tags=["hls"],
        description="`status`: `queued` (no segment yet), `streaming`, `idle` (the last "
        "segment is published and has played at the live edge) or `failed`.",
    )
    def get(self, request: Request, session_id: str) -> Response:
        payload = hls_status_payload(_session(request, session_id))
        return Response(out.HlsStatusSerializer(payload).data)


class HlsSessionDeleteApi(APIView):
    @extend_schema(responses={200: out.HlsDeletedSerializer, 404: NOT_FOUND}, tags=["hls"])
    def delete(self, request: Request, session_id: str) -> Response:
        session = selectors.session_get_open_for_user(
            user=authenticated_user(request), session_id=session_id
        )
        services.session_delete(session=session)
        payload = {"status": "deleted", "session_id": session.session_id}
        return Response(out.HlsDeletedSerializer(payload).data)


class HlsSessionStatsApi(APIView):
    @extend_schema(responses={200: out.HlsStatsSerializer}, tags=["hls"])
    def get(self, request: Request) -> Response:
        payload = hls_stats_payload(authenticated_user(request))
        return Response(out.HlsStatsSerializer(payload).data)


PLAYLIST_RESPONSES = {
    (200, hls.PLAYLIST_CONTENT_TYPE): str,
    404: NOT_FOUND,
    503: error("The idle loop is still being built; retry after `Retry-After` s."),
}


class HlsIdlePlaylistApi(HlsMediaView):
    """``GET /hls/sessions/{id}/index.m3u8``: the idle loop, a VOD playlist to loop."""

    @extend_schema(parameters=[ACCESS_TOKEN_QUERY], responses=PLAYLIST_RESPONSES, tags=["hls"])
    def get(self, request: Request, session_id: str) -> HttpResponse:
        token = request.query_params.get(TOKEN_PARAM)
        text = seed_hls.idle_playlist(session=_session(request, session_id), token=token)
        return playlist_response(request, text)


class HlsLivePlaylistApi(HlsMediaView):
    """``GET /hls/sessions/{id}/live.m3u8``: one utterance, an EVENT playlist."""

    @extend_schema(
        parameters=[ACCESS_TOKEN_QUERY, STREAM_ID_QUERY], responses=PLAYLIST_RESPONSES, tags=["hls"]
    )
    def get(self, request: Request, session_id: str) -> HttpResponse:
        text = seed_hls.live_playlist(
            session=_session(request, session_id),
            stream_id=request.query_params.get("stream_id"),
            token=request.query_params.get(TOKEN_PARAM),
        )
        return playlist_response(request, text)


SEGMENT_RESPONSES = {(200, hls.SEGMENT_CONTENT_TYPE): bytes, 404: NOT_FOUND}


class HlsIdleSegmentApi(HlsMediaView):
    """``GET /hls/sessions/{id}/segments/idle_000.ts``: a part of the idle loop."""

    @extend_schema(parameters=[ACCESS_TOKEN_QUERY], responses=SEGMENT_RESPONSES, tags=["hls"])
    def get(self, request: Request, session_id: str, name: str) -> HttpResponse:
        data = seed_hls.idle_segment(session=_session(request, session_id), name=name)
        return hls_response(data, content_type=hls.SEGMENT_CONTENT_TYPE, cache=SEGMENT_CACHE)


class HlsLiveSegmentApi(HlsMediaView):
    """``GET /hls/sessions/{id}/segments/{request_id}/chunk_0001.ts``: a live segment."""

    @extend_schema(
        parameters=[ACCESS_TOKEN_QUERY],
        responses=SEGMENT_RESPONSES,
        tags=["hls"],
        operation_id="hls_sessions_segments_live_retrieve",
    )
    def get(self, request: Request, session_id: str, request_id: str, name: str) -> HttpResponse:
        session = _session(request, session_id)
        data = seed_hls.live_segment(session=session, request_id=request_id, name=name)
        services.session_chunk_served(session=session)
        return hls_response(data, content_type=hls.SEGMENT_CONTENT_TYPE, cache=SEGMENT_CACHE)


class HlsGroupCreateApi(APIView):
    class InputSerializer(HlsCreateInputSerializer):
        count = serializers.IntegerField(default=4, min_value=1, max_value=MAX_GROUP_SESSIONS)

    @extend_schema(
        parameters=[InputSerializer],
        request=None,
        responses={
            200: out.HlsGroupSerializer,
            403: error(QUOTA_SESSIONS),
            404: error("The caller has no avatar of that avatar_id."),
            409: error("The avatar is not ready."),
        },
        tags=["hls"],
        description="`count` HLS sessions on one avatar (the seed's HLS groups).",
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=query_or_form(request))
        data.is_valid(raise_exception=True)
        asked = dict(data.validated_data)
        count = asked.pop("count")
        config = {"count": count, **{key: asked[key] for key in GROUP_CONFIG}}
        owner = authenticated_user(request)
        settings = _session_settings(asked)
        group = hls_group_create(owner=owner, count=count, config=config, **settings)
        sessions = hls_group_sessions(owner=owner, group=group)
        return Response(out.HlsGroupSerializer(hls_group_payload(group, sessions)).data)


class HlsGroupApi(APIView):
    @extend_schema(responses={200: out.HlsGroupSerializer, 404: NOT_FOUND}, tags=["hls"])
    def get(self, request: Request, group_id: str) -> Response:
        owner = authenticated_user(request)
        group = hls_group_get(owner=owner, group_id=group_id)
        payload = hls_group_payload(group, hls_group_sessions(owner=owner, group=group))
        return Response(out.HlsGroupSerializer(payload).data)

    @extend_schema(responses={200: out.HlsGroupDeletedSerializer, 404: NOT_FOUND}, tags=["hls"])
    def delete(self, request: Request, group_id: str) -> Response:
        owner = authenticated_user(request)
        group = hls_group_get(owner=owner, group_id=group_id)
        deleted = hls_group_delete(owner=owner, group=group)
        payload = {"group_id": group_id, "deleted_sessions": deleted, "errors": []}
        return Response(out.HlsGroupDeletedSerializer(payload).data)


class HlsGroupStreamApi(APIView):
    parser_classes = [MultiPartParser, FormParser]
    throttle_classes = [UploadThrottle]
    InputSerializer = HlsSessionStreamApi.InputSerializer

    @extend_schema(
        request=InputSerializer,
        responses={200: out.HlsGroupStreamedSerializer, 404: NOT_FOUND},
        tags=["hls"],
    )
    def post(self, request: Request, group_id: str) -> Response:
        data = self.InputSerializer(data=query_or_form(request))
        data.is_valid(raise_exception=True)
        owner = authenticated_user(request)
        group = hls_group_get(owner=owner, group_id=group_id)
        audio = require_upload(request._request, request.FILES, "audio_file")
        results = hls_group_stream(
            owner=owner, group=group, audio=audio, interrupt=data.validated_data["interrupt"]
        )
        payload = hls_group_stream_payload(group_id, results)
        return Response(out.HlsGroupStreamedSerializer(payload).data)
