from __future__ import annotations

from django.urls import path

from sessions_app import consumers

websocket_urlpatterns = [
    path("ws/sessions/<str:session_id>/", consumers.SessionEventsConsumer.as_asgi()),
    path("ws/webrtc/<str:session_id>/", consumers.WebrtcSignalingConsumer.as_asgi()),
]
