"""Platform endpoints: API tokens, health and capabilities."""

from __future__ import annotations

from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from musetalk_site.auth import authenticated_user
from musetalk_site.errors import ApplicationError
from musetalk_site.health import capabilities, health_report
from musetalk_site.quotas import quota_summary_for_user
from musetalk_site.throttles import TokenThrottle


class AuthTokenApi(APIView):
    """Exchange a username and password for the user's API token."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [TokenThrottle]

    class InputSerializer(serializers.Serializer):
        username = serializers.CharField()
        password = serializers.CharField(trim_whitespace=False, style={"input_type": "password"})

    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField()

    @extend_schema(request=InputSerializer, responses={200: OutputSerializer}, tags=["auth"])
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = authenticate(request=request._request, **data.validated_data)
        if user is None or not user.is_active:
            raise ApplicationError("Invalid username or password.", status=400)
        token, _ = Token.objects.get_or_create(user=user)
        return Response(self.OutputSerializer({"token": token.key}).data)


def _health_fields() -> dict[str, serializers.Field]:
    return {
        "ok": serializers.BooleanField(),
        "service": serializers.CharField(),
        "status": serializers.CharField(help_text="healthy or unhealthy"),
        "down": serializers.ListField(child=serializers.CharField()),
        "gpu_available": serializers.BooleanField(),
        "cached_avatars": serializers.IntegerField(),
        "active_requests": serializers.IntegerField(),
        "anonymous_access": serializers.DictField(),
    }


class HealthApi(APIView):
    """Database, Redis, worker heartbeat and engine profile; 503 naming what is down.

    Also the seed API's keys: ``ok``, ``service``, ``status`` ("healthy"), ``gpu_available``,
    ``cached_avatars`` and ``active_requests`` (read from the workers' heartbeats).
    """

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        responses={
            200: inline_serializer("Health", _health_fields()),
            503: inline_serializer("HealthDown", _health_fields()),
        },
        tags=["health"],
    )
    def get(self, request: Request) -> Response:
        ok, report = health_report()
        return Response(report, status=status.HTTP_200_OK if ok else 503)


class CapabilitiesApi(APIView):
    """What this server offers, as the seed API's ``/capabilities`` names its features."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    class OutputSerializer(serializers.Serializer):
        service = serializers.CharField()
        features = serializers.DictField(child=serializers.BooleanField())

    @extend_schema(responses={200: OutputSerializer}, tags=["health"])
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(capabilities()).data)


class UsageSerializer(serializers.Serializer):
    """What the user has used; minutes count this calendar month (UTC)."""

    avatars = serializers.IntegerField()
    active_sessions = serializers.IntegerField()
    monthly_minutes = serializers.FloatField()
    storage_mb = serializers.FloatField()
    month_renews_at = serializers.DateTimeField()


class LimitsSerializer(serializers.Serializer):
    """The limits in force for the user; null: unlimited."""

    avatars = serializers.IntegerField(allow_null=True)
    active_sessions = serializers.IntegerField(allow_null=True)
    monthly_minutes = serializers.IntegerField(allow_null=True)
    storage_mb = serializers.IntegerField(allow_null=True)


class MeApi(APIView):
    """The authenticated user, with their usage and limits: lets an app check its token."""

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        username = serializers.CharField()
        is_staff = serializers.BooleanField()
        usage = UsageSerializer()
        limits = LimitsSerializer()

    @extend_schema(responses={200: OutputSerializer}, tags=["auth"])
    def get(self, request: Request) -> Response:
        user = authenticated_user(request)
        me = {"id": user.pk, "username": user.username, "is_staff": user.is_staff}
        return Response(self.OutputSerializer({**me, **quota_summary_for_user(user=user)}).data)
