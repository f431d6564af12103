"""One error body for every API failure: ``{"message": str, "extra": dict}``."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler


class ApplicationError(Exception):
    """A business-rule failure a service raises; the API turns it into a 4xx."""

    status_code = 400

    def __init__(self, message: str, extra: dict[str, Any] | None = None, *, status: int = 400):
        super().__init__(message)
        self.message = message
        self.extra = extra or {}
        self.status_code = status


def _message_from_detail(detail: Any) -> str:
    if isinstance(detail, dict):
        if "detail" in detail:
            return str(detail["detail"])
        field, errors = next(iter(detail.items()))
        first = errors[0] if isinstance(errors, list) and errors else errors
        if field == "non_field_errors":
            return str(first)
        return f"{field}: {first}"
    if isinstance(detail, list) and detail:
        return str(detail[0])
    return str(detail)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApplicationError):
        return Response({"message": exc.message, "extra": exc.extra}, status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "Not found.")
    if isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()

    response = exception_handler(exc, context)
    if response is None:
        # Unexpected errors: DRF re-raises, Django logs them and json_server_error answers.
        return None
    detail = response.data
    extra: dict[str, Any] = {}
    if isinstance(exc, exceptions.ValidationError) and isinstance(detail, dict):
        extra = {"fields": detail}
    response.data = {"message": _message_from_detail(detail), "extra": extra}
    return response


def _wants_html(request: Any) -> bool:
    return "text/html" in request.headers.get("Accept", "")


def json_not_found(request: Any, exception: Exception | None = None) -> HttpResponse:
    if _wants_html(request):
        return defaults.page_not_found(request, exception or Http404())
    return JsonResponse({"message": "Not found.", "extra": {}}, status=404)


def json_server_error(request: Any) -> JsonResponse:
    return JsonResponse({"message": "Internal server error.", "extra": {}}, status=500)


def json_bad_request(request: Any, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"message": "Bad request.", "extra": {}}, status=400)


def json_permission_denied(request: Any, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"message": "Permission denied.", "extra": {}}, status=403)
