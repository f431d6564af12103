"""HLS: the timeline and its playlist (pure), the idle parts and segments (PyAV), the views."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import av
import numpy as np
import pytest
from django.conf import settings
from django.test import Client
from rest_framework.test import APIClient

from avatars.services.avatar import avatar_dir
from inference.layout import AUDIO_TRACK
from inference.media import Mp4Writer, write_audio_track
from sessions_app.hls import hls_idle_build, hls_session_dir
from sessions_app.hls import timeline as tl
from sessions_app.hls.timeline import Clip, LiveRequest, Timeline, timeline_extend, timeline_new
from sessions_app.models import StreamChunk, StreamRequest, StreamSession
from sessions_app.tokens import player_token_make
from tests.factories import StreamRequestFactory, StreamSessionFactory, UserFactory
from tests.media import make_face_video, tone

IDLE = [Clip("hls/a/idle_000.mp4", 0.8), Clip("hls/a/idle_001.mp4", 0.8)]
T0 = 1_000_000.0


@dataclass
class Entry:
    uri: str
    duration: float
    discontinuity: bool


@dataclass
class Playlist:
    tags: dict[str, str] = field(default_factory=dict)
    segments: list[Entry] = field(default_factory=list)

    @property
    def sequence(self) -> int:
        return int(self.tags["EXT-X-MEDIA-SEQUENCE"])

    @property
    def target(self) -> int:
        return int(self.tags["EXT-X-TARGETDURATION"])

    def kinds(self) -> list[str]:
        return [entry.uri.split("/")[-1].split("_")[0] for entry in self.segments]


def parse_m3u8(text: str) -> Playlist:
    """A strict reader of the live media playlists these tests expect."""
    lines = text.strip().splitlines()
    assert lines[0] == "#EXTM3U"
    playlist, duration, discontinuity = Playlist(), None, False
    for line in lines[1:]:
        if line == "#EXT-X-DISCONTINUITY":
            discontinuity = True
        elif line.startswith("#EXTINF:"):
            duration = float(line[len("#EXTINF:") :].rstrip(","))
        elif line.startswith("#EXT"):
            name, _, value = line[1:].partition(":")
            playlist.tags[name] = value
        else:
            assert duration is not None, f"URI without #EXTINF: {line}"
            playlist.segments.append(Entry(line, duration, discontinuity))
            duration, discontinuity = None, False
    assert "EXT-X-ENDLIST" not in playlist.tags
    return playlist


def _valid(playlist: Playlist) -> None:
    assert playlist.tags["EXT-X-VERSION"] == "3"
    assert "EXT-X-DISCONTINUITY-SEQUENCE" in playlist.tags
    assert len(playlist.segments) >= tl.WINDOW_MIN_SEGMENTS
    assert sum(e.duration for e in playlist.segments) >= 3 * playlist.target
    assert all(round(e.duration) <= playlist.target for e in playlist.segments)
    assert not playlist.segments[0].discontinuity


def _render(timeline: Timeline) -> Playlist:
    return parse_m3u8(tl.playlist_render(timeline, segment_url=lambda s: s.name))


def _switches_are_discontinuities(playlist: Playlist) -> None:
    kinds = playlist.kinds()
    for i in range(1, len(kinds)):
        assert playlist.segments[i].discontinuity == (kinds[i] != kinds[i - 1]), kinds


def _chunks(count: int, seconds: float = 1.0) -> list[Clip]:
    return [Clip(f"chunks/r/chunk_{i + 1:04d}.mp4", seconds) for i in range(count)]


# -- the timeline and its playlist --------------------------------------------------------


def test_a_new_playlist_is_valid_and_holds_idle_up_to_the_clock():
    timeline = timeline_new(target=1, now=T0, done_pk=0, idle=IDLE)
    timeline_extend(timeline, now=T0, idle=IDLE, live=[])
    playlist = _render(timeline)
    _valid(playlist)
    assert playlist.sequence == 0
    assert set(playlist.kinds()) == {"idle"}
    assert [e.duration for e in playlist.segments] == [0.8] * len(playlist.segments)
    assert [e.uri for e in playlist.segments][:3] == ["idle_0.ts", "idle_1.ts", "idle_2.ts"]
    assert timeline.edge >= T0 + tl.LEAD_TARGETS * timeline.target
    assert [s.source for s in timeline.segments[:3]] == [IDLE[0].source, IDLE[1].source] * 1 + [
        IDLE[0].source
    ]


def test_the_window_slides_with_the_clock_and_the_media_sequence_only_grows():
    timeline = timeline_new(target=1, now=T0, done_pk=0, idle=IDLE)
    sequences, starts = [], {}
    for step in range(40):
        timeline_extend(timeline, now=T0 + step * 0.5, idle=IDLE, live=[])
        playlist = _render(timeline)
        _valid(playlist)
        sequences.append(playlist.sequence)
        starts.update({s.seq: s.start for s in timeline.segments})
    assert sequences == sorted(sequences) and sequences[-1] > 10
    # 20 s of wall clock publish about 20 s of idle: paced, not flooded.
    assert timeline.next_start == pytest.approx(20 + 3 * 0.8 + 1, abs=1.7)
    assert all(starts[n + 1] - starts[n] == pytest.approx(0.8) for n in sorted(starts)[:-1])
    # What left the window is kept a little (RFC 8216 6.2.2), then forgotten.
    assert len(timeline.segments) <= 3 * tl.WINDOW_MIN_SEGMENTS


def test_an_utterance_is_published_whole_between_two_discontinuities():
    timeline = timeline_new(target=1, now=T0, done_pk=0, idle=IDLE)
    timeline_extend(timeline, now=T0, idle=IDLE, live=[])
    queued = LiveRequest(pk=1, chunks=[], finished=False, cut=False)
    timeline_extend(timeline, now=T0 + 1, idle=IDLE, live=[queued])
    assert timeline.segments[-1].kind == "idle"  # idle goes on until the first chunk
    done = LiveRequest(pk=1, chunks=_chunks(3, 1.0), finished=True, cut=False)
    timeline_extend(timeline, now=T0 + 1.5, idle=IDLE, live=[done])
    timeline_extend(timeline, now=T0 + 5, idle=IDLE, live=[done])
    playlist = _render(timeline)
    _valid(playlist)
    _switches_are_discontinuities(playlist)
    kinds = playlist.kinds()
    assert "idle" in kinds[kinds.index("live") :]  # idle again after the utterance
    live = [e for e in playlist.segments if e.uri.startswith("live")]
    assert [e.duration for e in live] == [1.0, 1.0, 1.0]
    assert int(playlist.tags["EXT-X-DISCONTINUITY-SEQUENCE"]) == 0
    assert sum(e.discontinuity for e in playlist.segments) == 2
    # A finished utterance is never published twice.
    timeline_extend(timeline, now=T0 + 9, idle=IDLE, live=[done])
    assert [s.kind for s in timeline.segments].count("live") <= 3
    assert timeline.done_pk == 1


def test_a_fast_utterance_runs_ahead_of_the_clock_and_idle_waits_for_it():
    timeline = timeline_new(target=2, now=T0, done_pk=0, idle=IDLE)
    request = LiveRequest(pk=1, chunks=_chunks(10, 2.0), finished=True, cut=False)
    timeline_extend(timeline, now=T0, idle=IDLE, live=[request])
    assert [s.kind for s in timeline.segments][-10:] == ["live"] * 10
    assert timeline.edge >= T0 + 20
    # All of it is listed, and what played before it: a player does not skip its start.
    assert _render(timeline).kinds()[-11:] == ["idle"] + ["live"] * 10
    timeline_extend(timeline, now=T0 + 10, idle=IDLE, live=[request])
    assert timeline.segments[-1].kind == "live"  # 10 s of speech still to play


def test_a_slow_utterance_stalls_briefly_then_idles_until_its_next_chunk():
    timeline = timeline_new(target=1, now=T0, done_pk=0, idle=IDLE)
    first = LiveRequest(pk=1, chunks=_chunks(1), finished=False, cut=False)
    timeline_extend(timeline, now=T0, idle=IDLE, live=[first])
    edge = timeline.edge
    timeline_extend(timeline, now=edge + 1, idle=IDLE, live=[first])
    assert timeline.segments[-1].kind == "live"  # waits for the next chunk...
    timeline_extend(timeline, now=edge + tl.STALL_TARGETS + 0.1, idle=IDLE, live=[first])
    assert timeline.segments[-1].kind == "idle"  # ...but not forever
    second = LiveRequest(pk=1, chunks=_chunks(2), finished=True, cut=False)
    timeline_extend(timeline, now=edge + 4, idle=IDLE, live=[second])
    timeline_extend(timeline, now=edge + 6, idle=IDLE, live=[second])
    kinds = [s.kind for s in timeline.segments]
    assert kinds.count("live") == 2 and kinds[-1] == "idle"
    playlist = _render(timeline)
    _valid(playlist)
    _switches_are_discontinuities(playlist)


def test_an_interrupted_utterance_is_cut_and_the_next_one_follows():
    timeline = timeline_new(target=1, now=T0, done_pk=0, idle=IDLE)
    timeline_extend(timeline, now=T0, idle=IDLE, live=[])
    cut = LiveRequest(pk=1, chunks=_chunks(5), finished=True, cut=True)
    after = LiveRequest(pk=2, chunks=_chunks(2), finished=True, cut=False)
    timeline_extend(timeline, now=T0 + 0.5, idle=IDLE, live=[after, cut])
    assert [s.kind for s in timeline.segments].count("live") == 2
    assert timeline.done_pk == 2


def test_history_before_the_playlist_is_not_replayed():
    timeline = timeline_new(target=1, now=T0, done_pk=3, idle=IDLE)
    old = LiveRequest(pk=3, chunks=_chunks(2), finished=True, cut=False)
    timeline_extend(timeline, now=T0, idle=IDLE, live=[old])
    assert {s.kind for s in timeline.segments} == {"idle"}


def test_the_discontinuity_sequence_counts_the_tags_that_slid_out():
    timeline = timeline_new(target=1, now=T0, done_pk=0, idle=IDLE)
    utterances = {3: 1, 6: 2}  # step -> pk of an utterance of one chunk
    tagged: dict[int, bool] = {}  # media sequence number -> a discontinuity precedes it
    for step in range(40):
        pk = utterances.get(step)
        live = [LiveRequest(pk=pk, chunks=_chunks(1), finished=True, cut=False)] if pk else []
        timeline_extend(timeline, now=timeline.edge + 0.1, idle=IDLE, live=live)
        playlist = _render(timeline)
        _valid(playlist)
        for offset, entry in enumerate(playlist.segments[1:], start=1):
            tagged[playlist.sequence + offset] = entry.discontinuity
        # The first segment's own tag is counted in the sequence number instead of written.
        counted = sum(tag for seq, tag in tagged.items() if seq <= playlist.sequence)
        assert int(playlist.tags["EXT-X-DISCONTINUITY-SEQUENCE"]) == counted
    assert sum(tagged.values()) == 4
    assert int(playlist.tags["EXT-X-DISCONTINUITY-SEQUENCE"]) == 4
    assert not any(e.discontinuity for e in playlist.segments)


@pytest.mark.parametrize("chunk_seconds", [0.32, 1.0, 1.5, 2.0, 7.04])
def test_the_target_duration_covers_every_segment(chunk_seconds):
    target = tl.target_duration([0.8, chunk_seconds])
    assert target == max(1, math.ceil(chunk_seconds))
    timeline = timeline_new(target=target, now=T0, done_pk=0, idle=IDLE)
    request = LiveRequest(pk=1, chunks=_chunks(4, chunk_seconds), finished=True, cut=False)
    timeline_extend(timeline, now=T0, idle=IDLE, live=[request])
    _valid(_render(timeline))


def test_part_sizes_split_the_loop_evenly():
    assert tl.part_sizes(40, 25) == [20, 20]
    assert tl.part_sizes(50, 25) == [25, 25]
    assert tl.part_sizes(7, 25) == [7]
    assert sum(tl.part_sizes(513, 25)) == 513
    assert max(tl.part_sizes(513, 25)) - min(tl.part_sizes(513, 25)) <= 1


def test_a_segment_name_must_match_its_kind():
    timeline = timeline_new(target=1, now=T0, done_pk=0, idle=IDLE)
    assert tl.timeline_segment(timeline, "idle_0.ts") is timeline.segments[0]
    assert tl.timeline_segment(timeline, "live_0.ts") is None
    assert tl.timeline_segment(timeline, "../idle_0.ts") is None


# -- media and views ----------------------------------------------------------------------


def _decode(data: bytes) -> tuple[int, float, dict[str, str], float]:
    """(video frames, video seconds, codec per stream type, first video PTS in seconds)."""
    with av.open(io.BytesIO(data), format="mpegts") as container:
        codecs = {s.type: s.codec_context.name for s in container.streams}
        frames = [f for f in container.decode(video=0)]
    first = float(frames[0].pts * frames[0].time_base)
    last = float(frames[-1].pts * frames[-1].time_base)
    return len(frames), last - first + (last - first) / max(1, len(frames) - 1), codecs, first


@pytest.fixture
def session(db) -> StreamSession:
    """A session on an avatar whose idle parts the worker has built (as after preparing)."""
    session = StreamSessionFactory(chunk_duration=1.0, fps=25)
    folder = avatar_dir(session.avatar)
    folder.mkdir(parents=True)
    make_face_video(folder / "idle.mp4", seconds=1.6, fps=25, size=(64, 80))
    assert hls_idle_build(avatar=session.avatar)
    return session


def _chunk(session: StreamSession, request: StreamRequest, index: int, frames: int) -> None:
    name = f"chunks/{request.request_id}/chunk_{index + 1:04d}.mp4"
    path = Path(settings.MEDIA_ROOT) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = np.sin(np.arange(frames * 640) / 10).astype(np.float32) * 0.3
    with Mp4Writer(path, fps=25, width=64, height=80, audio=audio, tune="zerolatency") as writer:
        for i in range(frames):
            writer.write(np.full((80, 64, 3), 40 + 5 * i, np.uint8))
    StreamChunk.objects.create(request=request, index=index, file=name, duration=frames / 25)


def _get(client, session: StreamSession, path: str, token: str | None = None):
    token = token if token is not None else player_token_make(session_id=session.session_id)
    return client.get(f"/hls/{session.session_id}/{path}?token={token}")


def test_the_idle_loop_plays_as_segments_that_decode_with_video_and_audio(session):
    token = player_token_make(session_id=session.session_id)
    response = _get(APIClient(), session, "playlist.m3u8", token)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/vnd.apple.mpegurl"
    assert response["Cache-Control"] == "no-store"
    playlist = parse_m3u8(response.content.decode())
    _valid(playlist)
    for entry in playlist.segments:
        url = urlsplit(entry.uri)
        assert url.path.startswith(f"/hls/{session.session_id}/idle_") and url.path.endswith(".ts")
        assert parse_qs(url.query) == {"token": [token]}
    starts = []
    for entry in playlist.segments[:3]:
        body = APIClient().get(entry.uri)
        assert body.status_code == 200 and body["Content-Type"] == "video/mp2t"
        frames, seconds, codecs, first = _decode(body.content)
        assert codecs == {"video": "h264", "audio": "aac"}
        assert frames == round(entry.duration * 25) == 20  # 40-frame loop in two parts
        assert seconds == pytest.approx(entry.duration, abs=0.001)
        starts.append(first)
    # Timestamps run on from segment to segment, across the wrap of the loop.
    assert starts[1] - starts[0] == pytest.approx(0.8, abs=0.001)
    assert starts[2] - starts[1] == pytest.approx(0.8, abs=0.001)
    cache = Path(settings.MEDIA_ROOT) / "hls" / session.avatar.storage_key
    assert len(list(cache.glob("*/idle_*.mp4"))) == 2


def test_chunks_of_an_utterance_become_live_segments_after_a_discontinuity(session):
    client = APIClient()
    _get(client, session, "playlist.m3u8")
    request = StreamRequestFactory(session=session, status=StreamRequest.Status.STREAMING)
    _chunk(session, request, 0, 25)
    _chunk(session, request, 1, 13)
    StreamRequest.objects.filter(pk=request.pk).update(status=StreamRequest.Status.COMPLETED)
    playlist = parse_m3u8(_get(client, session, "playlist.m3u8").content.decode())
    _valid(playlist)
    _switches_are_discontinuities(playlist)
    live = [e for e in playlist.segments if "/live_" in e.uri]
    assert [e.duration for e in live] == [1.0, 0.52] and live[0].discontinuity
    for entry, expected in zip(live, [25, 13]):
        frames, seconds, codecs, _ = _decode(client.get(entry.uri).content)
        assert (frames, codecs) == (expected, {"video": "h264", "audio": "aac"})
        assert seconds == pytest.approx(expected / 25, abs=0.001)
    assert StreamSession.objects.get(pk=session.pk).chunks_served == 2


def test_the_owner_may_use_the_api_token_and_others_get_404(session):
    owner = APIClient()
    owner.force_authenticate(session.owner)
    assert owner.get(f"/hls/{session.session_id}/playlist.m3u8").status_code == 200
    stranger = APIClient()
    stranger.force_authenticate(UserFactory())
    assert stranger.get(f"/hls/{session.session_id}/playlist.m3u8").status_code == 404
    assert APIClient().get(f"/hls/{session.session_id}/playlist.m3u8").status_code == 401
    other = StreamSessionFactory()
    foreign = player_token_make(session_id=other.session_id)
    assert _get(APIClient(), session, "playlist.m3u8", foreign).status_code == 404
    assert _get(APIClient(), session, "idle_0.ts", foreign).status_code == 404


def test_unknown_or_expired_segments_are_404(session):
    client = APIClient()
    assert _get(client, session, "idle_0.ts").status_code == 404  # no playlist yet
    _get(client, session, "playlist.m3u8")
    assert _get(client, session, "idle_0.ts").status_code == 200
    assert _get(client, session, "live_0.ts").status_code == 404
    assert _get(client, session, "idle_999.ts").status_code == 404
    assert _get(client, session, "timeline.json").status_code == 404


def test_an_ended_session_answers_410_and_its_files_are_removed(session):
    client = APIClient()
    assert _get(client, session, "playlist.m3u8").status_code == 200
    folder = hls_session_dir(session.session_id)
    assert (folder / "timeline.json").is_file()
    StreamSession.objects.filter(pk=session.pk).update(status=StreamSession.Status.ENDED)
    response = _get(client, session, "playlist.m3u8")
    assert response.status_code == 410 and "ended" in response.json()["message"]
    assert not folder.exists()
    assert _get(client, session, "idle_0.ts").status_code == 410


def test_the_player_page_loads_the_playlist_with_its_token(session):
    token = player_token_make(session_id=session.session_id)
    response = Client().get(f"/hls/player/{session.session_id}?token={token}")
    assert response.status_code == 200
    page = response.content.decode()
    assert f"/hls/{session.session_id}/master.m3u8?token={token}" in page
    assert "playsinline" in page and "muted" in page and "Tap to unmute" in page
    assert "vendor/hls.js/hls.min.js" in page and "players/hls-player.js" in page
    assert response["Cache-Control"] == "no-store"


def test_the_player_page_refuses_strangers_and_ended_sessions(session):
    other = StreamSessionFactory()
    foreign = player_token_make(session_id=other.session_id)
    assert Client().get(f"/hls/player/{session.session_id}?token={foreign}").status_code == 404
    assert Client().get(f"/hls/player/{session.session_id}").status_code == 401
    StreamSession.objects.filter(pk=session.pk).update(status=StreamSession.Status.EXPIRED)
    token = player_token_make(session_id=session.session_id)
    response = Client().get(f"/hls/player/{session.session_id}?token={token}")
    assert response.status_code == 410 and b"ended" in response.content


def test_the_signed_in_owner_gets_a_page_with_a_fresh_player_token(session):
    browser = Client()
    browser.force_login(session.owner)
    page = browser.get(f"/hls/player/{session.session_id}").content.decode()
    assert f"/hls/{session.session_id}/master.m3u8?token=" in page


def _utterance(session: StreamSession, request: StreamRequest, signal: np.ndarray) -> None:
    """Chunks of 25 frames as the engine writes them (audio between its neighbours' audio)
    and the utterance's continuous audio track beside them."""
    total = len(signal) // 640
    folder = Path(settings.MEDIA_ROOT) / "chunks" / request.request_id
    folder.mkdir(parents=True, exist_ok=True)
    write_audio_track(folder / AUDIO_TRACK, signal, seconds=total / 25)
    for index, first in enumerate(range(0, total, 25)):
        count = min(25, total - first)
        start, end = first * 640, (first + count) * 640
        name = f"chunks/{request.request_id}/chunk_{index + 1:04d}.mp4"
        with Mp4Writer(
            Path(settings.MEDIA_ROOT) / name,
            fps=25,
            width=64,
            height=80,
            audio=signal[start:end],
            audio_context=(signal[:start], signal[end:]),
        ) as writer:
            for i in range(count):
                writer.write(np.full((80, 64, 3), 40 + 5 * i, np.uint8))
        StreamChunk.objects.create(request=request, index=index, file=name, duration=count / 25)


def _live_audio(client, session: StreamSession) -> tuple[list[tuple[int, int]], np.ndarray]:
    """The live segments' AAC frames ((pts, samples) at 48 kHz) and their audio decoded
    by one decoder, as a player reads consecutive segments without a discontinuity."""
    playlist = parse_m3u8(_get(client, session, "playlist.m3u8").content.decode())
    data = b"".join(client.get(e.uri).content for e in playlist.segments if "/live_" in e.uri)
    with av.open(io.BytesIO(data), format="mpegts") as container:
        stream = container.streams.audio[0]
        packets = [p for p in container.demux(stream) if p.pts is not None]
        frames = [(round(p.pts * p.time_base * 48000), 1024) for p in packets]
        decoder = av.CodecContext.create("aac", "r")
        pcm = [f.to_ndarray().reshape(-1) for p in packets for f in decoder.decode(p)]
    return frames, np.concatenate(pcm)


def test_live_segments_of_an_utterance_carry_one_continuous_audio_track(session):
    client = APIClient()
    _get(client, session, "playlist.m3u8")
    request = StreamRequestFactory(session=session, status=StreamRequest.Status.STREAMING)
    _utterance(session, request, tone(3.0))
    StreamRequest.objects.filter(pk=request.pk).update(status=StreamRequest.Status.COMPLETED)

    frames, pcm = _live_audio(client, session)
    # AAC frames follow each other exactly across the segment boundaries: no gap, no overlap.
    assert all(b[0] == a[0] + a[1] for a, b in zip(frames, frames[1:]))
    assert sum(size for _, size in frames) >= 3 * 48000 - 1024
    # ...and decode to the tone, as clean at the seams (1 s, 2 s) as anywhere else.
    played = pcm[1024:]  # the decoder's first frame overlaps nothing
    start = frames[1][0] - frames[0][0]  # the first frame starts the utterance
    reference = 0.5 * np.sin(2 * np.pi * 440 * (np.arange(len(played)) + start) / 48000)
    error = np.abs(played - reference)[: 3 * 48000 - start - 3072]
    seams = [s - start for s in (48000, 96000)]
    interior = max(error[s - 20000 : s - 4000].max() for s in seams)
    assert max(error[s - 2048 : s + 2048].max() for s in seams) <= 1.5 * interior + 0.005
    assert interior < 0.05


def test_without_the_track_live_segments_cut_their_own_audio_with_a_gap(session):
    client = APIClient()
    _get(client, session, "playlist.m3u8")
    request = StreamRequestFactory(session=session, status=StreamRequest.Status.STREAMING)
    _utterance(session, request, tone(2.0))
    (Path(settings.MEDIA_ROOT) / "chunks" / request.request_id / AUDIO_TRACK).unlink()
    StreamRequest.objects.filter(pk=request.pk).update(status=StreamRequest.Status.COMPLETED)

    frames, _ = _live_audio(client, session)
    gaps = [b[0] - a[0] - a[1] for a, b in zip(frames, frames[1:])]
    # Each chunk alone: whole frames inside [0, 1 s), so 48000 % 1024 samples are missing.
    assert sorted(set(gaps)) == [0, 48000 % 1024]
