from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from avatars import services
from avatars.models import Avatar, GenerationJob
from musetalk_site.admin_actions import run_admin_action


@admin.register(Avatar)
class AvatarAdmin(admin.ModelAdmin):
    list_display = [
        "avatar_id",
        "owner",
        "status",
        "progress",
        "frame_count",
        "fps",
        "face_backend",
        "model_profile",
        "updated_at",
    ]
    list_filter = ["status", "face_backend", "model_profile", "created_at"]
    search_fields = ["avatar_id", "owner__username", "owner__email"]
    list_select_related = ["owner"]
    readonly_fields = [
        "status",
        "progress",
        "stage",
        "error",
        "revision",
        "has_assets",
        "frame_count",
        "fps",
        "width",
        "height",
        "size_bytes",
        "face_backend",
        "model_profile",
        "created_at",
        "updated_at",
        "queued_at",
        "started_at",
        "finished_at",
    ]
    actions = ["reprepare"]

    @admin.action(description="Re-prepare selected avatars from their source video")
    def reprepare(self, request: HttpRequest, queryset: QuerySet[Avatar]) -> None:
        run_admin_action(
            self,
            request,
            queryset,
            lambda avatar: services.avatar_reprepare(avatar=avatar),
            "Queued re-preparation of",
        )


@admin.register(GenerationJob)
class GenerationJobAdmin(admin.ModelAdmin):
    list_display = [
        "request_id",
        "owner",
        "avatar",
        "status",
        "progress",
        "duration_seconds",
        "queued_at",
        "finished_at",
    ]
    list_filter = ["status", "queued_at"]
    search_fields = ["request_id", "owner__username", "avatar__avatar_id"]
    list_select_related = ["owner", "avatar"]
    readonly_fields = [
        "request_id",
        "status",
        "progress",
        "error",
        "result",
        "output_name",
        "frame_count",
        "duration_seconds",
        "cancel_requested",
        "attempts",
        "queued_at",
        "started_at",
        "first_frame_at",
        "finished_at",
        "updated_at",
    ]
    actions = ["cancel"]

    @admin.action(description="Cancel selected jobs")
    def cancel(self, request: HttpRequest, queryset: QuerySet[GenerationJob]) -> None:
        run_admin_action(
            self, request, queryset, lambda job: services.job_cancel(job=job), "Cancelled"
        )
