"""REST endpoints for avatars and generated videos (the seed's paths, plus the usual REST)."""

from __future__ import annotations

from typing import Any

from django.http import FileResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from avatars import selectors, services
from avatars.models import Avatar, GenerationJob
from avatars.presenters import (
    avatar_payload,
    cache_status,
    job_payload,
    job_seed_status,
    result_path,
)
from musetalk_site.auth import authenticated_user
from musetalk_site.errors import ApplicationError
from musetalk_site.pagination import ListApi, paginate
from musetalk_site.params import query_or_form
from musetalk_site.schema import (
    QUOTA_AVATARS_OR_STORAGE,
    QUOTA_MINUTES,
    QUOTA_STORAGE,
    error,
)
from musetalk_site.throttles import UploadThrottle
from musetalk_site.uploads import optional_upload, require_upload

MULTIPART = [MultiPartParser, FormParser]
PREPARE_WAIT_SECONDS = 900.0
WARM_WAIT_SECONDS = 60.0
MAX_WAIT_SECONDS = 3600.0


def seed_query(name: str, kind: Any, description: str) -> OpenApiParameter:
    """A query parameter of an operation, for the schema."""
    return OpenApiParameter(name, kind, OpenApiParameter.QUERY, description=description)


SEED_QUERY = (
    "Also read from the query string, as the seed's clients send it (it wins over the form)."
)


class AvatarOutputSerializer(serializers.Serializer):
    avatar_id = serializers.CharField()
    status = serializers.ChoiceField(choices=Avatar.Status.choices)
    progress = serializers.IntegerField()
    stage = serializers.CharField()
    error = serializers.CharField()
    frame_count = serializers.IntegerField(allow_null=True)
    fps = serializers.FloatField(allow_null=True)
    width = serializers.IntegerField(allow_null=True)
    height = serializers.IntegerField(allow_null=True)
    size_bytes = serializers.IntegerField(allow_null=True)
    face_backend = serializers.CharField()
    model_profile = serializers.CharField()
    bbox_shift = serializers.IntegerField()
    batch_size = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    prepared_at = serializers.DateTimeField(allow_null=True)
    status_url = serializers.CharField()
    events_url = serializers.CharField()


class AvatarPrepareApi(APIView):
    """``POST /avatars/prepare``: store the video and queue the preparation.

    Our clients send form fields and get the answer at once (``status`` is the avatar's).
    The seed's clients send ``avatar_id`` in the query string and expect the answer when
    the avatar is ready: the request then waits (``wait`` says so either way), up to
    ``timeout_seconds``, and answers the seed's ``status: "success"``; a preparation still
    running then is a 202, a failed one a 422.
    """

    parser_classes = MULTIPART
    throttle_classes = [UploadThrottle]

    class InputSerializer(serializers.Serializer):
        avatar_id = serializers.CharField(max_length=64)
        video_file = serializers.FileField(required=False, help_text="MP4/MOV/WebM video")
        idle_video_file = serializers.FileField(
            required=False,
            help_text="Optional separate clip shown while the avatar is not talking.",
        )
        batch_size = serializers.IntegerField(default=20, min_value=1, max_value=64)
        bbox_shift = serializers.IntegerField(default=0, min_value=-100, max_value=100)
        force_recreate = serializers.BooleanField(default=False)
        wait = serializers.BooleanField(
            allow_null=True,
            default=None,
            help_text="Answer when the avatar is ready (default: when avatar_id is in the "
            "query string, as the seed's clients send it).",
        )
        timeout_seconds = serializers.FloatField(
            default=PREPARE_WAIT_SECONDS, min_value=0, max_value=MAX_WAIT_SECONDS
        )

    class OutputSerializer(AvatarOutputSerializer):
        status = serializers.ChoiceField(
            choices=[*Avatar.Status.choices, ("success", "Success")],
            help_text="The avatar's status; `success` once ready when the request waited.",
        )
        state = serializers.ChoiceField(choices=Avatar.Status.choices)
        video_layout = serializers.ChoiceField(choices=["single_video", "separate_idle_talking"])
        message = serializers.CharField()

    @extend_schema(
        request=InputSerializer,
        parameters=[
            seed_query("avatar_id", str, SEED_QUERY),
            seed_query("batch_size", int, SEED_QUERY),
            seed_query("bbox_shift", int, SEED_QUERY),
            seed_query("force_recreate", bool, SEED_QUERY),
        ],
        responses={
            200: OutputSerializer,
            202: OutputSerializer,
            403: error(QUOTA_AVATARS_OR_STORAGE),
            409: error("The avatar is being prepared already."),
            422: error("The preparation the request waited for failed."),
        },
        tags=["avatars"],
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=query_or_form(request))
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        video = require_upload(request._request, request.FILES, "video_file")
        avatar, queued = services.avatar_prepare_request(
            owner=authenticated_user(request),
            avatar_id=fields["avatar_id"],
            video=video,
            idle_video=optional_upload(request._request, request.FILES, "idle_video_file"),
            batch_size=fields["batch_size"],
            bbox_shift=fields["bbox_shift"],
            force_recreate=fields["force_recreate"],
        )
        wait = fields["wait"]
        if wait is None:
            wait = "avatar_id" in request.query_params and "avatar_id" not in request.data
        if not wait:
            message = (
                "Preparation queued."
                if queued
                else "Avatar already prepared; send force_recreate=true to replace it."
            )
            return Response(self._out(avatar, avatar.status, message))
        avatar = selectors.avatar_wait_prepared(
            avatar=avatar, timeout_seconds=fields["timeout_seconds"]
        )
        return self._waited(avatar, queued)

    def _out(self, avatar: Avatar, status: str, message: str) -> dict[str, Any]:
        layout = "separate_idle_talking" if avatar.idle_video.name else "single_video"
        payload = {**avatar_payload(avatar), "state": avatar.status, "video_layout": layout}
        return self.OutputSerializer({**payload, "status": status, "message": message}).data

    def _waited(self, avatar: Avatar, queued: bool) -> Response:
        # A failed re-preparation leaves the avatar ready on its earlier assets, with an error.
        if avatar.status == Avatar.Status.FAILED or (queued and avatar.error):
            raise ApplicationError(
                f"Preparation of avatar {avatar.avatar_id!r} failed: {avatar.error}",
                {"avatar_id": avatar.avatar_id, "status": avatar.status},
                status=422,
            )
        if avatar.status != Avatar.Status.READY:
            message = "Still preparing; follow events_url or status_url."
            return Response(self._out(avatar, avatar.status, message), status=202)
        message = f"Avatar {avatar.avatar_id} prepared successfully"
        return Response(self._out(avatar, "success", message))


class AvatarListApi(ListApi):
    """``GET /avatars/``: the caller's avatars, newest first, a page at a time."""

    @extend_schema(responses={200: AvatarOutputSerializer(many=True)}, tags=["avatars"])
    def get(self, request: Request) -> Response:
        avatars = selectors.avatar_list_for_user(user=authenticated_user(request))
        return paginate(request, self, avatars, lambda a: avatar_payload(a), AvatarOutputSerializer)


class AvatarThumbnailApi(APIView):
    """``GET /avatars/{id}/thumbnail``: a still of the prepared face, 256x256 JPEG."""

    @extend_schema(
        responses={(200, "image/jpeg"): bytes, 404: error("No such avatar, or not prepared.")},
        tags=["avatars"],
    )
    def get(self, request: Request, avatar_id: str) -> FileResponse:
        avatar = selectors.avatar_get_for_user(
            user=authenticated_user(request), avatar_id=avatar_id
        )
        path = services.avatar_thumbnail(avatar=avatar)
        response = FileResponse(path.open("rb"), content_type="image/jpeg")
        response["Cache-Control"] = "private, max-age=300"
        return response


