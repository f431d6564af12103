from __future__ import annotations

from typing import Any

# HLS playlists, segments and the HLS player.
urlpatterns: list[Any] = []
