"""The seed API's session shapes beside ours: status keys, stats' ``sessions``, ``/sessions/live``,
the delete words, query-or-form parameters; and the seed HLS layer's live publication rules."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from django.utils import timezone

from sessions_app.models import StreamChunk, StreamRequest, StreamSession
from sessions_app.seed_hls import live_playlist, utterance_at
from sessions_app.seed_hls_payloads import hls_status_payload
from tests.factories import StreamRequestFactory, StreamSessionFactory

pytestmark = [pytest.mark.django_db]

T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def _redis(redis_server: str) -> None:
    """Session events and their ids live in Redis."""


def _at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def _epoch(seconds: float) -> float:
    return _at(seconds).timestamp()


def _utterance(session: StreamSession, status: str, made: list[float], **fields: object):
    """An utterance whose chunks (1 s each) were made at ``made`` seconds after T0."""
    request = StreamRequestFactory(session=session, status=status, **fields)
    for index, seconds in enumerate(made):
        chunk = StreamChunk.objects.create(
            request=request, index=index, file=f"chunks/x/chunk_{index + 1:04d}.mp4", duration=1.0
        )
        StreamChunk.objects.filter(pk=chunk.pk).update(created_at=_at(seconds))
    return request


def test_chunks_are_published_as_they_are_made_and_ready_from_the_third():
    session = StreamSessionFactory()
    request = _utterance(session, StreamRequest.Status.STREAMING, [0.0, 0.5, 1.0, 1.5])
    early = utterance_at(request=request, now=_epoch(0.7))
    assert [s.number for s in early.segments] == [1, 2]
    assert not early.ready and not early.ended and early.off_air is None
    later = utterance_at(request=request, now=_epoch(1.2))
    assert [s.published for s in later.segments] == [_epoch(0), _epoch(0.5), _epoch(1)]
    assert later.ready and not later.ended


def test_a_completed_utterance_ends_at_once_and_streams_until_played_from_ready():
    session = StreamSessionFactory()
    request = _utterance(
        session, StreamRequest.Status.COMPLETED, [0.0, 0.1, 0.2, 0.3], finished_at=_at(0.4)
    )
    ended = utterance_at(request=request, now=_epoch(0.5))
    assert len(ended.segments) == 4 and ended.ended and ended.ready and ended.off_air is None
    # Ready at 0.2 (the third segment); four 1 s segments played from there end at 4.2.
    assert utterance_at(request=request, now=_epoch(4.1)).off_air is None
    assert utterance_at(request=request, now=_epoch(4.3)).off_air == _epoch(4.2)


def test_a_slow_utterance_streams_until_its_late_last_segment_has_played():
    session = StreamSessionFactory()
    request = _utterance(
        session, StreamRequest.Status.COMPLETED, [0.0, 1.0, 2.0, 10.0], finished_at=_at(10.1)
    )
    # Ready at 2; played at 3, 4 and 5; the fourth, published at 10, plays until 11.
    assert utterance_at(request=request, now=_epoch(10.9)).off_air is None
    assert utterance_at(request=request, now=_epoch(11.1)).off_air == _epoch(11)


def test_a_short_utterance_is_ready_once_its_playlist_ended():
    session = StreamSessionFactory()
    request = _utterance(session, StreamRequest.Status.STREAMING, [0.0])
    assert not utterance_at(request=request, now=_epoch(0.5)).ready
    StreamRequest.objects.filter(pk=request.pk).update(
        status=StreamRequest.Status.COMPLETED, finished_at=_at(0.6)
    )
    request.refresh_from_db()
    done = utterance_at(request=request, now=_epoch(0.7))
    assert done.ready and done.ended and done.off_air is None
    assert utterance_at(request=request, now=_epoch(1.7)).off_air == _epoch(1.6)


def test_an_interrupted_utterance_keeps_what_was_published_and_ends_at_once():
    session = StreamSessionFactory()
    request = _utterance(
        session, StreamRequest.Status.INTERRUPTED, [0.0, 0.1, 2.0], finished_at=_at(1.2)
    )
    utterance = utterance_at(request=request, now=_epoch(10))
    assert [s.number for s in utterance.segments] == [1, 2]
    assert utterance.ended and utterance.off_air == _epoch(1.2)


def test_the_live_playlist_is_an_event_playlist_with_relative_segments_then_endlist():
    session = StreamSessionFactory(chunk_duration=1.0, fps=25)
    request = _utterance(session, StreamRequest.Status.COMPLETED, [0.0], finished_at=_at(0.1))
    text = live_playlist(session=session, stream_id=None, token="tok")
    lines = text.splitlines()
    assert lines[:6] == [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        "#EXT-X-TARGETDURATION:1",
        "#EXT-X-PLAYLIST-TYPE:EVENT",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        "#EXT-X-MEDIA-SEQUENCE:0",
    ]
    assert lines[6:] == [
        "#EXTINF:1.000000,",
        f"segments/{request.request_id}/chunk_0001.ts?token=tok",
        "#EXT-X-ENDLIST",
    ]


def test_status_moves_from_idle_to_queued_to_streaming_to_ready_to_idle(monkeypatch):
    session = StreamSessionFactory()
    clock = {"now": _epoch(0)}
    monkeypatch.setattr("sessions_app.seed_hls_payloads.time.time", lambda: clock["now"])

    def state() -> tuple:
        body = hls_status_payload(session)
        return body["status"], body["live_ready"], body["active_stream"]

    assert state() == ("idle", False, None)
    request = _utterance(session, StreamRequest.Status.QUEUED, [])
    assert state() == ("queued", False, request.request_id)
    _utterance_chunks_made(request, [0.5, 0.6, 0.7])
    StreamRequest.objects.filter(pk=request.pk).update(status=StreamRequest.Status.STREAMING)
    clock["now"] = _epoch(0.65)
    assert state() == ("streaming", False, request.request_id)
    clock["now"] = _epoch(0.75)
    assert state() == ("streaming", True, request.request_id)
    StreamRequest.objects.filter(pk=request.pk).update(
        status=StreamRequest.Status.COMPLETED, finished_at=_at(0.8)
    )
    clock["now"] = _epoch(3.6)  # ready at 0.7, and three 1 s segments: streaming until 3.7
    assert state() == ("streaming", True, request.request_id)
    clock["now"] = _epoch(3.8)
    body = hls_status_payload(session)
    assert (body["status"], body["live_ready"], body["active_stream"]) == ("idle", False, None)
    assert body["last_completed_stream"] == request.request_id
    assert body["last_completed_at"] == pytest.approx(_epoch(3.7))
    assert body["last_completed_had_segments"] is True
    assert body["live_segment_count"] == 3


def _utterance_chunks_made(request: StreamRequest, made: list[float]) -> None:
    for index, seconds in enumerate(made):
        chunk = StreamChunk.objects.create(
            request=request, index=index, file=f"chunks/x/chunk_{index + 1:04d}.mp4", duration=1.0
        )
        StreamChunk.objects.filter(pk=chunk.pk).update(created_at=_at(seconds))


def test_a_failed_utterance_reads_failed(monkeypatch):
    session = StreamSessionFactory()
    StreamRequestFactory(
        session=session, status=StreamRequest.Status.FAILED, finished_at=timezone.now()
    )
    body = hls_status_payload(session)
    assert body["status"] == "failed" and body["active_stream"] is None


# --- the session REST shapes ---------------------------------------------------------------


def test_session_status_carries_the_seed_keys_beside_ours(api):
    session = StreamSessionFactory(owner=api.user)
    request = StreamRequestFactory(session=session, status=StreamRequest.Status.STREAMING)
    body = api.get(f"/sessions/{session.session_id}/status").json()
    assert body["active_stream"] == request.request_id
    assert body["last_activity"] == pytest.approx(session.last_activity_at.timestamp())
    assert body["age_seconds"] >= 0 and body["idle_seconds"] >= 0
    assert body["status"] == "active" and body["active_request"]["request_id"]  # ours


def test_stats_list_the_open_sessions_as_the_seed_does(api, other_api):
    mine = StreamSessionFactory(owner=api.user)
    request = StreamRequestFactory(session=mine, status=StreamRequest.Status.QUEUED)
    StreamSessionFactory(owner=api.user, status=StreamSession.Status.ENDED)
    StreamSessionFactory(owner=other_api.user)
    body = api.get("/sessions/stats").json()
    assert [s["session_id"] for s in body["sessions"]] == [mine.session_id]
    listed = body["sessions"][0]
    assert listed["active_stream"] == request.request_id and listed["user_id"] == "app-user-1"
    assert {"age_seconds", "idle_seconds", "avatar_id"} <= set(listed)
    assert body["active_sessions"] == 1  # ours, beside


def test_sessions_live_lists_speaking_sessions_by_kind(api):
    speaking = StreamSessionFactory(owner=api.user)
    request = StreamRequestFactory(session=speaking, status=StreamRequest.Status.STREAMING)
    StreamSessionFactory(owner=api.user)  # silent
    hls = StreamSessionFactory(owner=api.user, kind=StreamSession.Kind.HLS)
    hls_request = StreamRequestFactory(session=hls, status=StreamRequest.Status.QUEUED)
    body = api.get("/sessions/live").json()
    assert body["total_live"] == 2
    assert [s["active_stream"] for s in body["session_streams"]] == [request.request_id]
    assert [s["active_stream"] for s in body["hls_streams"]] == [hls_request.request_id]
    assert body["hls_streams"][0]["live_manifest"] == f"/hls/sessions/{hls.session_id}/live.m3u8"
    assert body["webrtc_streams"] == []


def test_delete_answers_deleted_then_not_found(api, django_capture_on_commit_callbacks):
    session = StreamSessionFactory(owner=api.user)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.delete(f"/sessions/{session.session_id}")
    assert response.status_code == 200
    assert response.json()["status"] == "deleted"
    assert response.json()["session_id"] == session.session_id
    assert api.delete(f"/sessions/{session.session_id}").status_code == 404
    assert api.get(f"/sessions/{session.session_id}/status").status_code == 404
    # Our own list still shows it, ended.
    [listed] = api.get("/sessions/").json()["results"]
    assert (listed["session_id"], listed["status"]) == (session.session_id, "ended")


def test_an_expired_session_is_not_found_either(api):
    session = StreamSessionFactory(owner=api.user, expires_at=timezone.now())
    assert api.get(f"/sessions/{session.session_id}/status").status_code == 404


def test_create_takes_a_form_body_as_well_as_the_query(api):
    response = api.post("/sessions/create?avatar_id=anna", {"fps": 12, "chunk_duration": 1})
    assert response.json()["config"] == {"batch_size": 2, "fps": 12, "chunk_duration": 1}
    form_only = api.post("/sessions/create", {"avatar_id": "anna", "batch_size": 3})
    assert form_only.status_code == 200 and form_only.json()["config"]["batch_size"] == 3


def test_stream_takes_interrupt_from_the_query(api, speech_wav: Path):
    session = api.post("/sessions/create?avatar_id=anna").json()["session_id"]
    with speech_wav.open("rb") as handle:
        first = api.post(f"/sessions/{session}/stream", {"audio_file": handle})
    assert first.status_code == 200
    with speech_wav.open("rb") as handle:
        busy = api.post(f"/sessions/{session}/stream", {"audio_file": handle})
    assert busy.status_code == 409
    with speech_wav.open("rb") as handle:
        again = api.post(f"/sessions/{session}/stream?interrupt=true", {"audio_file": handle})
    assert again.status_code == 200, again.json()
    assert StreamRequest.objects.get(request_id=first.json()["request_id"]).status == "interrupted"


# --- the seed HLS API over REST -------------------------------------------------------------


def test_hls_create_takes_the_seed_query_and_answers_its_keys(api):
    response = api.post(
        "/hls/sessions/create?avatar_id=anna&playback_fps=30&musetalk_fps=15&batch_size=2"
        "&segment_duration=1.0&hls_server_timing=true"
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    sid = body["session_id"]
    assert body["player_url"].startswith(f"/hls/player/{sid}?token=")
    assert body["manifest_url"].startswith(f"/hls/sessions/{sid}/index.m3u8?token=")
    # The config says what the session uses, as its status will: speech and playback at
    # musetalk_fps, whole segments, no server timing.
    config = body["config"]
    assert (config["playback_fps"], config["musetalk_fps"], config["fps"]) == (15, 15, 15)
    assert config["segment_duration"] == 1.0 and config["hls_server_timing"] is False
    assert config == {
        key: value
        for key, value in api.get(f"/hls/sessions/{sid}/status").json().items()
        if key in config
    } | {"fps": 15, "chunk_duration": 1.0}
    assert body["user_id"] is None and "expires_in_seconds" in body
    session = StreamSession.objects.get(session_id=sid)
    assert (session.kind, session.fps, session.chunk_duration) == ("hls", 15, 1.0)


def test_hls_status_stats_and_delete_speak_the_seed(api, django_capture_on_commit_callbacks):
    sid = api.post("/hls/sessions/create?avatar_id=anna").json()["session_id"]
    status = api.get(f"/hls/sessions/{sid}/status").json()
    assert (status["status"], status["live_ready"], status["active_stream"]) == (
        "idle",
        False,
        None,
    )
    assert status["created_at"] == pytest.approx(
        StreamSession.objects.get(session_id=sid).created_at.timestamp()
    )
    stats = api.get("/hls/sessions/stats").json()
    assert stats["total_sessions"] == 1 and stats["sessions"][0]["session_id"] == sid
    assert api.get(f"/hls/sessions/{sid}/live.m3u8").status_code == 404  # nothing streamed
    with django_capture_on_commit_callbacks(execute=True):
        deleted = api.delete(f"/hls/sessions/{sid}")
    assert deleted.json() == {"status": "deleted", "session_id": sid}
    for path in ("status", "index.m3u8", "live.m3u8", "segments/idle_000.ts"):
        assert api.get(f"/hls/sessions/{sid}/{path}").status_code == 404, path
    assert api.delete(f"/hls/sessions/{sid}").status_code == 404
    assert api.get("/hls/sessions/stats").json()["total_sessions"] == 0


def test_hls_sessions_of_another_user_are_not_found(api, other_api):
    sid = api.post("/hls/sessions/create?avatar_id=anna").json()["session_id"]
    for path in ("status", "index.m3u8", "live.m3u8"):
        assert other_api.get(f"/hls/sessions/{sid}/{path}").status_code == 404
    assert other_api.delete(f"/hls/sessions/{sid}").status_code == 404
    assert other_api.get("/hls/sessions/stats").json()["sessions"] == []


def test_hls_groups_create_stream_and_delete_their_sessions_together(
    api, other_api, speech_wav: Path, django_capture_on_commit_callbacks
):
    created = api.post(
        "/hls/groups/create?avatar_id=anna&count=3&musetalk_fps=12&segment_duration=2"
    )
    assert created.status_code == 200, created.json()
    group = created.json()
    gid = group["group_id"]
    assert group["count"] == 3 and group["config"]["count"] == 3
    assert group["config"]["musetalk_fps"] == 12
    sids = [s["session_id"] for s in group["sessions"]]
    assert {s["status"] for s in group["sessions"]} == {"idle"}
    assert StreamSession.objects.filter(session_id__in=sids, kind="hls", fps=12).count() == 3
    assert other_api.get(f"/hls/groups/{gid}").status_code == 404

    with speech_wav.open("rb") as handle:
        streamed = api.post(f"/hls/groups/{gid}/stream", {"audio_file": handle}).json()
    assert (streamed["started"], streamed["failed"]) == (3, 0)
    assert {r["session_id"] for r in streamed["results"]} == set(sids)
    assert StreamRequest.objects.filter(session__session_id__in=sids).count() == 3
    listed = api.get(f"/hls/groups/{gid}").json()
    assert {s["status"] for s in listed["sessions"]} == {"queued"}

    with django_capture_on_commit_callbacks(execute=True):
        deleted = api.delete(f"/hls/groups/{gid}").json()
    assert deleted == {"group_id": gid, "deleted_sessions": sids, "errors": []}
    assert not StreamSession.objects.filter(session_id__in=sids, status="active").exists()
    assert api.get(f"/hls/groups/{gid}").status_code == 404
    assert api.delete(f"/hls/groups/{gid}").status_code == 404


def test_hls_group_count_is_bounded(api):
    assert api.post("/hls/groups/create?avatar_id=anna&count=13").status_code == 400
    assert not StreamSession.objects.exists()


def test_the_hls_player_url_opens_with_the_owners_authorization_header(api, other_api):
    sid = api.post("/hls/sessions/create?avatar_id=anna").json()["session_id"]
    page = api.get(f"/hls/player/{sid}")
    assert page.status_code == 200 and b"/master.m3u8?token=" in page.content
    assert other_api.get(f"/hls/player/{sid}").status_code == 404
