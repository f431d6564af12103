"""The videos page in a real headless Chromium on the live stack (random-tiny engine): audio
is refused where the user looks when it is not audio; a WAV upload and a microphone
recording (Chromium's synthetic microphone) each become a video that plays in the page, with
its length, frames and timings; axe-core, console and phone-width checks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from avatars.models import GenerationJob
from musetalk_site.stack import Stack
from tests.e2e.a11y import axe_violations, console_errors, fits_the_width, screenshots
from tests.e2e.client import ready_avatar_user
from tests.e2e.pages import sign_in, wait_for_heading
from tests.media import make_face_video, make_speech_wav

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WORK_BOUND = 240  # seconds: far above what a 2-s video takes on the CPU


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("videos-page-media")
    make_face_video(folder / "face.mp4", seconds=0.8, fps=25, size=(256, 320))
    make_speech_wav(folder / "hello.wav", seconds=2.0)
    (folder / "notes.txt").write_text("not audio")
    return {path.name: path for path in folder.iterdir()}


def _error(browser) -> str:
    box = browser.find_element(By.ID, "video-error")
    WebDriverWait(browser, 30).until(lambda _: box.is_displayed() and box.text)
    return box.text


def _finished_job(browser, count: int) -> dict:
    """Waits until ``count`` videos are listed and none is under way; the newest one's row."""

    def settled(b):
        # One script reads every row: the page reloads as a video is taken or finishes, and
        # rows found before a reload are gone after it.
        statuses = b.execute_script(
            "return Array.from(document.querySelectorAll('.job'), row => row.dataset.status)"
        )
        return len(statuses) == count and not {"queued", "running"} & set(statuses)

    WebDriverWait(browser, WORK_BOUND).until(settled)
    row = browser.find_elements(By.CSS_SELECTOR, ".job")[0]
    return {"status": row.get_attribute("data-status"), "text": row.text, "row": row}


def _plays(browser, row) -> float:
    video = row.find_element(By.TAG_NAME, "video")
    WebDriverWait(browser, 30).until(
        lambda _: browser.execute_script("return arguments[0].readyState", video) >= 1
    )
    browser.execute_script("arguments[0].muted = true; return arguments[0].play()", video)
    WebDriverWait(browser, 30).until(
        lambda _: browser.execute_script("return arguments[0].currentTime", video) > 0.2
    )
    return browser.execute_script("return arguments[0].duration", video)


def test_make_videos_from_a_file_and_from_the_microphone(live_stack: Stack, browser, media):
    base = live_stack.base_url
    ready_avatar_user(base, media["face.mp4"], "video-maker")
    sign_in(browser, base, "video-maker")
    browser.find_element(By.LINK_TEXT, "Videos").click()
    wait_for_heading(browser, "Videos")
    assert "No videos yet" in browser.find_element(By.TAG_NAME, "main").text
    assert axe_violations(browser) == [] and console_errors(browser) == []
    screenshots(browser, "videos-empty")

    browser.find_element(By.ID, "video-submit").click()
    assert "Choose audio" in _error(browser)
    browser.find_element(By.ID, "audio-file").send_keys(str(media["notes.txt"]))
    browser.find_element(By.ID, "video-submit").click()
    assert "is not audio" in _error(browser)

    browser.find_element(By.ID, "audio-file").send_keys(str(media["hello.wav"]))
    browser.find_element(By.ID, "video-submit").click()
    first = _finished_job(browser, 1)
    assert first["status"] == "succeeded", first["text"]
    assert "2.0 s" in first["text"] and "50 at 25 fps" in first["text"]
    assert _plays(browser, first["row"]) == pytest.approx(2.0, abs=0.1)

    browser.find_element(By.ID, "mic-start").click()
    time.sleep(1.6)  # Chromium's synthetic microphone beeps
    browser.find_element(By.ID, "mic-stop").click()
    WebDriverWait(browser, 10).until(
        expected_conditions.text_to_be_present_in_element(
            (By.ID, "audio-dropzone-text"), "recording.webm"
        )
    )
    browser.find_element(By.ID, "video-submit").click()
    second = _finished_job(browser, 2)
    assert second["status"] == "succeeded", second["text"]
    assert 1.0 < _plays(browser, second["row"]) < 3.0
    assert GenerationJob.objects.filter(owner__username="video-maker").count() == 2

    assert axe_violations(browser) == [] and console_errors(browser) == []
    screenshots(browser, "videos-made")
    browser.set_window_size(390, 844)
    assert fits_the_width(browser)
