"""``POST /generate/stream``: the seed API's live generation, its chunk events in the answer
(see ``sessions_app/generate_stream.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from channels.db import database_sync_to_async
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.views import APIView

from musetalk_site.auth import authenticated_user
from musetalk_site.params import query_or_form
from musetalk_site.schema import QUOTA_MINUTES, QUOTA_SESSIONS, error
from musetalk_site.sse import KEEPALIVE, sse_format, sse_response
from musetalk_site.throttles import UploadThrottle
from musetalk_site.uploads import require_upload
from sessions_app.feeds import session_event_stream
from sessions_app.generate_stream import (
    SEED_EVENTS_THAT_END,
    GeneratedStream,
    generate_stream_finish,
    generate_stream_start,
    seed_event,
)

EVENTS = (
    "Server-sent events, `data:` lines only, as the seed writes them: `chunk` (`url` of the "
    "chunk as fragmented MP4 with a token, `index`, `total_chunks`, `duration`, "
    "`creation_time`), then `complete` (`total_chunks`) or `error` (`message`), which ends it."
)

# The seed's clients send these in the query string.
QUERY_FIELDS = (("avatar_id", str), ("batch_size", int), ("fps", int), ("chunk_duration", float))


class GenerateStreamApi(APIView):
    parser_classes = [MultiPartParser, FormParser]
    throttle_classes = [UploadThrottle]

    class InputSerializer(serializers.Serializer):
        avatar_id = serializers.CharField(max_length=64)
        audio_file = serializers.FileField(required=False, help_text="WAV/MP3/M4A/OGG audio")
        batch_size = serializers.IntegerField(default=2, min_value=1, max_value=64)
        fps = serializers.IntegerField(default=15, min_value=1, max_value=60)
        chunk_duration = serializers.FloatField(default=2.0, min_value=0.2, max_value=30.0)

    @extend_schema(
        parameters=[
            OpenApiParameter(name, kind, required=False, description="Or as a form field.")
            for name, kind in QUERY_FIELDS
        ],
        request=InputSerializer,
        responses={
            (200, "text/event-stream"): OpenApiResponse(str, description=EVENTS),
            403: error(QUOTA_SESSIONS),
            404: error("The caller has no avatar of that avatar_id."),
            409: error("The avatar is not ready."),
            429: error(QUOTA_MINUTES),
        },
        tags=["sessions"],
    )
    def post(self, request: Request) -> StreamingHttpResponse:
        data = self.InputSerializer(data=query_or_form(request))
        data.is_valid(raise_exception=True)
        fields = {key: value for key, value in data.validated_data.items() if key != "audio_file"}
        audio = require_upload(request._request, request.FILES, "audio_file")
        stream = generate_stream_start(owner=authenticated_user(request), audio=audio, **fields)
        return sse_response(generated_frames(stream))


async def generated_frames(stream: GeneratedStream) -> AsyncIterator[str]:
    """The answer's frames: ``data:`` only (the seed's clients read nothing else; no ids),
    until ``complete`` or ``error``."""
    session = stream.session
    try:
        async for event in session_event_stream(session, 0):
            if event is None:
                yield KEEPALIVE
                continue
            payload = seed_event(event.payload, session_id=session.session_id)
            if payload is None:
                continue
            yield sse_format(payload)
            if payload["event"] in SEED_EVENTS_THAT_END:
                return
    finally:
        await _finish(session.pk)


@database_sync_to_async
def _finish(session_pk: int) -> None:
    generate_stream_finish(session_pk=session_pk)
