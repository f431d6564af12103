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
