"""The ``<id:...>`` path converter of every route that names an object by its id.

Registered when this module is first imported; the URL modules that use it import it.
"""

from __future__ import annotations

from django.urls import register_converter


class IdConverter:
    """One path segment, as ``<str:...>``, without NUL: no id holds one, and PostgreSQL
    refuses NUL in a query, so such a path matches no route (a 404) instead of failing."""

    regex = "[^/\x00]+"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(IdConverter, "id")
