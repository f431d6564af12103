from __future__ import annotations

from django.urls import path

import musetalk_site.converters  # noqa: F401 - registers <id:...>
from sessions_app import apis, views

urlpatterns = [
    path("sessions/create", apis.SessionCreateApi.as_view(), name="session-create"),
    path("sessions/stats", apis.SessionStatsApi.as_view(), name="session-stats"),
    path("sessions/live", apis.SessionLiveApi.as_view(), name="session-live"),
    path("sessions/", apis.SessionListApi.as_view(), name="session-list"),
    path("sessions/<id:session_id>/stream", apis.SessionStreamApi.as_view(), name="session-stream"),
    path("sessions/<id:session_id>/events", views.session_events, name="session-events"),
    path("sessions/<id:session_id>/status", apis.SessionDetailApi.as_view(), name="session-status"),
    path(
        "sessions/<id:session_id>/interrupt",
        apis.SessionInterruptApi.as_view(),
        name="session-interrupt",
    ),
    path(
        "sessions/<id:session_id>/keepalive",
        apis.SessionKeepaliveApi.as_view(),
        name="session-keepalive",
    ),
    path("sessions/<id:session_id>", apis.SessionDeleteApi.as_view(), name="session-detail"),
    path("chunks/<id:request_id>/<id:name>", apis.ChunkFileApi.as_view(), name="chunk-file"),
]
