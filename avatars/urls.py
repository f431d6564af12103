from __future__ import annotations

from django.urls import path

import musetalk_site.converters  # noqa: F401 - registers <id:...>
from avatars import apis, seed_apis, views

urlpatterns = [
    path("avatars/prepare", apis.AvatarPrepareApi.as_view(), name="avatar-prepare"),
    path("avatars/", apis.AvatarListApi.as_view(), name="avatar-list"),
    # Before the detail route: the seed's list is at a path an avatar_id could take.
    path("avatars/list", seed_apis.AvatarSeedListApi.as_view(), name="avatar-seed-list"),
    path("avatars/<id:avatar_id>", apis.AvatarDetailApi.as_view(), name="avatar-detail"),
    path("avatars/<id:avatar_id>/video", seed_apis.AvatarVideoApi.as_view(), name="avatar-video"),
    path(
        "avatars/<id:avatar_id>/idle-poses",
        seed_apis.AvatarIdlePosesApi.as_view(),
        name="avatar-idle-poses",
    ),
    path(
        "avatars/<id:avatar_id>/thumbnail",
        apis.AvatarThumbnailApi.as_view(),
        name="avatar-thumbnail",
    ),
    path("avatars/<id:avatar_id>/events", views.avatar_events, name="avatar-events"),
    path(
        "avatars/<id:avatar_id>/cache/warm",
        apis.AvatarCacheWarmApi.as_view(),
        name="avatar-cache-warm",
    ),
    path("avatars/<id:avatar_id>/cache", apis.AvatarCacheClearApi.as_view(), name="avatar-cache"),
    path(
        "avatars/<id:avatar_id>/cache/status",
        apis.AvatarCacheStatusApi.as_view(),
        name="avatar-cache-status",
    ),
    path("generate", apis.JobCreateApi.as_view(), name="job-create"),
    path("generate/", apis.JobListApi.as_view(), name="job-list"),
    path("generate/<id:request_id>", apis.JobDeleteApi.as_view(), name="job-delete"),
    path("generate/<id:request_id>/status", apis.JobStatusApi.as_view(), name="job-status"),
    path("generate/<id:request_id>/cancel", apis.JobCancelApi.as_view(), name="job-cancel"),
    path("generate/<id:request_id>/download", apis.JobDownloadApi.as_view(), name="job-download"),
    path("generate/<id:request_id>/events", views.job_events, name="job-events"),
]
