"""REST endpoints of streaming sessions (the seed's paths and JSON keys, plus the usual REST)."""

from __future__ import annotations

from django.conf import settings
from django.http import FileResponse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from musetalk_site.auth import TOKEN_PARAM, authenticated_user
from musetalk_site.capacity import CAPACITY_FULL
from musetalk_site.pagination import ListApi, paginate
from musetalk_site.params import query_or_form
from musetalk_site.schema import QUOTA_MINUTES, QUOTA_SESSIONS, error
from musetalk_site.throttles import UploadThrottle
from musetalk_site.uploads import require_upload
from sessions_app import selectors, services
from sessions_app.models import StreamSession
from sessions_app.presenters import (
    session_created_payload,
    session_payload,
    session_stats_payload,
    sessions_live_payload,
)
from sessions_app.seed_hls_serializers import HlsBriefSerializer
from sessions_app.tokens import ACCESS_TOKEN_QUERY, player_url


class ConfigSerializer(serializers.Serializer):
    batch_size = serializers.IntegerField()
    fps = serializers.IntegerField()
    chunk_duration = serializers.FloatField()


class RequestSerializer(serializers.Serializer):
    request_id = serializers.CharField()
    status = serializers.CharField()
    total_chunks = serializers.IntegerField(allow_null=True)
    error = serializers.CharField()
    queued_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    first_chunk_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    engine_timings = serializers.DictField(
        child=serializers.FloatField(),
        help_text="Where the first frame's time went in the engine, in ms (set when it ends)",
    )


class ChunkSerializer(serializers.Serializer):
    url = serializers.CharField()
    index = serializers.IntegerField()
    duration = serializers.FloatField()
    creation_time = serializers.DateTimeField()


class SessionOutputSerializer(serializers.Serializer):
    session_id = serializers.CharField()
    avatar_id = serializers.CharField()
    user_id = serializers.CharField()
    kind = serializers.ChoiceField(choices=StreamSession.Kind.choices)
    status = serializers.ChoiceField(choices=StreamSession.Status.choices)
    config = serializers.DictField()
    created_at = serializers.DateTimeField()
    last_activity_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    expires_in_seconds = serializers.IntegerField()
    ended_at = serializers.DateTimeField(allow_null=True)
    chunks_served = serializers.IntegerField()
    events_url = serializers.CharField()
    last_event_id = serializers.IntegerField()
    active_request = RequestSerializer(allow_null=True)
    current_request = RequestSerializer(allow_null=True)
    chunks = ChunkSerializer(many=True)
    active_stream = serializers.CharField(
        allow_null=True, help_text="The seed's key: the request id of the active utterance"
    )
    last_activity = serializers.FloatField(help_text="Epoch seconds (the seed's key)")
    age_seconds = serializers.FloatField()
    idle_seconds = serializers.FloatField()


# What creating a session of any kind may answer besides 200.
SESSION_CREATE_ERRORS = {
    403: error(QUOTA_SESSIONS),
    404: error("The caller has no avatar of that avatar_id."),
    409: error("The avatar is not ready."),
    429: error(CAPACITY_FULL),
}


class SessionCreateApi(APIView):
    class InputSerializer(serializers.Serializer):
        avatar_id = serializers.CharField(max_length=64)
        user_id = serializers.CharField(max_length=128, required=False, default="")
        batch_size = serializers.IntegerField(default=2, min_value=1, max_value=64)
        fps = serializers.IntegerField(default=25, min_value=1, max_value=60)
        chunk_duration = serializers.FloatField(default=2.0, min_value=0.2, max_value=30.0)
        wait = serializers.BooleanField(
            default=False, help_text="At capacity, wait up to wait_seconds for room before 429"
        )
        wait_seconds = serializers.FloatField(
            default=30.0, min_value=0.0, help_text="At most 30 (longer waits are cut to 30)"
        )

    class OutputSerializer(serializers.Serializer):
        session_id = serializers.CharField()
        player_url = serializers.CharField()
        avatar_id = serializers.CharField()
        user_id = serializers.CharField()
        config = serializers.DictField()
        expires_in_seconds = serializers.IntegerField()

    @extend_schema(
        parameters=[InputSerializer],
        request=None,
        responses={200: OutputSerializer, **SESSION_CREATE_ERRORS},
        tags=["sessions"],
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=query_or_form(request))
        data.is_valid(raise_exception=True)
        session = services.session_create(owner=authenticated_user(request), **data.validated_data)
        return Response(self.OutputSerializer(session_created_payload(session)).data)


