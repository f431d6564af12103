"""Server-rendered pages of the dashboard, and the site's root and API docs."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from drf_spectacular.views import SpectacularSwaggerView

from musetalk_site.auth import TOKEN_PARAM, authenticated_user
from musetalk_site.selectors import dashboard_summary

SERVICE_NAME = "MuseTalk platform API"

_swagger_ui = SpectacularSwaggerView.as_view(url_name="api-schema")


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard.html", dashboard_summary(user=authenticated_user(request)))


def _api_client(request: HttpRequest) -> bool:
    """An API client rather than a browser: it sends a token, or it neither asks for HTML
    nor is signed in."""
    if "Authorization" in request.headers or TOKEN_PARAM in request.GET:
        return True
    if request.user.is_authenticated:
        return False
    return "text/html" not in request.headers.get("Accept", "")


def root(request: HttpRequest) -> HttpResponse:
    """``GET /``: the dashboard for browsers; for API clients, as the seed API answers, the
    service's name (the web process answers; ``/health`` says whether the rest does)."""
    if not _api_client(request):
        return dashboard(request)
    return JsonResponse(
        {
            "status": "healthy",
            "service": SERVICE_NAME,
            "version": settings.SPECTACULAR_SETTINGS["VERSION"],
            "docs_url": "/docs",
            "health_url": "/health",
        }
    )


def api_docs(request: HttpRequest) -> HttpResponse:
    """Swagger UI (``/docs``, ``/api/docs/``): for signed-in users, and for anyone while
    anonymous access is on (the schema it loads then answers them too)."""
    if not (request.user.is_authenticated or settings.ANONYMOUS_ACCESS_USER):
        return redirect_to_login(request.get_full_path())
    return _swagger_ui(request)
