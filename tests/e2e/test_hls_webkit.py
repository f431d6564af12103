"""The HLS player page in a WebKit engine that plays HLS natively, like Safari and WKWebView:
WebKitGTK's MiniBrowser on Xvfb, driven by WebKitWebDriver, with GStreamer's HLS support
switched on. The page must take the native path (``video.src`` = the multivariant playlist),
not hls.js, and play the idle loop, an utterance's live segments and the idle loop again.

What this cannot show: WebKitGTK plays HLS with GStreamer's hlsdemux, Safari with Apple's
AVFoundation, so Apple's own parser, its discontinuity handling and its live-edge policy are
not under test here (the conformance validator in tests/sessions_app covers the playlist).

Needs the Debian packages webkit2gtk-driver, gstreamer1.0-plugins-bad (hlsdemux),
gstreamer1.0-plugins-good, gstreamer1.0-libav and xvfb. Without them the test is skipped,
except under CI (``CI`` set), where it fails: .ci/run installs them, so CI always runs it.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.webkitgtk.options import Options
from selenium.webdriver.webkitgtk.service import Service

from musetalk_site.stack import Stack
from tests.conftest import ARTIFACTS_DIR
from tests.e2e.client import ApiClient
from tests.e2e.test_hls import (
    FPS,
    _fetch_playlist,
    _ready_user,
    _session,
    _stream_utterance,
)
from tests.e2e.test_hls import media_dir as media_dir  # a module fixture, shared

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    # Selenium's own WebKitGTK driver still builds its connection the deprecated way.
    pytest.mark.filterwarnings("ignore:setting remote_server_addr:DeprecationWarning"),
]

DRIVER = "/usr/bin/WebKitWebDriver"
MINIBROWSERS = "/usr/lib/*/webkit2gtk-4.*/MiniBrowser"

# Only what the player exposes, currentTime and the frame counter. Never video.duration,
# .seekable or .buffered: reading those while WebKitGTK (2.50, GStreamer 1.22) prerolls a
# live HLS stream made it pin the duration to the current position and never start.
STATE_JS = (
    "const p = window.musetalkHlsPlayer; if (!p) return null; const v = p.video;"
    "const q = v.getVideoPlaybackQuality();"
    "return {time: v.currentTime, engine: p.state.engine, errors: p.state.errors,"
    " error: v.error && v.error.code, paused: v.paused, muted: v.muted, ready: v.readyState,"
    " frames: q.totalVideoFrames, status: document.querySelector('.status').textContent};"
)
ENGINES_JS = (
    "return {native: document.createElement('video').canPlayType("
    "'application/vnd.apple.mpegurl'), hlsJs: !!(window.Hls && window.Hls.isSupported())};"
)


def _require(path: str | None, what: str) -> str:
    if path and os.path.exists(path):
        return path
    if os.environ.get("CI"):
        pytest.fail(f"{what} must be installed in CI (see .ci/run)")
    pytest.skip(f"{what} not installed (apt-get install webkit2gtk-driver xvfb ...)")


@pytest.fixture(scope="module")
def xvfb() -> Iterator[str]:
    """A private X server on a free display number (Xvfb picks it and writes it to a pipe)."""
    binary = _require(shutil.which("Xvfb"), "Xvfb (xvfb)")
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen(
        [binary, "-displayfd", str(write_fd), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        display = pipe.readline().strip()
    try:
        assert display, "Xvfb did not start"
        yield f":{display}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def _webkit_env(display: str, home: Path) -> dict[str, str]:
    """The driver's (and so MiniBrowser's) environment; the tests' own is left alone."""
    return {
        **os.environ,
        "DISPLAY": display,
        "HOME": str(home),  # caches and the GStreamer registry stay out of the real home
        "WEBKIT_GST_ENABLE_HLS_SUPPORT": "1",  # off by default in WebKitGTK
        # bubblewrap cannot build its sandbox inside a container
        "WEBKIT_DISABLE_SANDBOX_THIS_IS_DANGEROUS": "1",
        "LIBGL_ALWAYS_SOFTWARE": "1",
        "NO_AT_BRIDGE": "1",
    }


@pytest.fixture(scope="module")
def webkit(xvfb: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.WebKitGTK]:
    """One WebKitGTK MiniBrowser for the module. Its log goes to ARTIFACTS_DIR/webkit.log."""
    driver_path = _require(DRIVER, "WebKitWebDriver (webkit2gtk-driver)")
    options = Options()
    options.binary_location = _require(next(iter(glob.glob(MINIBROWSERS)), None), "MiniBrowser")
    options.add_argument("--automation")
    env = _webkit_env(xvfb, tmp_path_factory.mktemp("webkit-home"))
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    with open(ARTIFACTS_DIR / "webkit.log", "w") as log:
        service = Service(executable_path=driver_path, env=env, log_output=log)
        driver = webdriver.WebKitGTK(options=options, service=service)
        driver.command_executor.client_config.timeout = 60  # a hung browser fails, not hangs
        yield driver
        driver.quit()


