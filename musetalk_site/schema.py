"""How the OpenAPI schema names components and which error answers it documents.

Every error body is the one of :mod:`musetalk_site.errors`: ``{"message": str, "extra": {}}``,
the ``Error`` component. The answers every operation may give for the same reasons follow
from the view itself (see :meth:`AutoSchema.error_answers`); answers that only the services of
one operation give (a quota's 403 or 429, a 409, a 410, a 503) are listed where the operation
is declared, with :func:`error`. Where both give one status, its description names both reasons.
"""

from __future__ import annotations

from typing import Any

import uritemplate
from drf_spectacular.openapi import AutoSchema as BaseAutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

# Why an operation answers a status for reasons it shares with others.
BAD_INPUT = "The input is not valid; for a field, `extra.fields` names each error."
NO_CREDENTIALS = "No valid credentials: an API token, a signed-in session or a player token."
ANONYMOUS_BODY = "A body over the small allowance of callers without credentials."
CSRF = "A signed-in browser session sent no valid CSRF token."
NOT_FOUND = "Nothing of that id exists that the caller may see."
LENGTH_REQUIRED = "An upload must announce its length (Content-Length), not be chunked."
BODY_TOO_LARGE = "The request body is larger than its limit (`extra.limit_bytes`)."
FILE_TOO_LARGE = "The uploaded file (or the body) is larger than its limit (`extra.limit_bytes`)."
UNREADABLE_BODY = "The body's content type is not one this operation reads."
NOT_MEDIA = "The body's content type is not one this operation reads, or the file's type is not."
THROTTLED = "Too many requests; retry after the number of seconds in `Retry-After`."


class ErrorSerializer(serializers.Serializer):
    """The body of every error answer."""

    message = serializers.CharField(help_text="What went wrong, in one sentence.")
    extra = serializers.DictField(help_text="Facts for programs: field errors, ids, limits.")


# The quotas of musetalk_site.quotas; ``extra.quota`` names the one used up.
QUOTA_AVATARS_OR_STORAGE = "The avatar or the storage quota is used up (`extra.quota`)."
QUOTA_STORAGE = "The storage quota is used up (`extra.quota`)."
QUOTA_SESSIONS = "The quota of open sessions is used up (`extra.quota`)."
QUOTA_MINUTES = "This month's generated minutes are used up (`extra.renews_at`)."


def error(description: str) -> OpenApiResponse:
    """An error answer of one operation, for ``extend_schema(responses={409: error(...)})``."""
    return OpenApiResponse(ErrorSerializer, description)


class AutoSchema(BaseAutoSchema):
    """Names nested ``<Entity><Action>Api.InputSerializer`` components after their API and
    documents the error answers of every operation.

    Every API nests plain ``InputSerializer``/``OutputSerializer`` classes, so the default
    names ("Input", "Output") would collide across endpoints.
    """

    def _get_serializer_name(self, serializer: Any, direction: str, *args: Any) -> str:
        cls = serializer if isinstance(serializer, type) else type(serializer)
        outer, _, inner = cls.__qualname__.rpartition(".")
        if outer.endswith("Api") and inner.endswith("Serializer"):
            return outer.removesuffix("Api") + inner.removesuffix("Serializer")
        return super()._get_serializer_name(serializer, direction, *args)

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        for status, description in self.error_answers().items():
            declared = responses.get(str(status))
            if declared is None:
                responses[str(status)] = self._get_response_for_code(
                    error(description), str(status), ["application/json"], direction
                )
            elif description not in declared["description"]:
                # The operation's own reason, and the one it shares with the others.
                declared["description"] += f" Or {description[0].lower()}{description[1:]}"
        return dict(sorted(responses.items()))

    def error_answers(self) -> dict[int, str]:
        """The error answers the view's machinery gives, whatever its service does: DRF's
        parsing, validation, authentication, CSRF and throttling, the URL's lookup, and the
        body limits in front of the application."""
        view = self.view
        inputs = getattr(view, "InputSerializer", None)
        uploads = inputs is not None and _has_file_field(inputs)
        answers: dict[int, str] = {}
        if inputs is not None:
            answers[400] = BAD_INPUT
            answers[413] = FILE_TOO_LARGE if uploads else BODY_TOO_LARGE
            answers[415] = NOT_MEDIA if uploads else UNREADABLE_BODY
        if uploads:
            answers[411] = LENGTH_REQUIRED
        if view.authentication_classes:
            answers[401] = NO_CREDENTIALS
        elif inputs is not None:
            answers[401] = ANONYMOUS_BODY
        if self.method not in SAFE_METHODS and SessionAuthentication in view.authentication_classes:
            answers[403] = CSRF
        if uritemplate.variables(self.path):
            answers[404] = NOT_FOUND
        if view.get_throttles():
            answers[429] = THROTTLED
        return answers


def _has_file_field(serializer_class: type[serializers.Serializer]) -> bool:
    fields = serializer_class().fields.values()
    return any(isinstance(field, serializers.FileField) for field in fields)
