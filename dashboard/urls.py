from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path, reverse_lazy

import musetalk_site.converters  # noqa: F401 - registers <id:...>
from dashboard import views

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("signup/", views.signup, name="signup"),
    path(
        "account/password/",
        auth_views.PasswordChangeView.as_view(
            template_name="account/password_change.html",
            success_url=reverse_lazy("account-password-done"),
        ),
        name="account-password",
    ),
    path(
        "account/password/done/",
        auth_views.PasswordChangeDoneView.as_view(template_name="account/password_done.html"),
        name="account-password-done",
    ),
    path(
        "dashboard/avatars/<id:avatar_id>/delete/",
        views.avatar_delete,
        name="avatar-delete-page",
    ),
    path("dashboard/videos/", views.videos, name="dashboard-videos"),
    path("dashboard/live/", views.live, name="dashboard-live"),
    path("dashboard/usage/", views.usage, name="dashboard-usage"),
    path("account/tokens/", views.tokens, name="account-tokens"),
    path("account/tokens/<int:token_id>/revoke/", views.token_revoke, name="account-token-revoke"),
    path(
        "account/tokens/sign-in/revoke/",
        views.signin_token_revoke_page,
        name="account-signin-token-revoke",
    ),
]
