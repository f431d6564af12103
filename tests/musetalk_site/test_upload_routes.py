"""Every route that takes a media file is an upload route for the body limits (streamed as it
arrives, capped at its file's limit), the seed API's extra routes included."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework import serializers

from musetalk_site.asgi import UPLOAD_FIELDS


def _patterns(resolver: Any) -> Iterator[URLPattern]:
    for pattern in resolver.url_patterns:
        if isinstance(pattern, URLResolver):
            yield from _patterns(pattern)
        else:
            yield pattern


def _file_fields(pattern: URLPattern) -> set[str]:
    view = getattr(pattern.callback, "view_class", None)
    inputs = getattr(view, "InputSerializer", None)
    if inputs is None or not hasattr(view, "post"):
        return set()
    fields = inputs().fields.items()
    return {name for name, field in fields if isinstance(field, serializers.FileField)}


def test_each_route_taking_a_file_is_an_upload_route():
    routes = {p.name: _file_fields(p) for p in _patterns(get_resolver()) if _file_fields(p)}
    assert {"avatar-prepare", "job-create", "session-stream"} <= set(routes)
    for name, fields in routes.items():
        assert UPLOAD_FIELDS.get(name) in fields, name
