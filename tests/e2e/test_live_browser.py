"""The live playground in a real headless Chromium on the live stack (random-tiny engine):
start a session, talk to it with a file and with the microphone, see each utterance play in
the MSE, HLS and WebRTC players with its measured latency, interrupt, end; the snippets carry
the session's real URLs; axe-core, console and phone-width checks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from musetalk_site.stack import Stack
from sessions_app.models import StreamRequest, StreamSession
from tests.e2e.a11y import axe_violations, console_errors, fits_the_width, screenshots
from tests.e2e.client import ready_avatar_user
from tests.e2e.pages import sign_in, wait_for_heading
from tests.media import make_face_video, make_speech_wav

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WORK_BOUND = 180  # seconds: far above what a 2-s utterance takes on the CPU


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("live-page-media")
    make_face_video(folder / "face.mp4", seconds=0.8, fps=25, size=(256, 320))
    make_speech_wav(folder / "hello.wav", seconds=2.0)
    make_speech_wav(folder / "long.wav", seconds=12.0)
    (folder / "notes.txt").write_text("not audio")
    return {path.name: path for path in folder.iterdir()}


def _start(browser, transport: str) -> StreamSession:
    browser.find_element(By.CSS_SELECTOR, f'input[name="transport"][value="{transport}"]').click()
    browser.find_element(By.ID, "live-start-submit").click()
    card = browser.find_element(By.ID, "live-session")
    WebDriverWait(browser, 30).until(lambda _: card.is_displayed())
    session_id = browser.find_element(By.ID, "live-session-id").text
    return StreamSession.objects.get(session_id=session_id)


def _rows(browser) -> list[dict]:
    return browser.execute_script(
        "return [...document.querySelectorAll('#live-latency tbody tr')].map((row) => ({"
        " state: row.dataset.state, cells: [...row.cells].map((cell) => cell.textContent) }))"
    )


def _shown(browser, count: int) -> dict:
    """Waits until ``count`` utterances are listed and the last one showed; its row."""

    def settled(b):
        rows = _rows(b)
        return len(rows) == count and rows[-1]["state"] != "waiting" and rows[-1]

    row = WebDriverWait(browser, WORK_BOUND).until(settled)
    assert row["state"] == "shown", row
    return row


def _latency_ms(row: dict) -> int:
    text = row["cells"][3]
    assert text.endswith(" ms"), text
    return int(text.removesuffix(" ms"))


def _in_player(browser, script: str):
    """Runs ``script`` in the player's frame."""
    browser.switch_to.frame(browser.find_element(By.ID, "live-player"))
    try:
        return browser.execute_script(script)
    finally:
        browser.switch_to.default_content()


def _settled_requests(session: StreamSession) -> list[StreamRequest]:
    def done():
        requests = list(session.requests.order_by("queued_at"))
        active = [r for r in requests if r.status in StreamRequest.ACTIVE_STATUSES]
        return requests if requests and not active else None

    deadline = time.monotonic() + WORK_BOUND
    while (requests := done()) is None:
        assert time.monotonic() < deadline, "utterances still under way"
        time.sleep(0.3)
    return requests


