from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from musetalk_site import health


def platform(request: HttpRequest) -> dict[str, Any]:
    """Expose the engine's demo-mode banner to every page."""
    return {"engine_banner": health.engine_banner()}