class Watch:
    """Polls the live playlist (each answer passes the validator) and the player together,
    and checks on every poll that the player plays on: no error, no pause, currentTime never
    going back, and never ahead of the wall clock since the first reading (no segment skipped).
    The last is counted from the first reading, not poll to poll: a player that stalled on a
    loaded machine may play its buffer faster for a moment to catch up, which is not a skip."""

    def __init__(self, browser: webdriver.WebKitGTK, playlist_url: str) -> None:
        self.browser, self.url = browser, playlist_url
        self.kinds: dict[int, str] = {}
        self.durations: dict[int, float] = {}
        self.state: dict = {}
        self.first: tuple[dict, float] | None = None  # the first playing reading, and when

    def poll(self) -> dict:
        self._poll_playlist()
        asked = time.monotonic()
        state = self.browser.execute_script(STATE_JS) or {}
        if self.first and state:
            # The two readings lie within this span, however slow the calls were.
            first, first_asked = self.first
            self._check_progress(self.state, first, state, time.monotonic() - first_asked)
        if state:
            self.state = state
            if self.first is None and state.get("ready"):
                self.first = (state, asked)
        return state

    def _poll_playlist(self) -> None:
        playlist = _fetch_playlist(self.url)
        if self.kinds:
            assert playlist.sequence <= max(self.kinds) + 1, "missed segments between polls"
        for offset, entry in enumerate(playlist.segments):
            self.kinds[playlist.sequence + offset] = entry.uri.split("/")[-1].split("_")[0]
            self.durations[playlist.sequence + offset] = entry.duration

    @staticmethod
    def _check_progress(before: dict, first: dict, after: dict, seconds: float) -> None:
        assert after["errors"] == [] and after["error"] is None, after
        assert not after["paused"], after
        assert after["time"] >= before["time"] - 0.05, (before, after)
        assert after["time"] - first["time"] <= seconds + 0.5, (first, after, seconds)

    def until(self, done: Callable[[dict], bool], timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            state = self.poll()
            if state and done(state):
                return state
            assert time.monotonic() < deadline, f"{what}: {self.state} {self.kinds}"
            time.sleep(0.4)

    def media_time(self, first: int, last: int) -> float:
        """Seconds of media from the start of segment ``first`` to the end of ``last``."""
        return sum(self.durations[seq] for seq in range(first, last + 1))

    def idle_after_live(self) -> int | None:
        live = [seq for seq, kind in self.kinds.items() if kind == "live"]
        after = [seq for seq in self.kinds if live and seq > max(live)]
        return min(after) if after else None


def _completed(client: ApiClient, session_id: str) -> bool:
    request = client.get(f"/sessions/{session_id}/status").json()["current_request"]
    return bool(request) and request["status"] == "completed"


def test_the_hls_player_plays_idle_then_an_utterance_natively_in_webkit(
    live_stack: Stack, media_dir: Path, webkit: webdriver.WebKitGTK
):
    client = _ready_user(live_stack, media_dir, "hls-webkit-user")
    session_id, token = _session(client)
    watch = Watch(webkit, client.url(f"/hls/{session_id}/playlist.m3u8?token={token}"))
    watch.poll()
    # GStreamer counts currentTime from the first segment of the first playlist it loads.
    # That playlist starts at origin or later, so currentTime never overstates how far past
    # the start of origin the player has got.
    origin = min(watch.kinds)
    webkit.get(client.url(f"/hls/player/{session_id}?token={token}"))

    first = watch.until(lambda s: s["ready"] >= 1, 60, "no metadata")
    idle = watch.until(lambda s: s["time"] >= first["time"] + 2.0, 60, "the idle loop stalls")
    assert idle["engine"] == "native", idle
    # The native path although hls.js could run here (WebKitGTK has MSE), as on Safari.
    engines = webkit.execute_script(ENGINES_JS)
    assert engines["native"] in ("maybe", "probably") and engines["hlsJs"], engines
    assert idle["muted"] and idle["status"] == "Live" and idle["frames"] > 0, idle
    webkit.save_screenshot(str(ARTIFACTS_DIR / "hls-webkit-idle.png"))

    _stream_utterance(client, session_id, media_dir)
    watch.until(lambda s: "live" in watch.kinds.values(), 240, "no live segment")
    first_live = min(seq for seq, kind in watch.kinds.items() if kind == "live")
    # Where the first live segment plays (if the player's first playlist began at origin).
    middle = watch.media_time(origin, first_live - 1) + watch.durations[first_live] / 2
    if watch.state["time"] < middle:
        watch.until(lambda s: s["time"] >= middle, 60, "never reached the utterance")
        webkit.save_screenshot(str(ARTIFACTS_DIR / "hls-webkit-live.png"))
    watch.until(lambda s: _completed(client, session_id), 240, "the utterance never completed")
    watch.until(lambda s: watch.idle_after_live() is not None, 60, "no idle after the live ones")
    live = [seq for seq, kind in watch.kinds.items() if kind == "live"]
    # Past the end of the first idle segment after the utterance: through every live one.
    end = watch.media_time(origin, watch.idle_after_live())
    done = watch.until(lambda s: s["time"] >= end, 90, f"never played to {end:.1f}s")
    webkit.save_screenshot(str(ARTIFACTS_DIR / "hls-webkit-after.png"))

    served = client.get(f"/sessions/{session_id}/status").json()["chunks_served"]
    assert served >= len(live)  # the player fetched every live segment itself
    # Video frames, not just the audio clock: a quarter of the frame rate at least, as a
    # loaded machine makes the decoder drop late frames.
    assert done["frames"] - idle["frames"] >= FPS * (done["time"] - idle["time"]) / 4, done
    button = webkit.find_element("css selector", ".unmute")
    button.click()
    assert webkit.execute_script("return window.musetalkHlsPlayer.video.muted") is False
    assert not button.is_displayed()
