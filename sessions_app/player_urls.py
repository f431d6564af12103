from __future__ import annotations

from django.urls import path

import musetalk_site.converters  # noqa: F401 - registers <id:...>
from sessions_app import players

# The WebView players (session/MSE, mobile) and the files they load with the player token.
urlpatterns = [
    path("player/session/<id:session_id>", players.session_player, name="player-session"),
    path(
        "player/session/<id:session_id>/idle.mp4",
        players.PlayerIdleVideoApi.as_view(),
        name="player-idle-video",
    ),
    path("player/mobile", players.mobile_player, name="player-mobile"),
    path(
        "player/chunks/<id:request_id>/<id:name>",
        players.PlayerChunkApi.as_view(),
        name="player-chunk",
    ),
]
