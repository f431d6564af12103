from __future__ import annotations

from django.urls import path

import musetalk_site.converters  # noqa: F401 - registers <id:...>
from sessions_app import players, webrtc_apis

urlpatterns = [
    path("webrtc/sessions/create", webrtc_apis.WebrtcCreateApi.as_view(), name="webrtc-create"),
    path("webrtc/sessions/stats", webrtc_apis.webrtc_stats, name="webrtc-stats"),
    path("webrtc/sessions/<id:session_id>/offer", webrtc_apis.webrtc_offer, name="webrtc-offer"),
    path("webrtc/sessions/<id:session_id>/ice", webrtc_apis.webrtc_ice, name="webrtc-ice"),
    path("webrtc/sessions/<id:session_id>/stream", webrtc_apis.webrtc_stream, name="webrtc-stream"),
    path(
        "webrtc/sessions/<id:session_id>/interrupt",
        webrtc_apis.webrtc_interrupt,
        name="webrtc-interrupt",
    ),
    path("webrtc/sessions/<id:session_id>/status", webrtc_apis.webrtc_status, name="webrtc-status"),
    path("webrtc/sessions/<id:session_id>", webrtc_apis.webrtc_session, name="webrtc-session"),
    path("webrtc/player/<id:session_id>", players.webrtc_player, name="webrtc-player"),
]