def test_talk_to_an_avatar_in_the_mse_hls_and_webrtc_players(live_stack: Stack, browser, media):
    base = live_stack.base_url
    ready_avatar_user(base, media["face.mp4"], "live-talker", avatar_id="anna")
    sign_in(browser, base, "live-talker")
    browser.find_element(By.LINK_TEXT, "Live").click()
    wait_for_heading(browser, "Live playground")
    assert axe_violations(browser) == [] and console_errors(browser) == []
    screenshots(browser, "live-start")

    # MSE: a file, refused when it is not audio, then one that plays.
    session = _start(browser, "mse")
    assert session.kind == StreamSession.Kind.SSE and session.avatar.avatar_id == "anna"
    assert session.chunk_duration == 1.0  # the page's default: sooner than the API's 2 s
    WebDriverWait(browser, 30).until(
        lambda b: _in_player(b, "return Boolean(window.musetalkPlayer)")
    )
    talk = browser.find_element(By.ID, "talk-file")
    talk.send_keys(str(media["notes.txt"]))
    error = browser.find_element(By.ID, "live-talk-error")
    WebDriverWait(browser, 10).until(lambda _: error.is_displayed())
    assert "is not audio" in error.text
    talk.send_keys(str(media["hello.wav"]))
    first = _shown(browser, 1)
    _settled_requests(session)  # each utterance ends before the next barges in
    assert first["cells"][1:3] == ["hello.wav", "MSE"]
    assert 0 < _latency_ms(first) < WORK_BOUND * 1000
    assert _in_player(browser, "return document.querySelector('video.live').currentTime") > 0

    snippets = {
        name: browser.find_element(By.ID, f"snippet-{name}").get_attribute("value")
        for name in ("curl", "js", "webview")
    }
    assert f"{base}/sessions/{session.session_id}/stream" in snippets["curl"]
    assert f"{base}/sessions/{session.session_id}/stream" in snippets["js"]
    assert f"{base}/player/session/{session.session_id}?token=" in snippets["webview"]

    # The microphone (Chromium's synthetic one beeps).
    browser.find_element(By.ID, "talk-mic-start").click()
    time.sleep(1.6)
    browser.find_element(By.ID, "talk-mic-stop").click()
    second = _shown(browser, 2)
    _settled_requests(session)
    assert second["cells"][1:3] == ["recording.webm", "MSE"]

    # The same session in the HLS player (hls.js in Chromium).
    browser.find_element(By.CSS_SELECTOR, '#live-player-switch [data-player="hls"]').click()
    WebDriverWait(browser, 30).until(
        lambda b: _in_player(b, "return window.musetalkHlsPlayer.state.engine") == "hls.js"
    )
    assert f"/hls/player/{session.session_id}?token=" in browser.find_element(
        By.ID, "snippet-webview"
    ).get_attribute("value")
    time.sleep(2)  # hls.js is on the idle loop
    browser.find_element(By.ID, "live-resend").click()
    third = _shown(browser, 3)
    _settled_requests(session)
    assert third["cells"][1:3] == ["recording.webm", "HLS"]  # the last audio, sent again
    assert _latency_ms(third) > 0

    # A long utterance, interrupted.
    browser.find_element(By.CSS_SELECTOR, '#live-player-switch [data-player="mse"]').click()
    talk.send_keys(str(media["long.wav"]))
    _shown(browser, 4)
    browser.find_element(By.ID, "live-interrupt").click()
    requests = _settled_requests(session)
    assert [r.status for r in requests] == ["completed"] * 3 + ["interrupted"]
    for row, request in zip(_rows(browser), requests, strict=True):
        made = (request.first_chunk_at - request.queued_at).total_seconds()
        print(f"{row['cells']}: first chunk made {1000 * made:.0f} ms after the upload")
    assert axe_violations(browser) == [] and console_errors(browser) == []
    screenshots(browser, "live-session")

    browser.find_element(By.ID, "live-end").click()
    start_card = browser.find_element(By.ID, "start-card")
    WebDriverWait(browser, 20).until(lambda _: start_card.is_displayed())
    session.refresh_from_db()
    assert session.status == StreamSession.Status.ENDED

    # WebRTC: the player connects, the utterance shows, measured at the frame presented.
    webrtc = _start(browser, "webrtc")
    assert webrtc.kind == StreamSession.Kind.WEBRTC
    assert not browser.find_element(By.ID, "live-player-switch").is_displayed()
    WebDriverWait(browser, 60).until(
        lambda b: (
            _in_player(b, "return window.musetalkWebrtcPlayer.state.connection") == "connected"
        )
    )
    browser.find_element(By.ID, "talk-file").send_keys(str(media["hello.wav"]))
    live = _shown(browser, 1)
    assert live["cells"][1:3] == ["hello.wav", "WEBRTC"]
    assert _latency_ms(live) > 0
    print(f"WebRTC: {live['cells']}")
    curl = browser.find_element(By.ID, "snippet-curl").get_attribute("value")
    assert f"{base}/webrtc/sessions/{webrtc.session_id}/stream" in curl
    assert [r.status for r in _settled_requests(webrtc)] == ["completed"]
    frames = _in_player(browser, "return window.musetalkWebrtcPlayer.state.framesDecoded")
    assert frames > 50  # idle and live frames decoded in the page
    assert console_errors(browser) == []

    browser.set_window_size(390, 844)
    assert fits_the_width(browser)
    browser.set_window_size(1280, 900)
    browser.find_element(By.ID, "live-end").click()
    WebDriverWait(browser, 20).until(lambda _: start_card.is_displayed())
    webrtc.refresh_from_db()
    assert webrtc.status == StreamSession.Status.ENDED
