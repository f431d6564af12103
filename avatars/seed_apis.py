"""The seed's read-only avatar endpoints: its avatar list, the idle clip players show
first (with byte ranges for media elements), and its idle pose list."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.http import FileResponse, HttpResponse, StreamingHttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from avatars import selectors
from avatars.apis import AvatarOutputSerializer, seed_query
from avatars.presenters import avatar_idle_poses, avatar_seed_entry
from musetalk_site.auth import authenticated_user
from musetalk_site.errors import ApplicationError
from musetalk_site.schema import error


class AvatarSeedEntrySerializer(AvatarOutputSerializer):
    version = serializers.CharField()
    video_layout = serializers.ChoiceField(choices=["single_video", "separate_idle_talking"])
    has_idle_video = serializers.BooleanField()
    idle_poses = serializers.ListField(child=serializers.DictField())
    video_url = serializers.CharField()


class AvatarSeedListApi(APIView):
    """``GET /avatars/list``: the caller's prepared avatars, the seed's ``{"avatars": [...]}``."""

    class OutputSerializer(serializers.Serializer):
        avatars = AvatarSeedEntrySerializer(many=True)

    @extend_schema(responses={200: OutputSerializer}, tags=["avatars"])
    def get(self, request: Request) -> Response:
        avatars = selectors.avatar_list_prepared_for_user(user=authenticated_user(request))
        return Response(
            self.OutputSerializer({"avatars": [avatar_seed_entry(a) for a in avatars]}).data
        )


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CHUNK_BYTES = 256 * 1024


def _file_part(path: Path, start: int, length: int) -> Iterator[bytes]:
    with path.open("rb") as handle:
        handle.seek(start)
        while length > 0:
            data = handle.read(min(_CHUNK_BYTES, length))
            if not data:
                return
            length -= len(data)
            yield data


def ranged_file_response(
    request: Request, path: Path, content_type: str
) -> FileResponse | StreamingHttpResponse:
    """``path`` whole (200) or the one byte range a media element asks for (206, or 416)."""
    size = path.stat().st_size
    match = _RANGE.match(request.headers.get("Range", "").replace(" ", ""))
    if match is None or match.groups() == ("", ""):
        response: Any = FileResponse(path.open("rb"), content_type=content_type)
    else:
        first, last = match.groups()
        start = int(first) if first else max(0, size - int(last))
        end = min(int(last), size - 1) if first and last else size - 1
        if start >= size or start > end:
            raise ApplicationError(
                f"The range {first}-{last} is outside the file's {size} bytes.",
                {"size": size},
                status=416,
            )
        response = StreamingHttpResponse(
            _file_part(path, start, end - start + 1), status=206, content_type=content_type
        )
        response["Content-Length"] = str(end - start + 1)
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
    response["Accept-Ranges"] = "bytes"
    return response


class AvatarVideoApi(APIView):
    """``GET /avatars/{id}/video``: the idle loop players show first (``role=idle``), or the
    source video (``role=talking``/``input``); byte ranges are served for media elements."""

    @extend_schema(
        parameters=[seed_query("role", str, "idle (the default), talking or input")],
        responses={
            (200, "video/mp4"): bytes,
            (206, "video/mp4"): bytes,
            400: error("`role` is not idle, talking or input."),
            416: error("The byte range asked for is outside the file."),
        },
        tags=["avatars"],
    )
    def get(self, request: Request, avatar_id: str) -> HttpResponse | StreamingHttpResponse:
        avatar = selectors.avatar_get_for_user(
            user=authenticated_user(request), avatar_id=avatar_id
        )
        role = request.query_params.get("role", "idle").strip().lower() or "idle"
        path, content_type = selectors.avatar_video_file(avatar=avatar, role=role)
        response = ranged_file_response(request, path, content_type)
        response["Cache-Control"] = "private, max-age=300"
        name = f"{avatar.avatar_id}_{role}{path.suffix}"
        response["Content-Disposition"] = f'inline; filename="{name}"'
        return response


class AvatarIdlePosesApi(APIView):
    """``GET /avatars/{id}/idle-poses``: the seed's list of idle loops (here, the one each
    avatar has, as its ``default`` pose)."""

    class OutputSerializer(serializers.Serializer):
        avatar_id = serializers.CharField()
        idle_poses = serializers.ListField(child=serializers.DictField())

    @extend_schema(responses={200: OutputSerializer}, tags=["avatars"])
    def get(self, request: Request, avatar_id: str) -> Response:
        avatar = selectors.avatar_get_for_user(
            user=authenticated_user(request), avatar_id=avatar_id
        )
        payload = {"avatar_id": avatar.avatar_id, "idle_poses": avatar_idle_poses(avatar)}
        return Response(self.OutputSerializer(payload).data)
