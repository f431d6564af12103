"""REST endpoints for avatars and generated videos (the seed's paths, plus the usual REST)."""

from __future__ import annotations

from django.http import FileResponse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from avatars import selectors, services
from avatars.models import Avatar, GenerationJob
from avatars.presenters import avatar_payload, cache_status, job_payload, result_path
from musetalk_site.auth import authenticated_user
from musetalk_site.errors import ApplicationError
from musetalk_site.pagination import ListApi, paginate
from musetalk_site.schema import (
    QUOTA_AVATARS_OR_STORAGE,
    QUOTA_MINUTES,
    QUOTA_STORAGE,
    error,
)
from musetalk_site.throttles import UploadThrottle
from musetalk_site.uploads import require_upload

MULTIPART = [MultiPartParser, FormParser]


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
    parser_classes = MULTIPART
    throttle_classes = [UploadThrottle]

    class InputSerializer(serializers.Serializer):
        avatar_id = serializers.CharField(max_length=64)
        video_file = serializers.FileField(required=False, help_text="MP4/MOV/WebM video")
        batch_size = serializers.IntegerField(default=20, min_value=1, max_value=64)
        bbox_shift = serializers.IntegerField(default=0, min_value=-100, max_value=100)
        force_recreate = serializers.BooleanField(default=False)

    class OutputSerializer(AvatarOutputSerializer):
        message = serializers.CharField()

    @extend_schema(
        request=InputSerializer,
        responses={
            200: OutputSerializer,
            403: error(QUOTA_AVATARS_OR_STORAGE),
            409: error("The avatar is being prepared already."),
        },
        tags=["avatars"],
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        video = require_upload(request._request, request.FILES, "video_file")
        avatar, queued = services.avatar_prepare_request(
            owner=authenticated_user(request),
            avatar_id=fields["avatar_id"],
            video=video,
            batch_size=fields["batch_size"],
            bbox_shift=fields["bbox_shift"],
            force_recreate=fields["force_recreate"],
        )
        message = (
            "Preparation queued."
            if queued
            else "Avatar already prepared; send force_recreate=true to replace it."
        )
        return Response(self.OutputSerializer({**avatar_payload(avatar), "message": message}).data)


class AvatarListApi(ListApi):
    """``GET /avatars/``: the caller's avatars, newest first, a page at a time."""

    @extend_schema(responses={200: AvatarOutputSerializer(many=True)}, tags=["avatars"])
    def get(self, request: Request) -> Response:
        avatars = selectors.avatar_list_for_user(user=authenticated_user(request))
        return paginate(request, self, avatars, lambda a: avatar_payload(a), AvatarOutputSerializer)


class AvatarDetailApi(APIView):
    @extend_schema(responses={200: AvatarOutputSerializer}, tags=["avatars"])
    def get(self, request: Request, avatar_id: str) -> Response:
        avatar = selectors.avatar_get_for_user(
            user=authenticated_user(request), avatar_id=avatar_id
        )
        return Response(AvatarOutputSerializer(avatar_payload(avatar)).data)

    @extend_schema(responses={204: None}, tags=["avatars"])
    def delete(self, request: Request, avatar_id: str) -> Response:
        avatar = selectors.avatar_get_for_user(
            user=authenticated_user(request), avatar_id=avatar_id
        )
        services.avatar_delete(avatar=avatar)
        return Response(status=204)


class AvatarCacheOutputSerializer(serializers.Serializer):
    avatar_id = serializers.CharField()
    cached = serializers.BooleanField()
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
    """``POST /avatars/{id}/cache/warm``: ask the generation workers to load the avatar."""

    class OutputSerializer(AvatarCacheOutputSerializer):
        message = serializers.CharField()

    @extend_schema(
        request=None,
        responses={200: OutputSerializer, 409: error("The avatar is not ready.")},
        tags=["avatars"],
    )
    def post(self, request: Request, avatar_id: str) -> Response:
        avatar = selectors.avatar_get_for_user(
            user=authenticated_user(request), avatar_id=avatar_id
        )
        services.avatar_cache_warm(avatar=avatar)
        payload = {**cache_status(avatar), "message": "Warming queued."}
        return Response(self.OutputSerializer(payload).data)


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
        audio_file = serializers.FileField(required=False, help_text="WAV/MP3/M4A/OGG audio")
        batch_size = serializers.IntegerField(default=2, min_value=1, max_value=64)
        fps = serializers.IntegerField(default=25, min_value=1, max_value=60)

    class OutputSerializer(JobOutputSerializer):
        message = serializers.CharField()

    @extend_schema(
        request=InputSerializer,
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
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        audio = require_upload(request._request, request.FILES, "audio_file")
        job = services.job_create(
            owner=authenticated_user(request),
            avatar_id=fields["avatar_id"],
            audio=audio,
            batch_size=fields["batch_size"],
            fps=fields["fps"],
        )
        payload = {**job_payload(job), "message": "Generation queued."}
        return Response(self.OutputSerializer(payload).data)


class JobListApi(ListApi):
    """``GET /generate/``: the caller's generation jobs, newest first, a page at a time."""

    @extend_schema(responses={200: JobOutputSerializer(many=True)}, tags=["generate"])
    def get(self, request: Request) -> Response:
        jobs = selectors.job_list_for_user(user=authenticated_user(request))
        return paginate(request, self, jobs, job_payload, JobOutputSerializer)


class JobStatusApi(APIView):
    @extend_schema(responses={200: JobOutputSerializer}, tags=["generate"])
    def get(self, request: Request, request_id: str) -> Response:
        job = selectors.job_get_for_user(user=authenticated_user(request), request_id=request_id)
        return Response(JobOutputSerializer(job_payload(job)).data)


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
            filename=f"{request_id}.mp4",
            content_type="video/mp4",
        )