class AvatarDetailApi(APIView):
    @extend_schema(responses={200: AvatarOutputSerializer}, tags=["avatars"])
    def get(self, request: Request, avatar_id: str) -> Response:
        avatar = selectors.avatar_get_for_user(
            user=authenticated_user(request), avatar_id=avatar_id
        )
        return Response(AvatarOutputSerializer(avatar_payload(avatar)).data)

    class DeleteOutputSerializer(serializers.Serializer):
        status = serializers.CharField()
        avatar_id = serializers.CharField()
        evicted_from_cache = serializers.BooleanField()
        deleted_from_disk = serializers.BooleanField()
        disk_path = serializers.CharField(allow_null=True)
        message = serializers.CharField()

    @extend_schema(
        parameters=[
            seed_query("from_disk", bool, "Also delete the avatar, its files and its videos.")
        ],
        responses={200: DeleteOutputSerializer, 400: error("`from_disk` is not a boolean.")},
        tags=["avatars"],
    )
    def delete(self, request: Request, avatar_id: str) -> Response:
        """As the seed: evict the avatar from the workers' caches, keeping it; with
        ``?from_disk=true``, delete it with its files and videos (404 afterwards)."""
        avatar = selectors.avatar_get_for_user(
            user=authenticated_user(request), avatar_id=avatar_id
        )
        from_disk = serializers.BooleanField().to_internal_value(
            request.query_params.get("from_disk", "false")
        )
        cached = cache_status(avatar)["cached"]
        if from_disk:
            services.avatar_delete(avatar=avatar)
            message = f"Avatar {avatar_id} permanently deleted"
        else:
            services.avatar_cache_clear(avatar=avatar)
            message = f"Avatar {avatar_id} evicted from cache (still on disk)"
        payload = {
            "status": "success",
            "avatar_id": avatar_id,
            "evicted_from_cache": cached,
            "deleted_from_disk": from_disk,
            "disk_path": avatar.storage_key if from_disk else None,
            "message": message,
        }
        return Response(self.DeleteOutputSerializer(payload).data)


class AvatarCacheOutputSerializer(serializers.Serializer):
    avatar_id = serializers.CharField()
    status = serializers.CharField(
        help_text="The seed's word: ready (cached), not_cached, missing, queued or failed."
    )
    cached = serializers.BooleanField()
    disk_prepared = serializers.BooleanField()
    workers = serializers.ListField(child=serializers.DictField())


class AvatarCacheStatusApi(APIView):
    """``GET /avatars/{id}/cache/status``: which generation workers hold the avatar."""

    @extend_schema(responses={200: AvatarCacheOutputSerializer}, tags=["avatars"])
    def get(self, request: Request, avatar_id: str) -> Response:
        avatar = selectors.avatar_get_for_user(
            user=authenticated_user(request), avatar_id=avatar_id
        )
        return Response(AvatarCacheOutputSerializer(cache_status(avatar)).data)


class AvatarCacheWarmApi(APIView):
    """``POST /avatars/{id}/cache/warm``: ask a generation worker to load the avatar.

    As the seed: 202 with ``status: "queued"``; with ``?wait=true``, the answer comes when the
    worker has loaded it (200, ``status: "ready"``), failed to (500, an error whose
    ``extra.status`` is ``"failed"``), or after ``timeout_seconds`` (202, still queued)."""

    class InputSerializer(serializers.Serializer):
        wait = serializers.BooleanField(default=False)
        timeout_seconds = serializers.FloatField(
            default=WARM_WAIT_SECONDS, min_value=0, max_value=MAX_WAIT_SECONDS
        )
        batch_size = serializers.IntegerField(
            default=2, min_value=1, max_value=64, help_text="Accepted for the seed's clients."
        )

    class OutputSerializer(AvatarCacheOutputSerializer):
        message = serializers.CharField()

    @extend_schema(
        request=None,
        parameters=[InputSerializer],
        responses={
            200: OutputSerializer,
            202: OutputSerializer,
            409: error("The avatar is not ready, or its prepared files are missing."),
            500: error("The worker could not load the avatar (`extra.error`)."),
        },
        tags=["avatars"],
    )
    def post(self, request: Request, avatar_id: str) -> Response:
        data = self.InputSerializer(data=request.query_params)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        avatar = selectors.avatar_get_for_user(
            user=authenticated_user(request), avatar_id=avatar_id
        )
        reply_key = services.avatar_cache_warm(avatar=avatar)
        outcome = None
        if fields["wait"]:
            outcome = services.avatar_cache_warm_wait(
                reply_key=reply_key, timeout_seconds=fields["timeout_seconds"]
            )
        return self._answer(avatar, outcome)

    def _answer(self, avatar: Avatar, outcome: dict[str, Any] | None) -> Response:
        payload: dict[str, Any] = {**cache_status(avatar)}
        if outcome is None:
            payload.update(status="queued", message="Warming queued.")
            return Response(self.OutputSerializer(payload).data, status=202)
        if outcome["status"] == "ready":
            payload.update(status="ready", cached=True, message="Avatar loaded.")
            return Response(self.OutputSerializer(payload).data)
        raise ApplicationError(
            f"Avatar {avatar.avatar_id!r} could not be loaded: {outcome.get('error', '')}",
            {"avatar_id": avatar.avatar_id, "status": "failed", "error": outcome.get("error")},
            status=500,
        )


class AvatarCacheClearApi(APIView):
    """``DELETE /avatars/{id}/cache``: ask the generation workers to drop the avatar."""

    class OutputSerializer(AvatarCacheOutputSerializer):
        message = serializers.CharField()

    @extend_schema(responses={200: OutputSerializer}, tags=["avatars"])
    def delete(self, request: Request, avatar_id: str) -> Response:
        avatar = selectors.avatar_get_for_user(
            user=authenticated_user(request), avatar_id=avatar_id
        )
        services.avatar_cache_clear(avatar=avatar)
        payload = {**cache_status(avatar), "message": "Eviction queued."}
        return Response(self.OutputSerializer(payload).data)


class JobOutputSerializer(serializers.Serializer):
    request_id = serializers.CharField()
    avatar_id = serializers.CharField()
    status = serializers.ChoiceField(choices=GenerationJob.Status.choices)
    state = serializers.ChoiceField(choices=GenerationJob.Status.choices)
    output_name = serializers.CharField()
    progress = serializers.IntegerField()
    error = serializers.CharField()
    batch_size = serializers.IntegerField()
    fps = serializers.IntegerField()
    frame_count = serializers.IntegerField(allow_null=True)
    duration_seconds = serializers.FloatField(allow_null=True)
    status_url = serializers.CharField()
    events_url = serializers.CharField()
    download_url = serializers.CharField(allow_null=True)
    queued_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    first_frame_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    timings = serializers.DictField(child=serializers.FloatField(allow_null=True))


