"""Request parameters as the seed API's clients send them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework.request import Request


def query_or_form(request: Request) -> dict[str, Any]:
    """The parameters of a POST: the seed's clients send them in the query string, ours in
    the form (multipart, urlencoded or JSON) body; both are read, and the query string wins
    (as on every seed route)."""
    data = request.data
    form = dict(data.items()) if isinstance(data, Mapping) else {}
    return {**form, **request.query_params.dict()}
