from __future__ import annotations

from django.urls import path

from sessions_app import hls_views

# HLS playlists, segments and the HLS player (the player first: "player" is no session id;
# the playlists before the segments, which take any name).
urlpatterns = [
    path("hls/player/<str:session_id>", hls_views.hls_player, name="hls-player"),
    path(
        "hls/<str:session_id>/master.m3u8",
        hls_views.HlsMasterPlaylistApi.as_view(),
        name="hls-master",
    ),
    path(
        "hls/<str:session_id>/playlist.m3u8",
        hls_views.HlsPlaylistApi.as_view(),
        name="hls-playlist",
    ),
    path("hls/<str:session_id>/<str:name>", hls_views.HlsSegmentApi.as_view(), name="hls-segment"),
]
