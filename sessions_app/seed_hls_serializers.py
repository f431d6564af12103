"""The seed API's HLS answers, as serializers: they document the keys and shape the output."""

from __future__ import annotations

from rest_framework import serializers


def _nullable_float() -> serializers.FloatField:
    return serializers.FloatField(allow_null=True)


class HlsConfigSerializer(serializers.Serializer):
    batch_size = serializers.IntegerField()
    playback_fps = serializers.IntegerField(allow_null=True)
    musetalk_fps = serializers.IntegerField(allow_null=True)
    segment_duration = serializers.FloatField()
    part_duration = _nullable_float()
    hls_server_timing = serializers.BooleanField(allow_null=True)


class HlsCreatedConfigSerializer(HlsConfigSerializer):
    fps = serializers.IntegerField(help_text="The frame rate the speech is made at")
    chunk_duration = serializers.FloatField(help_text="Seconds of speech per segment")


class HlsCreatedSerializer(serializers.Serializer):
    session_id = serializers.CharField()
    player_url = serializers.CharField()
    manifest_url = serializers.CharField(help_text="The idle loop (index.m3u8)")
    live_manifest_url = serializers.CharField()
    status_url = serializers.CharField()
    avatar_id = serializers.CharField()
    user_id = serializers.CharField(allow_null=True)
    expires_in_seconds = serializers.IntegerField()
    config = HlsCreatedConfigSerializer()
    avatar_cache_warm = serializers.DictField(allow_null=True)


class HlsTimingSerializer(serializers.Serializer):
    offset_seconds = serializers.FloatField()
    offset_frames = serializers.IntegerField()
    timing_source = serializers.CharField()


class HlsStreamStartedSerializer(serializers.Serializer):
    request_id = serializers.CharField()
    session_id = serializers.CharField()
    status = serializers.CharField()
    manifest_url = serializers.CharField(help_text="The utterance (live.m3u8)")
    message = serializers.CharField()
    timing = HlsTimingSerializer()


LIVE_STATUS_HELP = "queued, streaming, idle (every segment published and played) or failed"


def _live_status(extra: str = "") -> serializers.CharField:
    return serializers.CharField(help_text=LIVE_STATUS_HELP + extra)


class HlsStatusSerializer(HlsConfigSerializer):
    session_id = serializers.CharField()
    avatar_id = serializers.CharField()
    user_id = serializers.CharField(allow_null=True)
    created_at = serializers.FloatField(help_text="Epoch seconds")
    last_activity = serializers.FloatField(help_text="Epoch seconds")
    age_seconds = serializers.FloatField()
    idle_seconds = serializers.FloatField()
    idle_start_wall_time = serializers.FloatField()
    idle_duration_seconds = _nullable_float()
    idle_elapsed_seconds = _nullable_float()
    idle_cycle_frames = serializers.IntegerField(allow_null=True)
    timing_source = serializers.CharField()
    status = _live_status()
    live_ready = serializers.BooleanField()
    active_stream = serializers.CharField(allow_null=True)
    live_segment_count = serializers.IntegerField()
    last_completed_stream = serializers.CharField(allow_null=True)
    last_completed_at = _nullable_float()
    last_completed_had_segments = serializers.BooleanField()
    error = serializers.CharField(allow_blank=True)
    live_timing = serializers.DictField(allow_null=True)
    expires_at = serializers.FloatField(help_text="Epoch seconds")


class HlsDeletedSerializer(serializers.Serializer):
    status = serializers.CharField(help_text="deleted")
    session_id = serializers.CharField()


class HlsBriefSerializer(HlsConfigSerializer):
    session_id = serializers.CharField()
    user_id = serializers.CharField(allow_null=True)
    avatar_id = serializers.CharField()
    age_seconds = serializers.FloatField()
    idle_seconds = serializers.FloatField()
    status = _live_status()
    active_stream = serializers.CharField(allow_null=True)
    live_manifest = serializers.CharField()
    player_url = serializers.CharField()


class HlsStatsSerializer(serializers.Serializer):
    scope = serializers.ChoiceField(choices=["user", "all"])
    total_sessions = serializers.IntegerField()
    active_streams = serializers.IntegerField()
    sessions = HlsBriefSerializer(many=True)


class HlsGroupConfigSerializer(HlsConfigSerializer):
    count = serializers.IntegerField()


class HlsGroupSessionSerializer(serializers.Serializer):
    session_id = serializers.CharField()
    player_url = serializers.CharField()
    status_url = serializers.CharField()
    manifest_url = serializers.CharField()
    status = _live_status("; missing once the session ended")


class HlsGroupSerializer(serializers.Serializer):
    group_id = serializers.CharField()
    avatar_id = serializers.CharField()
    created_at = serializers.FloatField(help_text="Epoch seconds")
    count = serializers.IntegerField()
    config = HlsGroupConfigSerializer()
    sessions = HlsGroupSessionSerializer(many=True)
    stream_all_url = serializers.CharField()


class HlsGroupStreamedSerializer(serializers.Serializer):
    group_id = serializers.CharField()
    started = serializers.IntegerField()
    failed = serializers.IntegerField()
    results = serializers.ListField(
        child=serializers.DictField(),
        help_text="Per session: the answer of its stream, or its status (error, missing) "
        "and the detail",
    )


class HlsGroupDeletedSerializer(serializers.Serializer):
    group_id = serializers.CharField()
    deleted_sessions = serializers.ListField(child=serializers.CharField())
    # The seed's key; the serializer's metaclass takes declared fields off the class, so this
    # does not hide Serializer.errors.
    errors = serializers.ListField(child=serializers.DictField())  # type: ignore[assignment]
