from __future__ import annotations

from django.urls import path

from avatars import consumers

websocket_urlpatterns = [
    path("ws/avatars/<str:avatar_id>/", consumers.AvatarProgressConsumer.as_asgi()),
    path("ws/generate/<str:request_id>/", consumers.JobProgressConsumer.as_asgi()),
]
