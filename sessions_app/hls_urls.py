from __future__ import annotations

from django.urls import path

import musetalk_site.converters  # noqa: F401 - registers <id:...>
from sessions_app import hls_views

# HLS playlists, segments and the HLS player (the player first: "player" is no session id;
# the playlists before the segments, which take any name).
urlpatterns = [
    path("hls/player/<id:session_id>", hls_views.hls_player, name="hls-player"),
    path(
        "hls/<id:session_id>/master.m3u8",
        hls_views.HlsMasterPlaylistApi.as_view(),
        name="hls-master",
    ),
    path(
        "hls/<id:session_id>/playlist.m3u8",
        hls_views.HlsPlaylistApi.as_view(),
        name="hls-playlist",
    ),
    path("hls/<id:session_id>/<id:name>", hls_views.HlsSegmentApi.as_view(), name="hls-segment"),
]
