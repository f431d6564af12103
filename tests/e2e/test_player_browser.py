"""The session player (MSE) in a real headless Chromium, against the live stack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from musetalk_site.stack import Stack
from tests.conftest import ARTIFACTS_DIR
from tests.e2e.client import ApiClient, ready_avatar_user, wait_for
from tests.media import make_face_video, make_speech_wav

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FPS = 25
SPEECH_SECONDS = 2.5
SPOKEN_SECONDS = 62 / FPS  # floor(2.5 s * 25 fps) frames, in 1 s chunks: 25 + 25 + 12

STATE = """
const p = window.musetalkPlayer;
if (!p) return null;
const live = document.querySelector("video.live"), idle = document.querySelector("video.idle");
return {state: p.state, connected: p.connected, connections: p.connections,
        events: p.events, errors: p.errors, chunksAppended: p.chunksAppended, ended: p.ended,
        stalls: p.stalls, audioFrames: p.audio ? p.audio.frames : null,
        utterances: p.utterances, idleError: p.idleError || null,
        live: document.getElementById("musetalk-player").dataset.live,
        idleTime: idle.currentTime, idlePaused: idle.paused, idleReady: idle.readyState,
        liveTime: live.currentTime};
"""


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("player-media")
    make_face_video(folder / "face.mp4", seconds=0.8, fps=FPS, size=(256, 320))
    make_speech_wav(folder / "speech.wav", seconds=SPEECH_SECONDS, sample_rate=16000)
    make_speech_wav(folder / "long.wav", seconds=6.0, sample_rate=16000)
    return folder


def _ready_user(stack: Stack, media_dir: Path, username: str) -> ApiClient:
    return ready_avatar_user(stack.base_url, media_dir / "face.mp4", username)


def stream_audio(client: ApiClient, session_id: str, audio: Path) -> str:
    with audio.open("rb") as handle:
        response = client.post(
            f"/sessions/{session_id}/stream",
            files={"audio_file": (audio.name, handle, "audio/wav")},
        )
    assert response.status_code == 200, response.text
    return response.json()["request_id"]


def player_state(browser: Any) -> dict[str, Any]:
    return browser.execute_script(STATE) or {}


def until_state(browser: Any, check: Any, timeout: float) -> dict[str, Any]:
    """Polls the page's player state until ``check(state)``; says what it saw if not."""
    seen: dict[str, Any] = {}

    def probe() -> bool:
        seen.update(player_state(browser))
        return bool(seen) and check(seen)

    try:
        wait_for(probe, timeout=timeout, interval=0.1)
    except AssertionError:
        raise AssertionError(f"player state: {seen}") from None
    return seen


def test_the_player_plays_every_chunk_back_to_back_then_returns_to_the_idle_loop(
    live_stack: Stack, media_dir: Path, browser: Any
):
    client = _ready_user(live_stack, media_dir, "player-user")
    created = client.post("/sessions/create?avatar_id=host&chunk_duration=1").json()
    session_id = created["session_id"]
    browser.get(live_stack.base_url + created["player_url"])
    idle = until_state(browser, lambda s: s["connected"] and s["idleReady"] >= 2, timeout=30)
    assert idle["state"] == "idle" and idle["live"] == "off" and idle["idleError"] is None
    until_state(browser, lambda s: not s["idlePaused"] and s["idleTime"] > 0, timeout=10)

    request_id = stream_audio(client, session_id, media_dir / "speech.wav")

    # Live on screen after the first chunk; then drop the feed: the player resumes after
    # the last event it had, and no chunk comes twice.
    speaking = until_state(browser, lambda s: s["live"] == "on", timeout=240)
    assert speaking["state"] in {"speaking", "buffering"}
    browser.save_screenshot(str(ARTIFACTS_DIR / "player.png"))
    browser.execute_script("window.musetalkPlayer.reconnect()")

    done = until_state(browser, lambda s: s["ended"] >= 1 or s["errors"], timeout=300)
    assert done["errors"] == []
    [utterance] = done["utterances"]
    assert utterance["requestId"] == request_id
    assert utterance["chunksAppended"] == utterance["totalChunks"] == 3
    assert utterance["ended"] is True
    assert utterance["playedTo"] == pytest.approx(SPOKEN_SECONDS, abs=0.2)
    # Gapless: the three chunks form one buffered range from 0 to the end of the speech.
    [(start, end)] = utterance["buffered"]
    assert start == pytest.approx(0, abs=0.05) and end == pytest.approx(SPOKEN_SECONDS, abs=0.05)
    assert utterance["type"].startswith('video/mp4; codecs="avc1.')
    assert done["chunksAppended"] == 3 and done["connections"] == 2
    assert done["events"].count("chunk") == 3
    assert done["events"][-2:] == ["complete", "speaking_ended"]

    back = until_state(browser, lambda s: s["state"] == "idle" and not s["idlePaused"], timeout=10)
    assert back["live"] == "off"
    later = until_state(browser, lambda s: s["idleTime"] != back["idleTime"], timeout=5)
    assert later["errors"] == []
    browser.save_screenshot(str(ARTIFACTS_DIR / "player-idle.png"))
    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == []


def test_the_mobile_player_drops_an_interrupted_utterance_for_the_idle_loop(
    live_stack: Stack, media_dir: Path, browser: Any
):
    client = _ready_user(live_stack, media_dir, "mobile-user")
    created = client.post("/sessions/create?avatar_id=host&chunk_duration=0.4").json()
    session_id, token = created["session_id"], created["player_url"].split("?token=")[1]
    browser.get(f"{live_stack.base_url}/player/mobile?session_id={session_id}&token={token}")
    until_state(browser, lambda s: s["state"] == "idle" and not s["idlePaused"], timeout=30)

    request_id = stream_audio(client, session_id, media_dir / "long.wav")
    until_state(browser, lambda s: s["live"] == "on", timeout=240)
    stopped = client.post(f"/sessions/{session_id}/interrupt").json()
    assert stopped["interrupted"] == [request_id]

    back = until_state(browser, lambda s: s["live"] == "off" and s["state"] == "idle", timeout=30)
    assert "interrupted" in back["events"] and back["errors"] == []
    [utterance] = back["utterances"]
    assert utterance["ended"] is False and back["ended"] == 0
    assert 1 <= utterance["chunksAppended"] < 15  # 6 s in 0.4 s chunks
    later = until_state(browser, lambda s: s["idleTime"] != back["idleTime"], timeout=5)
    assert not later["idlePaused"]
