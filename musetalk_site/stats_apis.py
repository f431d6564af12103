"""The seed API's platform statistics, ``/stats`` and ``/stats/cache``: what the workers'
heartbeats say of their engines, with the caller's own avatars named."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from musetalk_site.auth import authenticated_user
from musetalk_site.selectors import site_cache_stats, site_stats
from sessions_app.admission import capacity_now


class CachedAvatarSerializer(serializers.Serializer):
    id = serializers.CharField()
    memory_mb = serializers.FloatField()
    load_count = serializers.IntegerField()
    age_seconds = serializers.FloatField(help_text="Seconds since the avatar was last used.")
    hits = serializers.IntegerField()
    workers = serializers.IntegerField()


class CacheStatsSerializer(serializers.Serializer):
    """Summed over the workers' avatar caches; ``avatars`` lists the caller's only."""

    cached_avatars = serializers.IntegerField()
    max_cached_avatars = serializers.IntegerField(allow_null=True)
    total_memory_mb = serializers.FloatField()
    max_memory_mb = serializers.FloatField(allow_null=True)
    hit_rate = serializers.CharField()
    hits = serializers.IntegerField()
    misses = serializers.IntegerField()
    evictions = serializers.IntegerField()
    loads = serializers.IntegerField()
    avatars = CachedAvatarSerializer(many=True)


class StatsCacheApi(APIView):
    """``GET /stats/cache``: the avatar caches of the workers."""

    @extend_schema(responses={200: CacheStatsSerializer}, tags=["health"])
    def get(self, request: Request) -> Response:
        stats = site_cache_stats(user=authenticated_user(request))
        return Response(CacheStatsSerializer(stats).data)


class GpuSerializer(serializers.Serializer):
    """The generating engine's memory budget (a GPU's when ``device`` is ``cuda...``)."""

    device = serializers.CharField()
    total_gb = serializers.FloatField()
    reserved_gb = serializers.FloatField()
    available_gb = serializers.FloatField()
    current_usage_gb = serializers.FloatField()
    free_gb = serializers.FloatField()
    peak_gb = serializers.FloatField()


class WorkerSerializer(serializers.Serializer):
    worker_id = serializers.CharField()
    queues = serializers.ListField(child=serializers.CharField())
    running = serializers.DictField(child=serializers.IntegerField())


class StatsApi(APIView):
    """``GET /stats``: the generating engine's memory, the caches, the requests running."""

    class OutputSerializer(serializers.Serializer):
        gpu = GpuSerializer()
        cache = CacheStatsSerializer()
        active_requests = serializers.IntegerField(help_text="On all workers, for all users.")
        total_requests = serializers.IntegerField(help_text="The caller's video requests.")
        workers = WorkerSerializer(many=True)

    @extend_schema(responses={200: OutputSerializer}, tags=["health"])
    def get(self, request: Request) -> Response:
        stats = site_stats(user=authenticated_user(request))
        return Response(self.OutputSerializer(stats).data)


class WorkerCapacitySerializer(serializers.Serializer):
    """One worker that takes live utterances, as its heartbeat measured it."""

    worker_id = serializers.CharField()
    device = serializers.CharField()
    device_key = serializers.CharField(
        help_text="Host and physical device: workers sharing one count it once in the total."
    )
    measured = serializers.BooleanField(help_text="False until the worker's first calibration.")
    frames_per_s = serializers.FloatField(help_text="Sustained frames/s at its best batch size.")
    frames_per_s_by_batch = serializers.DictField(child=serializers.FloatField())
    max_batch = serializers.IntegerField()
    active_streams = serializers.IntegerField()
    pending_streams = serializers.IntegerField()
    active_jobs = serializers.IntegerField()
    live_frames_per_s = serializers.FloatField(help_text="What its live streams ask for now.")
    stream_seconds_left = serializers.FloatField()
    available_sessions = serializers.IntegerField(
        allow_null=True,
        help_text="Sessions of `fps` it could still take beside the streams it makes now "
        "(silent sessions not counted); null until measured.",
    )


class CapacityTotalSerializer(serializers.Serializer):
    measured = serializers.BooleanField(help_text="False: no capacity known, admission is open.")
    frames_per_s = serializers.FloatField(help_text="Of every measured worker together.")
    reserved_frames_per_s = serializers.FloatField(help_text="The fps of every open session.")
    live_frames_per_s = serializers.FloatField()
    active_streams = serializers.IntegerField()
    pending_streams = serializers.IntegerField()
    active_sessions = serializers.IntegerField(help_text="Open sessions, all users.")
    available_sessions = serializers.IntegerField(
        allow_null=True,
        help_text="floor((frames_per_s * target - reserved_frames_per_s) / fps): what "
        "admission lets open; null until measured.",
    )
    retry_after_seconds = serializers.IntegerField(help_text="What a refusal now would say.")


class CapacityApi(APIView):
    """``GET /capacity?fps=25``: the workers' measured frames/s and how many more sessions of
    ``fps`` fit. Global by design: counts of every user's sessions, none of them named."""

    class InputSerializer(serializers.Serializer):
        fps = serializers.IntegerField(default=25, min_value=1, max_value=60)

    class OutputSerializer(serializers.Serializer):
        fps = serializers.IntegerField()
        target = serializers.FloatField(help_text="LIVE_CAPACITY_TARGET")
        admission = serializers.BooleanField(help_text="LIVE_ADMISSION: whether 429s are given.")
        workers = WorkerCapacitySerializer(many=True)
        total = CapacityTotalSerializer()

    @extend_schema(parameters=[InputSerializer], responses={200: OutputSerializer}, tags=["health"])
    def get(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.query_params)
        data.is_valid(raise_exception=True)
        report = capacity_now(fps=data.validated_data["fps"])
        return Response(self.OutputSerializer(report).data)
