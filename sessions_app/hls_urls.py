from __future__ import annotations

from django.urls import path

import musetalk_site.converters  # noqa: F401 - registers <id:...>
from sessions_app import hls_views, seed_hls_apis

# HLS playlists, segments and the HLS player (the player first: "player" is no session id;
# then the seed API's /hls/sessions/... and /hls/groups/..., "sessions" and "groups" being no
# session id either; our
# playlists before our segments, which take any name).
urlpatterns = [
    path("hls/player/<id:session_id>", hls_views.hls_player, name="hls-player"),
    path(
        "hls/sessions/create",
        seed_hls_apis.HlsSessionCreateApi.as_view(),
        name="hls-session-create",
    ),
    path(
        "hls/sessions/stats", seed_hls_apis.HlsSessionStatsApi.as_view(), name="hls-session-stats"
    ),
    path(
        "hls/sessions/<id:session_id>/stream",
        seed_hls_apis.HlsSessionStreamApi.as_view(),
        name="hls-session-stream",
    ),
    path(
        "hls/sessions/<id:session_id>/status",
        seed_hls_apis.HlsSessionStatusApi.as_view(),
        name="hls-session-status",
    ),
    path(
        "hls/sessions/<id:session_id>/index.m3u8",
        seed_hls_apis.HlsIdlePlaylistApi.as_view(),
        name="hls-session-index",
    ),
    path(
        "hls/sessions/<id:session_id>/live.m3u8",
        seed_hls_apis.HlsLivePlaylistApi.as_view(),
        name="hls-session-live",
    ),
    path(
        "hls/sessions/<id:session_id>/segments/<id:name>",
        seed_hls_apis.HlsIdleSegmentApi.as_view(),
        name="hls-session-idle-segment",
    ),
    path(
        "hls/sessions/<id:session_id>/segments/<id:request_id>/<id:name>",
        seed_hls_apis.HlsLiveSegmentApi.as_view(),
        name="hls-session-live-segment",
    ),
    path(
        "hls/sessions/<id:session_id>",
        seed_hls_apis.HlsSessionDeleteApi.as_view(),
        name="hls-session-detail",
    ),
    path("hls/groups/create", seed_hls_apis.HlsGroupCreateApi.as_view(), name="hls-group-create"),
    path(
        "hls/groups/<id:group_id>/stream",
        seed_hls_apis.HlsGroupStreamApi.as_view(),
        name="hls-group-stream",
    ),
    path("hls/groups/<id:group_id>", seed_hls_apis.HlsGroupApi.as_view(), name="hls-group"),
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
