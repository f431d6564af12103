from __future__ import annotations

from django.urls import path

from sessions_app import players

# The WebView players (session/MSE, mobile) and the files they load with the player token.
urlpatterns = [
    path("player/session/<str:session_id>", players.session_player, name="player-session"),
    path(
        "player/session/<str:session_id>/idle.mp4",
        players.PlayerIdleVideoApi.as_view(),
        name="player-idle-video",
    ),
    path("player/mobile", players.mobile_player, name="player-mobile"),
    path(
        "player/chunks/<str:request_id>/<str:name>",
        players.PlayerChunkApi.as_view(),
        name="player-chunk",
    ),
]