class JobCreateApi(APIView):
    parser_classes = MULTIPART
    throttle_classes = [UploadThrottle]

    class InputSerializer(serializers.Serializer):
        avatar_id = serializers.CharField(max_length=64)
        audio_file = serializers.FileField(
            required=False, help_text="Audio, judged by its content (WAV, MP3, M4A, OGG, ...)"
        )
        batch_size = serializers.IntegerField(default=2, min_value=1, max_value=64)
        fps = serializers.IntegerField(default=25, min_value=1, max_value=60)
        output_name = serializers.RegexField(
            r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
            default="",
            help_text="The name the video is downloaded under (without .mp4).",
        )

    class OutputSerializer(JobOutputSerializer):
        message = serializers.CharField()

    @extend_schema(
        request=InputSerializer,
        parameters=[
            seed_query("avatar_id", str, SEED_QUERY),
            seed_query("batch_size", int, SEED_QUERY),
            seed_query("fps", int, SEED_QUERY),
            seed_query("output_name", str, SEED_QUERY),
        ],
        responses={
            200: OutputSerializer,
            403: error(QUOTA_STORAGE),
            404: error("The caller has no avatar of that avatar_id."),
            409: error("The avatar is not ready."),
            429: error(QUOTA_MINUTES),
        },
        tags=["generate"],
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=query_or_form(request))
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        audio = require_upload(request._request, request.FILES, "audio_file")
        job = services.job_create(
            owner=authenticated_user(request),
            avatar_id=fields["avatar_id"],
            audio=audio,
            batch_size=fields["batch_size"],
            fps=fields["fps"],
            output_name=fields["output_name"],
        )
        payload = {**job_payload(job), "message": "Generation queued."}
        return Response(self.OutputSerializer(payload).data)


class JobListApi(ListApi):
    """``GET /generate/``: the caller's generation jobs, newest first, a page at a time."""

    @extend_schema(responses={200: JobOutputSerializer(many=True)}, tags=["generate"])
    def get(self, request: Request) -> Response:
        jobs = selectors.job_list_for_user(user=authenticated_user(request))
        return paginate(request, self, jobs, job_payload, JobOutputSerializer)


class JobSeedResultSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    output_path = serializers.CharField(help_text="Where the video is downloaded.")


class JobStatusApi(APIView):
    """``GET /generate/{id}/status``: ``status`` is the seed's word (``processing``,
    ``completed`` with ``result``, ``failed`` with ``error``); ``state`` is ours."""

    class OutputSerializer(JobOutputSerializer):
        status = serializers.ChoiceField(choices=["processing", "completed", "failed"])
        result = JobSeedResultSerializer(required=False)

    @extend_schema(responses={200: OutputSerializer}, tags=["generate"])
    def get(self, request: Request, request_id: str) -> Response:
        job = selectors.job_get_for_user(user=authenticated_user(request), request_id=request_id)
        return Response(self.OutputSerializer(job_seed_status(job)).data)


class JobCancelApi(APIView):
    @extend_schema(
        request=None,
        responses={200: JobOutputSerializer, 409: error("The job has finished already.")},
        tags=["generate"],
    )
    def post(self, request: Request, request_id: str) -> Response:
        job = selectors.job_get_for_user(user=authenticated_user(request), request_id=request_id)
        job = services.job_cancel(job=job)
        return Response(JobOutputSerializer(job_payload(job)).data)


class JobDeleteApi(APIView):
    """``DELETE /generate/{id}``: delete a finished job, its uploaded audio and its video."""

    @extend_schema(
        responses={
            204: None,
            404: error("The caller has no job of that request_id."),
            409: error("The job is queued or running: cancel it first."),
        },
        tags=["generate"],
    )
    def delete(self, request: Request, request_id: str) -> Response:
        job = selectors.job_get_for_user(user=authenticated_user(request), request_id=request_id)
        services.job_delete(job=job)
        return Response(status=204)


class JobDownloadApi(APIView):
    @extend_schema(
        responses={
            (200, "video/mp4"): bytes,
            409: error("The job has not succeeded (or its video is gone)."),
        },
        tags=["generate"],
    )
    def get(self, request: Request, request_id: str) -> FileResponse:
        job = selectors.job_get_for_user(user=authenticated_user(request), request_id=request_id)
        path = result_path(job)
        if job.status != GenerationJob.Status.SUCCEEDED or path is None:
            raise ApplicationError(
                f"The video of {request_id} is not available (status: {job.status}).",
                {"request_id": request_id, "status": job.status},
                status=409,
            )
        return FileResponse(
            path.open("rb"),
            as_attachment=True,
            filename=f"{job.output_name or request_id}.mp4",
            content_type="video/mp4",
        )
