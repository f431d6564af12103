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
