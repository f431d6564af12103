from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest

from musetalk_site import health
from musetalk_site.anonymous import anonymous_access_warning

# The banner says whether the live workers run on random weights, which only changes when a
# worker starts or stops: showing that a few seconds late is harmless, while scanning every
# worker heartbeat in Redis on each page render is not.
BANNER_TTL_SECONDS = 5.0

clock: Callable[[], float] = time.monotonic  # seconds; tests move it
# The last reading: (clock() when read, the banner). Two threads may both read it once it is
# due: either result is fresh, and the last write wins.
_banner: tuple[float, str] | None = None


def engine_banner_cached() -> str:
    """:func:`health.engine_banner`, read at most once per BANNER_TTL_SECONDS (and again
    should the clock go back)."""
    global _banner
    now = clock()
    if _banner is None or not 0 <= now - _banner[0] < BANNER_TTL_SECONDS:
        _banner = (now, health.engine_banner())
    return _banner[1]


def platform(request: HttpRequest) -> dict[str, Any]:
    """Expose the engine's demo-mode banner, the anonymous-access warning and whether
    sign-up is open to every page."""
    return {
        "engine_banner": engine_banner_cached(),
        "anonymous_access_banner": anonymous_access_warning(),
        "signup_enabled": settings.SIGNUP_ENABLED,
    }
