from __future__ import annotations

from typing import Any

from avatars.routing import websocket_urlpatterns as avatar_patterns
from sessions_app.routing import websocket_urlpatterns as session_patterns

websocket_urlpatterns: list[Any] = [*avatar_patterns, *session_patterns]
