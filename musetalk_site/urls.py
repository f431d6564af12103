from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView

from musetalk_site import apis, stats_apis, views
from sessions_app.generate_stream_views import GenerateStreamApi

handler400 = "musetalk_site.errors.json_bad_request"
handler403 = "musetalk_site.errors.json_permission_denied"
handler404 = "musetalk_site.errors.json_not_found"
handler500 = "musetalk_site.errors.json_server_error"

urlpatterns = [
    path("", views.root, name="dashboard"),  # browsers: the dashboard; API clients: JSON
    # Browsers ask for it on pages without an icon link (JSON, media): no 404 in their console.
    path("favicon.ico", RedirectView.as_view(url=static("img/favicon.svg"), permanent=True)),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("health", apis.HealthApi.as_view(), name="health"),
    path("capabilities", apis.CapabilitiesApi.as_view(), name="capabilities"),
    path("stats", stats_apis.StatsApi.as_view(), name="stats"),
    path("stats/cache", stats_apis.StatsCacheApi.as_view(), name="stats-cache"),
    path("capacity", stats_apis.CapacityApi.as_view(), name="capacity"),
    path("api/auth/token/", apis.AuthTokenApi.as_view(), name="api-auth-token"),
    path("api/me/", apis.MeApi.as_view(), name="api-me"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", views.api_docs, name="api-docs"),
    path("docs", views.api_docs, name="docs"),
    # Before the avatars' routes: their generate/<request_id> would take it.
    path("generate/stream", GenerateStreamApi.as_view(), name="generate-stream"),
    path("", include("dashboard.urls")),
    path("", include("avatars.urls")),
    path("", include("sessions_app.urls")),
    path("", include("sessions_app.player_urls")),
    path("", include("sessions_app.hls_urls")),
    path("", include("sessions_app.webrtc_urls")),
]
