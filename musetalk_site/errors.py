"""One error body for every failure a caller may see: ``{"message": str, "extra": dict}``.

:func:`error_payload` decides the status and body of a known exception once, for DRF views
(the exception handler), plain views and SSE feeds (:func:`error_response`), WebSocket close
reasons and pages. Unexpected exceptions are not known: they stay 500s and get logged.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler

TOKEN_CHALLENGE = 'Token realm="api"'  # the WWW-Authenticate header of every 401


class ApplicationError(Exception):
    """A business-rule failure a service raises; the API turns it into a 4xx."""

    status_code = 400

    def __init__(
        self,
        message: str,
        extra: dict[str, Any] | None = None,
        *,
        status: int = 400,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.extra = extra or {}
        self.status_code = status
        self.headers = headers or {}  # sent with the answer, e.g. Retry-After


class NotAuthenticatedError(ApplicationError):
    """No valid credentials came with a request that needs them (401)."""

    def __init__(self, message: str = "Authentication credentials were not provided.") -> None:
        super().__init__(message, status=401)


@dataclass(frozen=True)
class ErrorPayload:
    status: int
    message: str
    extra: dict[str, Any]
    headers: dict[str, str] = dataclasses.field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"message": self.message, "extra": self.extra}


def error_payload(exc: BaseException) -> ErrorPayload | None:
    """The status and body of a known failure; None for an unexpected exception."""
    if isinstance(exc, ApplicationError):
        return ErrorPayload(exc.status_code, exc.message, exc.extra, exc.headers)
    if isinstance(exc, Http404):
        return ErrorPayload(404, str(exc) or "Not found.", {})
    if isinstance(exc, PermissionDenied):
        return ErrorPayload(403, "You do not have permission to perform this action.", {})
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))
    if isinstance(exc, exceptions.Throttled):
        wait = getattr(exc, "wait", None)  # whole seconds, as in Retry-After
        extra = {} if wait is None else {"wait_seconds": wait}
        return ErrorPayload(exc.status_code, _message_from_detail(exc.detail), extra)
    if isinstance(exc, exceptions.APIException):
        extra = {"fields": exc.detail} if isinstance(exc, exceptions.ValidationError) else {}
        if not isinstance(exc.detail, dict):
            extra = {}
        return ErrorPayload(exc.status_code, _message_from_detail(exc.detail), extra)
    return None


def error_response(exc: BaseException) -> JsonResponse:
    """A known failure as the JSON error body (plain views and SSE feeds); unexpected
    exceptions are raised again."""
    payload = error_payload(exc)
    if payload is None:
        raise exc
    response = JsonResponse(payload.body(), status=payload.status)
    for name, value in payload.headers.items():
        response[name] = value
    return response


def close_frame(exc: BaseException) -> tuple[int, str]:
    """A known failure as a WebSocket close code (4000 + the HTTP status) and reason."""
    payload = error_payload(exc)
    if payload is None:
        raise exc
    # A close frame's reason holds at most 123 bytes (RFC 6455 5.5).
    reason = payload.message.encode()[:123].decode(errors="ignore")
    return 4000 + payload.status, reason


async def websocket_refuse(consumer: Any, exc: BaseException) -> None:
    """Answer a refused WebSocket: the error body as one text message, then the close code.

    The handshake is accepted first (a server that closes before accepting makes the client
    see a bare HTTP 403), and the body is sent as a message because daphne drops close
    reasons.
    """
    code, reason = close_frame(exc)
    payload = error_payload(exc)
    assert payload is not None  # close_frame raised otherwise
    await consumer.accept()
    await consumer.send(text_data=json.dumps({"event": "error", **payload.body()}))
    await consumer.close(code=code, reason=reason)


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
    """DRF's EXCEPTION_HANDLER: every known failure as :func:`error_payload` says."""
    payload = error_payload(exc)
    if payload is None:
        # Unexpected errors: DRF re-raises, Django logs them and json_server_error answers.
        return None
    response = exception_handler(exc, context) if isinstance(exc, exceptions.APIException) else None
    if response is None:
        response = Response(status=payload.status)
    response.data = payload.body()
    for name, value in payload.headers.items():
        response[name] = value
    if payload.status == 401 and not response.has_header("WWW-Authenticate"):
        response["WWW-Authenticate"] = TOKEN_CHALLENGE
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
