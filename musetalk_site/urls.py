from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from musetalk_site import apis, views

handler400 = "musetalk_site.errors.json_bad_request"
handler403 = "musetalk_site.errors.json_permission_denied"
handler404 = "musetalk_site.errors.json_not_found"
handler500 = "musetalk_site.errors.json_server_error"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("health", apis.HealthApi.as_view(), name="health"),
    path("api/auth/token/", apis.AuthTokenApi.as_view(), name="api-auth-token"),
    path("api/me/", apis.MeApi.as_view(), name="api-me"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path(
        "api/docs/",
        login_required(SpectacularSwaggerView.as_view(url_name="api-schema")),
        name="api-docs",
    ),
    path("", include("avatars.urls")),
    path("", include("sessions_app.urls")),
    path("", include("sessions_app.player_urls")),
    path("", include("sessions_app.hls_urls")),
]
