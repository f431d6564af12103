"""The account pages of the dashboard: sign up, password, API tokens.

They call the same services as the REST API (``musetalk_site.api_tokens``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from avatars import selectors as avatar_selectors
from avatars import services as avatar_services
from avatars.presenters import job_payload
from dashboard.forms import SignupForm, TokenForm
from musetalk_site.api_tokens import (
    api_token_create,
    api_token_revoke,
    api_tokens_for_user,
    signin_token_for_user,
    signin_token_revoke,
)
from musetalk_site.auth import authenticated_user
from musetalk_site.errors import ApplicationError
from musetalk_site.quotas import quota_monthly_history, quota_summary_for_user
from musetalk_site.throttles import TokenThrottle
from sessions_app import selectors as session_selectors

MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"


def _too_many_attempts(request: HttpRequest) -> HttpResponse | None:
    """Sign-ups and sign-ins count against ``THROTTLE_TOKEN_RATE`` per client address, like
    token requests: a 429 page once it is spent."""
    throttle = TokenThrottle()
    if request.method != "POST" or throttle.allow_request(request, None):  # type: ignore[arg-type]
        return None
    wait = int(throttle.wait() or 1)
    response = render(request, "account/too_many.html", {"wait": wait}, status=429)
    response["Retry-After"] = str(wait)
    return response


class LoginView(auth_views.LoginView):
    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return _too_many_attempts(request) or super().post(request, *args, **kwargs)


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if not settings.SIGNUP_ENABLED:
        return render(request, "account/signup_closed.html", status=404)
    if request.user.is_authenticated:
        return redirect("dashboard")
    refused = _too_many_attempts(request)
    if refused is not None:
        return refused
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend=MODEL_BACKEND)
        messages.success(request, f"Welcome, {user.get_username()}! Your account is ready.")
        return redirect("dashboard")
    status = 400 if form.errors else 200
    return render(request, "account/signup.html", {"form": form}, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def tokens(request: HttpRequest) -> HttpResponse:
    """The user's API tokens; a new one's key is shown in this answer only."""
    user = authenticated_user(request)
    form = TokenForm(request.POST or None)
    created = None
    if request.method == "POST" and form.is_valid():
        try:
            created = api_token_create(user=user, name=form.cleaned_data["name"])
            form = TokenForm()
        except ApplicationError as exc:
            form.add_error("name", exc.message)
    context = {
        "form": form,
        "created": created,
        "tokens": api_tokens_for_user(user=user),
        "signin_token": signin_token_for_user(user=user),
    }
    status = 201 if created else 400 if form.errors else 200
    return render(request, "account/tokens.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    """GET asks for confirmation; POST revokes."""
    user = authenticated_user(request)
    token = get_object_or_404(api_tokens_for_user(user=user), pk=token_id)
    if request.method == "POST":
        api_token_revoke(user=user, token_id=token.pk)
        messages.success(request, f"Token “{token.name}” revoked: it no longer works.")
        return redirect("account-tokens")
    return render(request, "account/token_revoke.html", {"token": token})


@login_required
@require_http_methods(["GET", "POST"])
def signin_token_revoke_page(request: HttpRequest) -> HttpResponse:
    """GET asks for confirmation; POST revokes the sign-in token."""
    user = authenticated_user(request)
    token = signin_token_for_user(user=user)
    if token is None:
        messages.info(request, "You have no sign-in token.")
        return redirect("account-tokens")
    if request.method == "POST":
        signin_token_revoke(user=user)
        messages.success(request, "Sign-in token revoked: it no longer works.")
        return redirect("account-tokens")
    return render(request, "account/signin_token_revoke.html", {"token": token})


@login_required
@require_http_methods(["GET", "POST"])
def avatar_delete(request: HttpRequest, avatar_id: str) -> HttpResponse:
    """GET asks for confirmation; POST deletes the avatar with its files and videos."""
    avatar = avatar_selectors.avatar_get_for_user(
        user=authenticated_user(request), avatar_id=avatar_id
    )
    if request.method == "POST":
        avatar_services.avatar_delete(avatar=avatar)
        messages.success(request, f"Avatar “{avatar_id}” deleted, with its files and videos.")
        return redirect("dashboard")
    return render(request, "account/avatar_delete.html", {"avatar": avatar})


@login_required
def videos(request: HttpRequest) -> HttpResponse:
    """Make a video (avatar + audio, through ``POST /generate``) and the past ones."""
    user = authenticated_user(request)
    context = {
        "avatars": avatar_selectors.avatar_list_prepared_for_user(user=user),
        "jobs": [job_payload(job) for job in avatar_selectors.job_list_for_user(user=user)[:50]],
        "audio_limits": _audio_limits(),
    }
    return render(request, "dashboard/videos.html", context)


@login_required
def live(request: HttpRequest) -> HttpResponse:
    """The live playground: a session on a prepared avatar, played by the MSE, HLS or WebRTC
    player, spoken to with uploaded or recorded audio; the page calls the REST API."""
    user = authenticated_user(request)
    context = {
        "avatars": avatar_selectors.avatar_list_prepared_for_user(user=user),
        "audio_limits": _audio_limits(),
    }
    return render(request, "dashboard/live.html", context)


def _audio_limits() -> dict[str, Any]:
    return {
        "max_bytes": settings.MAX_AUDIO_UPLOAD_BYTES,
        "max_mb": settings.MAX_AUDIO_UPLOAD_BYTES // (1024 * 1024),
        "max_seconds": settings.MAX_AUDIO_SECONDS,
    }


USAGE_ROWS = (  # key, label, unit
    ("monthly_minutes", "Minutes generated this month", "min"),
    ("storage_mb", "Storage", "MB"),
    ("avatars", "Avatars", ""),
    ("active_sessions", "Open live sessions", ""),
)


@login_required
def usage(request: HttpRequest) -> HttpResponse:
    """What the user has used, against their limits; minutes by month and by session."""
    user = authenticated_user(request)
    summary = quota_summary_for_user(user=user)
    meters = []
    for key, label, unit in USAGE_ROWS:
        used, limit = summary["usage"][key], summary["limits"][key]
        share = min(100, round(100 * used / limit)) if limit else None
        meters.append(
            {"key": key, "label": label, "unit": unit, "used": used, "limit": limit, "share": share}
        )
    context = {
        "meters": meters,
        "renews_at": summary["usage"]["month_renews_at"],
        "months": quota_monthly_history(user=user),
        "sessions": session_selectors.session_minutes_list_for_user(user=user),
    }
    return render(request, "dashboard/usage.html", context)
