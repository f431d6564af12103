from __future__ import annotations

from django.urls import path

from sessions_app import apis, views

urlpatterns = [
    path("sessions/create", apis.SessionCreateApi.as_view(), name="session-create"),
    path("sessions/stats", apis.SessionStatsApi.as_view(), name="session-stats"),
    path("sessions/", apis.SessionListApi.as_view(), name="session-list"),
    path(
        "sessions/<str:session_id>/stream", apis.SessionStreamApi.as_view(), name="session-stream"
    ),
    path("sessions/<str:session_id>/events", views.session_events, name="session-events"),
    path(
        "sessions/<str:session_id>/status", apis.SessionDetailApi.as_view(), name="session-status"
    ),
    path(
        "sessions/<str:session_id>/interrupt",
        apis.SessionInterruptApi.as_view(),
        name="session-interrupt",
    ),
    path(
        "sessions/<str:session_id>/keepalive",
        apis.SessionKeepaliveApi.as_view(),
        name="session-keepalive",
    ),
    path("sessions/<str:session_id>", apis.SessionDeleteApi.as_view(), name="session-detail"),
    path("chunks/<str:request_id>/<str:name>", apis.ChunkFileApi.as_view(), name="chunk-file"),
]
