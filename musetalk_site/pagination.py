from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db.models import QuerySet
from rest_framework import serializers
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


def paginate(
    request: Request,
    view: APIView,
    queryset: QuerySet,
    present: Callable[[Any], dict[str, Any]],
    serializer_class: type[serializers.Serializer],
) -> Response:
    """A ``limit``/``offset`` page of ``queryset``: ``{count, next, previous, results}``."""
    paginator = LimitOffsetPagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    data = serializer_class([present(item) for item in page or []], many=True).data
    return paginator.get_paginated_response(data)
