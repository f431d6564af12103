"""The seed API's HLS sessions and session REST on the live stack (random-tiny model), with the
exact requests its clients make: the HLS load tester (create with its query string, a
multipart ``audio_file`` named .mpga sent as audio/mpeg, status polled every 0.5 s, live.m3u8
read and each new segment fetched while ``streaming``, delete at the end), the HLS player
(index.m3u8, status, ``live.m3u8?stream_id=``) and the sessions request collection."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import pytest
import requests

from musetalk_site.stack import Stack
from tests.e2e.client import ApiClient, ready_avatar_user
from tests.media import make_face_video, speech_samples
from tests.sessions_app.test_hls_conformance import SegmentFacts, check_run, check_segment

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

AVATAR_FPS = 25
# The load tester's defaults: 1 s segments, generation at 15 fps (playback 30).
LOAD_TEST_CREATE = (
    "/hls/sessions/create?avatar_id=host&playback_fps=30&musetalk_fps=15&batch_size=2"
    "&segment_duration=1.0&hls_server_timing=true"
)
MUSETALK_FPS = 15


def make_speech_mp3(path: Path, *, seconds: float, sample_rate: int = 16000) -> Path:
    """An MP3 of speech-like sound (the seed's sample audio is MP3 named .mpga)."""
    samples = speech_samples(seconds, sample_rate)
    with av.open(str(path), "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=sample_rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("seed-hls-media")
    make_face_video(folder / "face.mp4", seconds=0.8, fps=AVATAR_FPS, size=(256, 320))
    make_speech_mp3(folder / "ai-assistant.mpga", seconds=2.0)
    return folder


def _upload(client: ApiClient, path: str, audio: Path) -> requests.Response:
    """The load tester's upload: one ``audio_file`` part, its file name, audio/mpeg."""
    with audio.open("rb") as handle:
        return client.post(path, files={"audio_file": (audio.name, handle, "audio/mpeg")})


def segment_url(base_url: str, session_id: str, ref: str) -> str:
    """How the load tester turns a playlist line into a URL."""
    ref = ref.lstrip("/")
    if ref.startswith("segments/"):
        return f"{base_url}/hls/sessions/{session_id}/{ref}"
    return f"{base_url}/hls/sessions/{session_id}/segments/{ref}"


@dataclass
class Playlist:
    tags: list[str] = field(default_factory=list)
    segments: list[tuple[float, str]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def parse(text: str) -> Playlist:
    lines = text.strip().splitlines()
    assert lines[0] == "#EXTM3U"
    playlist, duration = Playlist(lines=lines), None
    for line in lines[1:]:
        if line.startswith("#EXTINF:"):
            duration = float(line[len("#EXTINF:") :].rstrip(","))
        elif line.startswith("#"):
            playlist.tags.append(line)
        else:
            assert duration is not None, line
            playlist.segments.append((duration, line))
            duration = None
    return playlist


def _decode(data: bytes) -> tuple[int, dict[str, str]]:
    with av.open(io.BytesIO(data), format="mpegts") as container:
        codecs = {s.type: s.codec_context.name for s in container.streams}
        frames = sum(1 for _ in container.decode(video=0))
    return frames, codecs


def _check(response: requests.Response, duration: float, fps: int) -> SegmentFacts:
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "video/mp2t"
    frames, codecs = _decode(response.content)
    assert codecs == {"video": "h264", "audio": "aac"}
    assert frames == round(duration * fps)
    return check_segment(response.content, duration)


def _idle_playlist(client: ApiClient, session_id: str) -> Playlist:
    """index.m3u8, asked for like a player until the worker has cut the idle parts."""
    deadline = time.monotonic() + 120
    while (response := client.get(f"/hls/sessions/{session_id}/index.m3u8")).status_code != 200:
        assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
        assert time.monotonic() < deadline, "the idle parts were never built"
        time.sleep(0.2)
    assert response.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    return parse(response.text)


@dataclass
class LoadTestRun:
    """What the load tester records while it polls (its loop, step by step)."""

    statuses: list[dict] = field(default_factory=list)
    playlists: list[Playlist] = field(default_factory=list)
    fetched: dict[str, requests.Response] = field(default_factory=dict)
    live_ready_seen: bool = False
    completed: bool = False


def _poll_like_the_load_tester(client: ApiClient, session_id: str) -> LoadTestRun:
    run = LoadTestRun()
    deadline = time.monotonic() + 300
    while not run.completed:
        assert time.monotonic() < deadline, run.statuses[-3:]
        time.sleep(0.5)
        response = client.get(f"/hls/sessions/{session_id}/status")
        if response.status_code != 200:
            continue
        status = response.json()
        run.statuses.append(status)
        state = status.get("status", "")
        assert state not in {"error", "failed", "cancelled", "rejected"}, status
        run.live_ready_seen = run.live_ready_seen or bool(status.get("live_ready"))
        if run.live_ready_seen and state == "streaming":
            live = client.get(f"/hls/sessions/{session_id}/live.m3u8")
            assert live.status_code == 200, live.text
            playlist = parse(live.text)
            run.playlists.append(playlist)
            for line in playlist.lines:
                name = line.strip().split("?")[0]
                if name and not name.startswith("#") and name not in run.fetched:
                    url = segment_url(client.base_url, session_id, name)
                    run.fetched[name] = client.session.get(url, timeout=30)
        run.completed = state in ("idle", "ready") and run.live_ready_seen
    return run


def test_the_load_testers_requests_stream_an_utterance_through_the_seed_hls_api(
    live_stack: Stack, media_dir: Path
):
    client = ready_avatar_user(live_stack.base_url, media_dir / "face.mp4", "seed-hls-user")
    created = client.post(LOAD_TEST_CREATE)
    assert created.status_code == 200, created.text
    body = created.json()
    session_id = body["session_id"]
    assert body["manifest_url"].startswith(f"/hls/sessions/{session_id}/index.m3u8")

    # The player's idle playlist: a VOD of the idle loop (ping-pong of 20 frames: 40 at 25 fps).
    idle = _idle_playlist(client, session_id)
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in idle.tags and idle.lines[-1] == "#EXT-X-ENDLIST"
    assert sum(duration for duration, _ in idle.segments) == pytest.approx(1.6)
    idle_facts = [
        (_check(client.session.get(segment_url(client.base_url, session_id, uri)), d, 25), d)
        for d, uri in idle.segments
    ]
    for (before, duration), (after, _) in zip(idle_facts, idle_facts[1:]):
        check_run(before, after, duration)
    status = client.get(f"/hls/sessions/{session_id}/status").json()
    assert (status["status"], status["live_ready"], status["active_stream"]) == (
        "idle",
        False,
        None,
    )
    assert status["idle_duration_seconds"] == pytest.approx(1.6)

    started = _upload(client, f"/hls/sessions/{session_id}/stream", media_dir / "ai-assistant.mpga")
    assert started.status_code == 200, started.text
    request_id = started.json()["request_id"]
    assert started.json()["status"] == "queued"
    assert started.json()["manifest_url"].startswith(f"/hls/sessions/{session_id}/live.m3u8")

    run = _poll_like_the_load_tester(client, session_id)

    assert any(s["status"] == "streaming" and s["live_ready"] for s in run.statuses)
    assert all(s["active_stream"] == request_id for s in run.statuses if s["status"] == "streaming")
    for playlist in run.playlists:
        assert "#EXT-X-PLAYLIST-TYPE:EVENT" in playlist.tags
        assert "#EXT-X-MEDIA-SEQUENCE:0" in playlist.tags
    # Idle: every segment is published and the playlist has ended.
    final = client.get(f"/hls/sessions/{session_id}/live.m3u8")
    playlist = parse(final.text)
    assert playlist.lines[-1] == "#EXT-X-ENDLIST"
    names = [uri for _, uri in playlist.segments]
    assert names == [f"segments/{request_id}/chunk_{n:04d}.ts" for n in (1, 2)]
    done = run.statuses[-1]
    assert done["last_completed_stream"] == request_id and done["last_completed_had_segments"]
    assert done["active_stream"] is None and done["live_segment_count"] == 2

    # Every segment the load tester fetched decodes: 15 frames a second, one media timeline.
    assert set(run.fetched) <= set(names) and run.fetched
    facts = []
    for duration, uri in playlist.segments:
        response = run.fetched.get(uri) or client.session.get(
            segment_url(client.base_url, session_id, uri)
        )
        facts.append(_check(response, duration, MUSETALK_FPS))
    check_run(facts[0], facts[1], playlist.segments[0][0])

    # The player's way: the same playlist under ?stream_id=, with the player token alone.
    token = body["manifest_url"].split("?token=")[1]
    by_id = requests.get(
        client.url(f"/hls/sessions/{session_id}/live.m3u8?stream_id={request_id}&token={token}"),
        timeout=30,
    )
    assert [line.split("?")[0] for line in by_id.text.splitlines()] == playlist.lines
    assert requests.get(client.url(body["player_url"]), timeout=30).status_code == 200

    stats = client.get("/hls/sessions/stats").json()
    assert [s["session_id"] for s in stats["sessions"]] == [session_id]
    deleted = client.delete(f"/hls/sessions/{session_id}")
    assert deleted.json() == {"status": "deleted", "session_id": session_id}
    assert client.get(f"/hls/sessions/{session_id}/status").status_code == 404
    assert client.get(f"/hls/sessions/{session_id}/live.m3u8").status_code == 404


def test_the_sessions_collections_requests_get_the_seed_answers(live_stack: Stack, media_dir: Path):
    client = ready_avatar_user(live_stack.base_url, media_dir / "face.mp4", "seed-sessions-user")
    created = client.post(
        "/sessions/create?avatar_id=host&user_id=user1&batch_size=6&fps=25&chunk_duration=2"
    )
    assert created.status_code == 200, created.text
    session_id = created.json()["session_id"]
    assert created.json()["config"] == {"batch_size": 6, "fps": 25, "chunk_duration": 2}

    audio = media_dir / "ai-assistant.mpga"
    started = _upload(client, f"/sessions/{session_id}/stream?trailing_silence=1.5", audio)
    assert started.status_code == 200, started.text
    request_id = started.json()["request_id"]
    assert _upload(client, f"/sessions/{session_id}/stream", audio).status_code == 409

    status = client.get(f"/sessions/{session_id}/status").json()
    assert {"active_stream", "last_activity", "age_seconds", "idle_seconds"} <= set(status)
    assert status["active_stream"] in (request_id, None)  # None once it has completed
    stats = client.get("/sessions/stats").json()
    assert [s["session_id"] for s in stats["sessions"]] == [session_id]
    assert stats["sessions"][0]["user_id"] == "user1"
    live = client.get("/sessions/live").json()
    assert set(live) == {"total_live", "session_streams", "hls_streams", "webrtc_streams"}

    deadline = time.monotonic() + 300
    while client.get(f"/sessions/{session_id}/status").json()["active_stream"] is not None:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert client.get("/sessions/live").json()["total_live"] == 0

    deleted = client.delete(f"/sessions/{session_id}")
    assert deleted.status_code == 200 and deleted.json()["status"] == "deleted"
    assert client.delete(f"/sessions/{session_id}").status_code == 404
