from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db.models import QuerySet
from rest_framework import serializers
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


class LimitOffsetPage(LimitOffsetPagination):
    """``?limit=&offset=`` pages as ``{count, next, previous, results}``.

    A ``limit`` above ``max_limit`` is lowered to it: no caller can ask the database for an
    unbounded slice (or one whose bound overflows a 64-bit integer).
    """

    max_limit = 500
    limit_query_description = "Number of results to return per page (at most 500)."


class ListApi(APIView):
    """A list endpoint; its ``pagination_class`` is what it answers and what the schema says."""

    pagination_class: type[LimitOffsetPagination] = LimitOffsetPage


def paginate(
    request: Request,
    view: ListApi,
    queryset: QuerySet,
    present: Callable[[Any], dict[str, Any]],
    serializer_class: type[serializers.Serializer],
) -> Response:
    """A ``limit``/``offset`` page of ``queryset``: ``{count, next, previous, results}``."""
    paginator = view.pagination_class()
    page = paginator.paginate_queryset(queryset, request, view=view)
    data = serializer_class([present(item) for item in page or []], many=True).data
    return paginator.get_paginated_response(data)