class SessionStreamApi(APIView):
    parser_classes = [MultiPartParser, FormParser]
    throttle_classes = [UploadThrottle]

    class InputSerializer(serializers.Serializer):
        audio_file = serializers.FileField(required=False, help_text="WAV/MP3/M4A/OGG audio")
        interrupt = serializers.BooleanField(default=False)
        wait = serializers.BooleanField(
            default=False, help_text="At capacity, queue the utterance (202) instead of 429"
        )

    class OutputSerializer(serializers.Serializer):
        request_id = serializers.CharField()
        session_id = serializers.CharField()
        status = serializers.CharField(help_text="streaming, or queued (202)")
        message = serializers.CharField()
        queued = serializers.BooleanField(required=False, help_text="Only in a 202")
        eta_seconds = serializers.IntegerField(
            required=False, help_text="Only in a 202: about when a worker takes it"
        )

    @extend_schema(
        request=InputSerializer,
        responses={
            200: OutputSerializer,
            202: OutputSerializer,
            409: error("Another utterance is streaming (send interrupt=true to replace it)."),
            410: error("The session has ended or expired."),
            429: error(f"{QUOTA_MINUTES} Or: {CAPACITY_FULL}"),
        },
        tags=["sessions"],
    )
    def post(self, request: Request, session_id: str) -> Response:
        data = self.InputSerializer(data=query_or_form(request))
        data.is_valid(raise_exception=True)
        session = selectors.session_get_for_user(
            user=authenticated_user(request), session_id=session_id
        )
        audio = require_upload(request._request, request.FILES, "audio_file")
        stream, admission = services.session_stream_admit(
            session=session,
            audio=audio,
            interrupt=data.validated_data["interrupt"],
            wait=data.validated_data["wait"],
        )
        payload: dict[str, object] = {
            "request_id": stream.request_id,
            "session_id": session.session_id,
            "status": "streaming",
            "message": "Stream started. WebView will receive chunks automatically.",
        }
        if not admission.queued:
            return Response(self.OutputSerializer(payload).data)
        payload.update(
            status="queued",
            message=f"Queued: the platform is at capacity; it starts in about "
            f"{admission.eta_seconds} s. WebView will receive chunks automatically.",
            queued=True,
            eta_seconds=admission.eta_seconds,
        )
        return Response(self.OutputSerializer(payload).data, status=202)


class SessionListApi(ListApi):
    """``GET /sessions/``: the caller's sessions, newest first, a page at a time."""

    @extend_schema(responses={200: SessionOutputSerializer(many=True)}, tags=["sessions"])
    def get(self, request: Request) -> Response:
        sessions = selectors.session_list_for_user(user=authenticated_user(request))
        return paginate(request, self, sessions, session_payload, SessionOutputSerializer)


class SessionDetailApi(APIView):
    """``GET /sessions/{id}/status``: an open session. As in the seed API, an ended (deleted)
    or expired session is not found any more; ``GET /sessions/`` still lists it."""

    permission_classes = [AllowAny]  # the owner, or a player token of this session

    @extend_schema(
        parameters=[ACCESS_TOKEN_QUERY],
        responses={
            200: SessionOutputSerializer,
            404: error("No such open session (ended, deleted or expired)."),
        },
        tags=["sessions"],
    )
    def get(self, request: Request, session_id: str) -> Response:
        session = selectors.session_get_open_for_access(
            user=request.user, token=request.query_params.get(TOKEN_PARAM), session_id=session_id
        )
        return Response(SessionOutputSerializer(session_payload(session)).data)


class SessionDeleteApi(APIView):
    class OutputSerializer(serializers.Serializer):
        session_id = serializers.CharField()
        status = serializers.CharField(help_text="deleted")
        message = serializers.CharField()

    @extend_schema(
        responses={200: OutputSerializer, 404: error("No such open session (deleted already).")},
        tags=["sessions"],
    )
    def delete(self, request: Request, session_id: str) -> Response:
        # As in the seed API: an ended or expired session is not found any more.
        session = selectors.session_get_open_for_user(
            user=authenticated_user(request), session_id=session_id
        )
        session = services.session_delete(session=session)
        payload = {
            "session_id": session.session_id,
            "status": "deleted",
            "message": "Session ended; its chunks were deleted.",
        }
        return Response(self.OutputSerializer(payload).data)


