"""The platform's own rows: per-user quota overrides and the monthly minutes ledger.

They know only the user; the apps count their own rows (see :mod:`musetalk_site.quotas`).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

DEFAULT_HELP = "Empty: the platform default ({setting}). 0: unlimited."


class UserQuota(models.Model):
    """One user's limits where they differ from the platform defaults (``QUOTA_*``)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quota"
    )
    max_avatars = models.PositiveIntegerField(
        null=True, blank=True, help_text=DEFAULT_HELP.format(setting="QUOTA_MAX_AVATARS")
    )
    max_active_sessions = models.PositiveIntegerField(
        null=True, blank=True, help_text=DEFAULT_HELP.format(setting="QUOTA_MAX_ACTIVE_SESSIONS")
    )
    monthly_minutes = models.PositiveIntegerField(
        null=True, blank=True, help_text=DEFAULT_HELP.format(setting="QUOTA_MONTHLY_MINUTES")
    )
    storage_mb = models.PositiveIntegerField(
        "storage (MB)",
        null=True,
        blank=True,
        help_text=DEFAULT_HELP.format(setting="QUOTA_STORAGE_MB"),
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "quota"

    def __str__(self) -> str:
        return f"quota of user {self.user_id}"


class MonthlyUsage(models.Model):
    """Seconds of video generated (videos and live streams) by one user in one calendar
    month (UTC). A ledger rather than a sum over rows: deleting a video, an avatar or a
    session does not give its minutes back."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="monthly_usage"
    )
    month = models.DateField(help_text="The first day of the month (UTC)")
    generated_seconds = models.FloatField(default=0.0)

    class Meta:
        ordering = ["-month"]
        constraints = [
            models.UniqueConstraint(fields=["user", "month"], name="monthly_usage_unique")
        ]

    def __str__(self) -> str:
        return f"{self.month:%Y-%m} of user {self.user_id}"


class ApiToken(models.Model):
    """A named API key of one user (``musetalk_site.api_tokens``). Only a digest of the key
    is kept: the key itself is shown once, when it is made."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=64)
    prefix = models.CharField(max_length=16, help_text="The key's first characters")
    digest = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the key")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API token"
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["user", "name"], name="api_token_name_unique")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"
