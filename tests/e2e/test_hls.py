"""HLS on the live stack (random-tiny model): the idle playlist, an utterance's live
segments, both checked by the conformance validator, and the HLS player in a real headless
Chromium."""

from __future__ import annotations

import io
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import av
import pytest
import requests
from selenium.webdriver.support.ui import WebDriverWait

from avatars.models import Avatar
from musetalk_site.stack import Stack
from sessions_app.hls.idle import hls_idle_home, hls_idle_missing
from tests.conftest import ARTIFACTS_DIR
from tests.e2e.client import ApiClient, ready_avatar_user
from tests.media import make_face_video, make_speech_wav
from tests.sessions_app.test_hls import Playlist, parse_m3u8
from tests.sessions_app.test_hls_conformance import (
    SegmentFacts,
    check_media_playlist,
    check_run,
    check_segment,
    check_variant,
    parse_master_playlist,
    parse_media_playlist,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FPS = 25


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hls-media")
    make_face_video(folder / "face.mp4", seconds=0.8, fps=FPS, size=(256, 320))
    make_speech_wav(folder / "speech.wav", seconds=2.0, sample_rate=16000)
    return folder


def _ready_user(stack: Stack, media_dir: Path, username: str) -> ApiClient:
    return ready_avatar_user(stack.base_url, media_dir / "face.mp4", username)


def _session(client: ApiClient) -> tuple[str, str]:
    """A new session on the avatar "host", once its playlists play."""
    created = client.post("/sessions/create?avatar_id=host&chunk_duration=1").json()
    session_id, token = created["session_id"], created["player_url"].split("?token=")[1]
    _until_playable(client.url(f"/hls/{session_id}/master.m3u8?token={token}"))
    return session_id, token


def _until_playable(url: str, timeout: float = 60) -> int:
    """Ask for a playlist like a player, until the worker has built the avatar's idle parts;
    meanwhile the answer is 503 with Retry-After. Returns how many 503s came first."""
    deadline = time.monotonic() + timeout
    waits = 0
    while (response := requests.get(url, timeout=30)).status_code != 200:
        assert response.status_code == 503, response.text
        assert int(response.headers["Retry-After"]) > 0
        assert set(response.json()) == {"message", "extra"}
        assert time.monotonic() < deadline, "the idle parts were never built"
        waits += 1
        time.sleep(0.2)  # a player waits Retry-After; the test need not
    return waits


def _stream_utterance(client: ApiClient, session_id: str, media_dir: Path) -> None:
    with (media_dir / "speech.wav").open("rb") as handle:
        started = client.post(
            f"/sessions/{session_id}/stream",
            data={"batch_size": 4},
            files={"audio_file": ("speech.wav", handle, "audio/wav")},
        )
    assert started.status_code == 200, started.text


def _wait_until_streamed(client: ApiClient, session_id: str) -> None:
    deadline = time.monotonic() + 300
    while True:
        status = client.get(f"/sessions/{session_id}/status").json()
        current = status["current_request"] or {}
        if status["active_request"] is None and current.get("status") == "completed":
            return
        assert time.monotonic() < deadline, status
        time.sleep(0.3)


@dataclass
class Decoded:
    frames: int
    seconds: float
    codecs: dict[str, str]


def _decode(data: bytes) -> Decoded:
    with av.open(io.BytesIO(data), format="mpegts") as container:
        codecs = {s.type: s.codec_context.name for s in container.streams}
        pts = [float(f.pts * f.time_base) for f in container.decode(video=0)]
    return Decoded(len(pts), (pts[-1] - pts[0]) * len(pts) / max(1, len(pts) - 1), codecs)


def _fetch_playlist(url: str) -> Playlist:
    response = requests.get(url, timeout=30)  # the token alone, like a player
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    check_media_playlist(parse_media_playlist(response.text), response.text)
    playlist = parse_m3u8(response.text)
    assert len(playlist.segments) >= 6
    assert sum(e.duration for e in playlist.segments) >= 3 * playlist.target
    assert all(round(e.duration) <= playlist.target for e in playlist.segments)
    return playlist


def _check_segment(base_url: str, uri: str, duration: float) -> tuple[SegmentFacts, int]:
    """The segment's facts (it passed the validator) and its size in bytes."""
    response = requests.get(base_url + uri, timeout=30)
    assert response.status_code == 200, (uri, response.text)
    assert response.headers["Content-Type"] == "video/mp2t"
    decoded = _decode(response.content)
    assert decoded.codecs == {"video": "h264", "audio": "aac"}
    assert decoded.frames == round(duration * FPS)
    assert decoded.seconds == pytest.approx(duration, abs=0.002)
    return check_segment(response.content, duration), len(response.content)


class Observer:
    """Polls a live playlist like a player; remembers every segment it saw, by sequence."""

    def __init__(self, base_url: str, url: str) -> None:
        self.base_url, self.url = base_url, url
        self.kinds: dict[int, str] = {}
        self.tagged: dict[int, bool] = {}  # a discontinuity precedes it
        self.checked: dict[int, tuple[SegmentFacts, int, float]] = {}  # facts, bytes, EXTINF
        self.sequences: list[tuple[int, int]] = []

    def poll(self) -> Playlist:
        playlist = _fetch_playlist(self.url)
        first = playlist.sequence
        self.sequences.append((first, int(playlist.tags["EXT-X-DISCONTINUITY-SEQUENCE"])))
        for offset, entry in enumerate(playlist.segments):
            kind = entry.uri.split("/")[-1].split("_")[0]
            self.kinds[first + offset] = kind
            if offset:
                self.tagged[first + offset] = entry.discontinuity
            if kind == "live" and first + offset not in self.checked:
                # Fetched as soon as seen: a live segment leaves the window in seconds.
                facts, size = _check_segment(self.base_url, entry.uri, entry.duration)
                self.checked[first + offset] = (facts, size, entry.duration)
        return playlist

    def check_runs(self) -> None:
        """Live segments in a row play as one stream (the validator's cross-segment rules)."""
        for seq, (facts, _, _) in self.checked.items():
            before = self.checked.get(seq - 1)
            if before is not None and not self.tagged.get(seq, True):
                check_run(before[0], facts, before[2])

    def live_then_idle(self, count: int) -> bool:
        live = [seq for seq, kind in self.kinds.items() if kind == "live"]
        return len(live) >= count and any(s > max(live) for s in self.kinds)


def test_the_playlist_idles_then_carries_an_utterance_between_discontinuities(
    live_stack: Stack, media_dir: Path
):
    client = _ready_user(live_stack, media_dir, "hls-user")
    session_id, token = _session(client)
    url = client.url(f"/hls/{session_id}/playlist.m3u8?token={token}")
    master = requests.get(client.url(f"/hls/{session_id}/master.m3u8?token={token}"), timeout=30)
    assert master.status_code == 200 and master.headers["Content-Encoding"] == "gzip"
    variant, uri = parse_master_playlist(master.text)
    assert client.url(uri) == url

    idle = _fetch_playlist(url)
    assert {e.uri.split("/")[-1].split("_")[0] for e in idle.segments} == {"idle"}
    assert not any(e.discontinuity for e in idle.segments)
    measured = []
    for entry in idle.segments:
        assert entry.uri.startswith(f"/hls/{session_id}/idle_") and "token=" in entry.uri
        facts, size = _check_segment(live_stack.base_url, entry.uri, entry.duration)
        measured.append((facts, size, entry.duration))
    # The ping-pong loop of the 20-frame face video: 40 frames in two 0.8 s parts.
    assert {e.duration for e in idle.segments} == {0.8}

    _stream_utterance(client, session_id, media_dir)
    # Both chunks exist before the player looks again: on a loaded machine the utterance may
    # be slower than real time, and the playlist then rightly fills the wait with idle parts.
    _wait_until_streamed(client, session_id)
    observer = Observer(live_stack.base_url, url)
    deadline = time.monotonic() + 300
    while not observer.live_then_idle(2):
        assert time.monotonic() < deadline, observer.kinds
        observer.poll()
        time.sleep(0.4)

    live = sorted(seq for seq, kind in observer.kinds.items() if kind == "live")
    assert len(live) == 2 and set(observer.checked) == set(live)  # 50 frames in 1 s chunks
    observer.check_runs()
    # The utterance's audio runs on frame after frame from one live segment to the next
    # (cut from its continuous track, not from each chunk: no gap, no overlap).
    first, second = (observer.checked[seq][0].audio for seq in live)
    assert second[0][0] == pytest.approx(first[-1][0] + first[-1][1], abs=2 / 90000)
    check_variant(variant, measured + list(observer.checked.values()), idle.target)
    seqs = sorted(observer.kinds)
    for previous, seq in zip(seqs, seqs[1:]):
        assert seq == previous + 1  # no gap in what a player saw
        switch = observer.kinds[seq] != observer.kinds[previous]
        assert observer.tagged.get(seq, switch) == switch, (seq, observer.kinds)
    assert observer.sequences == sorted(observer.sequences)
    assert observer.sequences[-1][1] >= 0
    status = client.get(f"/sessions/{session_id}/status").json()
    assert status["current_request"]["status"] == "completed"

    assert client.delete(f"/sessions/{session_id}").status_code == 200
    assert requests.get(url, timeout=30).status_code == 410


def test_an_avatar_without_idle_parts_gets_them_from_the_worker_when_a_session_starts(
    live_stack: Stack, media_dir: Path
):
    client = _ready_user(live_stack, media_dir, "hls-old-avatar-user")
    avatar = Avatar.objects.get(owner__username="hls-old-avatar-user", avatar_id="host")
    # The preparing worker builds the parts just after the avatar turns ready; a session made
    # before they are there would queue a build of its own, which could land after the removal
    # below. So the first session comes once they are built.
    deadline = time.monotonic() + 60
    while hls_idle_missing(avatar=avatar):
        assert time.monotonic() < deadline, "the preparing worker built no idle parts"
        time.sleep(0.2)
    first, token = _session(client)
    shutil.rmtree(hls_idle_home(avatar))  # as for an avatar prepared before they were built
    master = client.url(f"/hls/{first}/master.m3u8?token={token}")
    playlist = client.url(f"/hls/{first}/playlist.m3u8?token={token}")
    for url in (master, playlist, master):
        response = requests.get(url, timeout=30)
        assert response.status_code == 503 and response.headers["Retry-After"], response.text
    assert not hls_idle_home(avatar).exists()  # the web process built nothing

    second, _ = _session(client)  # queues the build, and waits until the playlists play
    assert len(list(hls_idle_home(avatar).glob("*/idle_*.mp4"))) == 2
    assert _until_playable(master) == 0
    assert {e.duration for e in _fetch_playlist(playlist).segments} == {0.8}
    assert client.delete(f"/sessions/{first}").status_code == 200
    assert client.delete(f"/sessions/{second}").status_code == 200


STATE_JS = (
    "const p = window.musetalkHlsPlayer;"
    "return p && {time: p.video.currentTime, engine: p.state.engine, errors: p.state.errors,"
    " played: p.state.played, muted: p.video.muted, paused: p.video.paused,"
    " status: document.querySelector('.status').textContent};"
)


def test_the_hls_player_plays_idle_then_an_utterance_with_hls_js_in_chromium(
    live_stack: Stack, media_dir: Path, browser
):
    client = _ready_user(live_stack, media_dir, "hls-browser-user")
    session_id, token = _session(client)
    browser.get(client.url(f"/hls/player/{session_id}?token={token}"))

    def state_when(predicate):
        def check(driver) -> dict | None:
            state = driver.execute_script(STATE_JS)
            return state if state and predicate(state) else None

        return check

    state = WebDriverWait(browser, 60).until(state_when(lambda s: s["time"] > 2.0))
    assert state["engine"] == "hls.js"
    assert state["errors"] == [] and state["muted"] and not state["paused"]
    assert state["status"] == "Live"
    button = browser.find_element("css selector", ".unmute")
    assert button.is_displayed() and "unmute" in button.text.lower()

    _stream_utterance(client, session_id, media_dir)

    def live_then_idle(state: dict) -> bool:
        played = [name.rsplit("/", 1)[-1].split("_")[0] for name in state["played"]]
        return "live" in played and "idle" in played[played.index("live") :]

    state = WebDriverWait(browser, 240).until(state_when(live_then_idle))
    browser.save_screenshot(str(ARTIFACTS_DIR / "hls-player.png"))
    assert state["errors"] == [] and not state["paused"]
    button.click()
    assert browser.execute_script("return window.musetalkHlsPlayer.video.muted") is False
    assert not button.is_displayed()
    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == []
