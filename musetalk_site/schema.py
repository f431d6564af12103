from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema as BaseAutoSchema


class AutoSchema(BaseAutoSchema):
    """Names nested ``<Entity><Action>Api.InputSerializer`` components after their API.

    Every API nests plain ``InputSerializer``/``OutputSerializer`` classes, so the default
    names ("Input", "Output") would collide across endpoints.
    """

    def _get_serializer_name(self, serializer: Any, direction: str, *args: Any) -> str:
        cls = serializer if isinstance(serializer, type) else type(serializer)
        outer, _, inner = cls.__qualname__.rpartition(".")
        if outer.endswith("Api") and inner.endswith("Serializer"):
            return outer.removesuffix("Api") + inner.removesuffix("Serializer")
        return super()._get_serializer_name(serializer, direction, *args)
