from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from musetalk_site.admin_actions import run_admin_action
from sessions_app import services
from sessions_app.models import StreamChunk, StreamRequest, StreamSession


class StreamRequestInline(admin.TabularInline):
    model = StreamRequest
    extra = 0
    can_delete = False
    fields = readonly_fields = (
        "request_id",
        "status",
        "total_chunks",
        "queued_at",
        "first_chunk_at",
        "finished_at",
    )
    show_change_link = True


@admin.register(StreamSession)
class StreamSessionAdmin(admin.ModelAdmin):
    list_display = [
        "session_id",
        "owner",
        "avatar",
        "user_id",
        "kind",
        "status",
        "chunks_served",
        "created_at",
        "expires_at",
    ]
    list_filter = ["status", "kind", "created_at"]
    search_fields = ["session_id", "user_id", "owner__username", "avatar__avatar_id"]
    list_select_related = ["owner", "avatar"]
    readonly_fields = [
        "session_id",
        "status",
        "chunks_served",
        "created_at",
        "expires_at",
        "last_activity_at",
        "ended_at",
    ]
    inlines = [StreamRequestInline]
    actions = ["end_sessions"]

    @admin.action(description="End selected sessions")
    def end_sessions(self, request: HttpRequest, queryset: QuerySet[StreamSession]) -> None:
        run_admin_action(
            self, request, queryset, lambda s: services.session_end(session=s), "Ended"
        )


class StreamChunkInline(admin.TabularInline):
    model = StreamChunk
    extra = 0
    can_delete = False
    fields = readonly_fields = ("index", "file", "duration", "created_at")


@admin.register(StreamRequest)
class StreamRequestAdmin(admin.ModelAdmin):
    list_display = ["request_id", "session", "status", "total_chunks", "queued_at", "finished_at"]
    list_filter = ["status", "queued_at"]
    search_fields = ["request_id", "session__session_id"]
    readonly_fields = [
        "request_id",
        "session",
        "status",
        "total_chunks",
        "error",
        "queued_at",
        "started_at",
        "first_chunk_at",
        "finished_at",
        "engine_timings",
    ]
    inlines = [StreamChunkInline]
