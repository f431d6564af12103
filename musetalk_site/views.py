"""Server-rendered pages of the dashboard."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from musetalk_site.auth import authenticated_user
from musetalk_site.selectors import dashboard_summary


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard.html", dashboard_summary(user=authenticated_user(request)))