class SessionInterruptApi(APIView):
    class OutputSerializer(serializers.Serializer):
        session_id = serializers.CharField()
        interrupted = serializers.ListField(child=serializers.CharField())

    @extend_schema(
        request=None,
        responses={200: OutputSerializer, 410: error("The session has ended or expired.")},
        tags=["sessions"],
    )
    def post(self, request: Request, session_id: str) -> Response:
        session = selectors.session_get_for_user(
            user=authenticated_user(request), session_id=session_id
        )
        stopped = services.session_interrupt(session=session)
        payload = {"session_id": session.session_id, "interrupted": stopped}
        return Response(self.OutputSerializer(payload).data)


class SessionKeepaliveApi(APIView):
    class OutputSerializer(serializers.Serializer):
        session_id = serializers.CharField()
        expires_at = serializers.DateTimeField()
        expires_in_seconds = serializers.IntegerField()
        player_url = serializers.CharField()

    @extend_schema(
        request=None,
        responses={200: OutputSerializer, 410: error("The session has ended or expired.")},
        tags=["sessions"],
    )
    def post(self, request: Request, session_id: str) -> Response:
        session = selectors.session_get_for_user(
            user=authenticated_user(request), session_id=session_id
        )
        session = services.session_keepalive(session=session)
        payload = {
            "session_id": session.session_id,
            "expires_at": session.expires_at,
            "expires_in_seconds": settings.SESSION_TTL_SECONDS,
            "player_url": player_url(session_id=session.session_id),  # a fresh token
        }
        return Response(self.OutputSerializer(payload).data)


class OpenSessionSerializer(serializers.Serializer):
    """An open session as the seed's stats and live lists show it."""

    session_id = serializers.CharField()
    user_id = serializers.CharField(allow_null=True)
    avatar_id = serializers.CharField()
    kind = serializers.ChoiceField(choices=StreamSession.Kind.choices)
    active_stream = serializers.CharField(allow_null=True)
    age_seconds = serializers.FloatField()
    idle_seconds = serializers.FloatField()
    batch_size = serializers.IntegerField()
    fps = serializers.IntegerField()
    chunk_duration = serializers.FloatField()


class SessionStatsApi(APIView):
    class OutputSerializer(serializers.Serializer):
        scope = serializers.ChoiceField(choices=["user", "all"])
        active_sessions = serializers.IntegerField()
        active_streams = serializers.IntegerField()
        total_sessions = serializers.IntegerField()
        total_streams = serializers.IntegerField()
        chunks_generated = serializers.IntegerField()
        chunks_served = serializers.IntegerField()
        sessions = OpenSessionSerializer(many=True, help_text="The open sessions (the seed's)")

    @extend_schema(responses={200: OutputSerializer}, tags=["sessions"])
    def get(self, request: Request) -> Response:
        payload = session_stats_payload(authenticated_user(request))
        return Response(self.OutputSerializer(payload).data)


class SessionLiveApi(APIView):
    """``GET /sessions/live``: the open sessions speaking now, by kind (the seed's)."""

    class OutputSerializer(serializers.Serializer):
        total_live = serializers.IntegerField()
        session_streams = OpenSessionSerializer(many=True)
        hls_streams = HlsBriefSerializer(many=True)
        webrtc_streams = serializers.ListField(child=serializers.DictField())

    @extend_schema(responses={200: OutputSerializer}, tags=["sessions"])
    def get(self, request: Request) -> Response:
        payload = sessions_live_payload(authenticated_user(request))
        return Response(self.OutputSerializer(payload).data)


class ChunkFileApi(APIView):
    permission_classes = [AllowAny]  # the owner, or a player token of the chunk's session

    @extend_schema(
        parameters=[ACCESS_TOKEN_QUERY], responses={(200, "video/mp4"): bytes}, tags=["sessions"]
    )
    def get(self, request: Request, request_id: str, name: str) -> FileResponse:
        path, session = selectors.chunk_get_for_access(
            user=request.user,
            token=request.query_params.get(TOKEN_PARAM),
            request_id=request_id,
            name=name,
        )
        services.session_chunk_served(session=session)
        return FileResponse(path.open("rb"), content_type="video/mp4")
