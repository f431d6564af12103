"""The user admin gains each user's quota: the overrides (editable) and the usage (read-only)."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.models import User
from django.utils.html import format_html_join
from django.utils.safestring import SafeString, mark_safe

from musetalk_site.models import ApiToken, MonthlyUsage, UserQuota
from musetalk_site.quotas import quota_summary_for_user

USAGE_ROWS = (
    ("avatars", "avatars", ""),
    ("active_sessions", "open sessions", ""),
    ("monthly_minutes", "minutes this month", ""),
    ("storage_mb", "storage", " MB"),
)


class UserQuotaInline(admin.StackedInline):
    model = UserQuota
    can_delete = True
    max_num = 1
    extra = 1
    fields = ("max_avatars", "max_active_sessions", "monthly_minutes", "storage_mb")
    verbose_name = verbose_name_plural = "quota overrides"


class UserAdmin(BaseUserAdmin):
    inlines = [*BaseUserAdmin.inlines, UserQuotaInline]
    readonly_fields = [*BaseUserAdmin.readonly_fields, "quota_usage"]
    fieldsets = [*(BaseUserAdmin.fieldsets or ()), ("Quota", {"fields": ("quota_usage",)})]

    @admin.display(description="usage / limit")
    def quota_usage(self, user: User) -> SafeString | str:
        """One line per quota: what the user uses now of the limit in force."""
        if user.pk is None:
            return "-"
        summary = quota_summary_for_user(user=user)
        lines = []
        for key, label, unit in USAGE_ROWS:
            limit = summary["limits"][key]
            shown = "unlimited" if limit is None else f"{limit}{unit}"
            lines.append(f"{label}: {summary['usage'][key]}{unit} of {shown}")
        renews = summary["usage"]["month_renews_at"]
        lines.append(f"(the monthly minutes renew on {renews:%Y-%m-%d})")
        return format_html_join(mark_safe("<br>"), "{}", ((line,) for line in lines))


admin.site.unregister(User)
admin.site.register(User, UserAdmin)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Keys are made by their owners (shown once, on the tokens page); admins see and
    revoke them."""

    list_display = ("name", "user", "prefix", "created_at", "last_used_at")
    list_filter = ("created_at",)
    search_fields = ("name", "user__username", "prefix")
    readonly_fields = ("user", "name", "prefix", "created_at", "last_used_at")
    exclude = ("digest",)

    def has_add_permission(self, request: object) -> bool:
        return False


@admin.register(MonthlyUsage)
class MonthlyUsageAdmin(admin.ModelAdmin):
    """Every user's generated minutes by month (the ledger the quotas read); read-only."""

    list_display = ("user", "month", "minutes")
    list_filter = ("month",)
    search_fields = ("user__username",)
    ordering = ("-month", "-generated_seconds")

    @admin.display(description="minutes generated", ordering="generated_seconds")
    def minutes(self, row: MonthlyUsage) -> float:
        return round(row.generated_seconds / 60, 1)

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False
