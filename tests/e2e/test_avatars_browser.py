"""The avatars page in a real headless Chromium on the live stack (random-tiny engine), as a
newcomer's first visit: sign up; bad files are refused where the user looks; a real clip
uploads with a progress bar, its card follows the preparation to Ready and shows a still of
the face and the idle loop on hover; a video of it made on the Videos page plays; deleting
asks first. axe-core, console and phone-width checks on each state."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from avatars.models import Avatar
from musetalk_site.stack import Stack
from tests.e2e.a11y import axe_violations, console_errors, fits_the_width, screenshots
from tests.e2e.pages import PASSWORD, wait_for_heading, wait_for_text
from tests.media import make_face_video, make_speech_wav

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PREPARE_BOUND = 240  # seconds: far above what preparing a 1-s clip takes on the CPU


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("avatar-page-media")
    make_face_video(folder / "face.mp4", seconds=1.0, fps=25, size=(256, 320))
    make_speech_wav(folder / "hello.wav", seconds=1.2)
    (folder / "notes.txt").write_text("not a video")
    (folder / "broken.mp4").write_bytes(b"\x00\x01garbage" * 4000)
    return {path.name: path for path in folder.iterdir()}


def _sign_up(browser, base: str) -> None:
    """A newcomer makes an account on the sign-up page and lands on the empty gallery."""
    browser.get(base + "/signup/")
    browser.find_element(By.ID, "id_username").send_keys("gallery-user")
    browser.find_element(By.ID, "id_password1").send_keys(PASSWORD)
    browser.find_element(By.ID, "id_password2").send_keys(PASSWORD + Keys.ENTER)
    wait_for_heading(browser, "Your avatars")


def _upload(browser, name: str, clip: Path) -> None:
    field = browser.find_element(By.ID, "avatar-id")
    field.clear()
    field.send_keys(name)
    browser.find_element(By.ID, "video-file").send_keys(str(clip))
    browser.find_element(By.ID, "upload-submit").click()


def _error(browser) -> str:
    box = browser.find_element(By.ID, "upload-error")
    WebDriverWait(browser, 30).until(lambda _: box.is_displayed() and box.text)
    return box.text


def _card_status(browser, avatar_id: str) -> str | None:
    """The avatar card's status, read in one script: the page reloads itself as work ends."""
    return browser.execute_script(
        'const card = document.querySelector(`.avatar-card[data-avatar-id="${arguments[0]}"]`);'
        "return card ? card.dataset.status : null;",
        avatar_id,
    )


def test_upload_follow_the_preparation_preview_and_delete(live_stack: Stack, browser, clips):
    base = live_stack.base_url
    _sign_up(browser, base)
    assert "No avatars yet" in browser.find_element(By.TAG_NAME, "main").text
    assert axe_violations(browser) == [] and console_errors(browser) == []
    screenshots(browser, "avatars-empty")
    browser.set_window_size(390, 844)
    assert fits_the_width(browser)
    browser.set_window_size(1280, 900)

    browser.find_element(By.ID, "upload-submit").click()  # nothing chosen
    assert "Give the avatar a name" in _error(browser)
    _upload(browser, "notes", clips["notes.txt"])
    assert "is not a video" in _error(browser)
    _upload(browser, "broken", clips["broken.mp4"])  # looks like a video: the server decides
    message = _error(browser)
    assert message and "failed (5" not in message
    assert not Avatar.objects.filter(avatar_id="broken").exclude(status="failed").exists()
    # The refusal itself is the only thing the console reports (as a failed request).
    logged = console_errors(browser)
    assert logged and all(
        "/avatars/prepare" in e["message"] and " 4" in e["message"] for e in logged
    )
    screenshots(browser, "avatars-upload-error")

    # The webcam (Chromium's synthetic camera: a test pattern, no face) records a clip; the
    # preparation finds no face and the card says so.
    field = browser.find_element(By.ID, "avatar-id")
    field.clear()
    field.send_keys("webcam")
    browser.find_element(By.ID, "webcam-start").click()
    WebDriverWait(browser, 10).until(lambda b: b.find_element(By.ID, "webcam-stop").is_displayed())
    time.sleep(1.5)
    browser.find_element(By.ID, "webcam-stop").click()
    WebDriverWait(browser, 10).until(
        expected_conditions.text_to_be_present_in_element((By.ID, "dropzone-text"), "webcam.webm")
    )
    browser.find_element(By.ID, "upload-submit").click()
    WebDriverWait(browser, PREPARE_BOUND).until(lambda b: _card_status(b, "webcam") == "failed")
    failed = browser.find_element(By.CSS_SELECTOR, '.avatar-card[data-avatar-id="webcam"]')
    assert "face" in failed.find_element(By.CSS_SELECTOR, ".error").text.lower()

    _upload(browser, "presenter", clips["face.mp4"])
    first_status = WebDriverWait(browser, 60).until(lambda b: _card_status(b, "presenter"))
    assert first_status in ("queued", "preparing", "ready")
    progress: list[int] = []  # the card's progress bar as the preparation goes

    def ready(b) -> bool:
        # One read in the page: it reloads itself once the preparation is over.
        card = b.execute_script(
            "const card = document.querySelector('.avatar-card[data-avatar-id=\"presenter\"]');"
            "const bar = card && card.querySelector('progress');"
            "return card && {status: card.dataset.status, progress: bar ? bar.value : null};"
        )
        if card and card["progress"] is not None:
            progress.append(int(card["progress"]))
        return bool(card) and card["status"] == "ready"

    WebDriverWait(browser, PREPARE_BOUND, poll_frequency=0.1).until(ready)
    if first_status != "ready":  # a bar was shown while it prepared, within 0..100
        assert progress and all(0 <= value <= 100 for value in progress), progress
    card = browser.find_element(By.CSS_SELECTOR, '.avatar-card[data-avatar-id="presenter"]')
    still = card.find_element(By.TAG_NAME, "img")
    WebDriverWait(browser, 30).until(
        lambda _: browser.execute_script("return arguments[0].naturalWidth", still) == 256
    )
    ActionChains(browser).move_to_element(card).perform()
    preview = card.find_element(By.CSS_SELECTOR, "video.preview")
    WebDriverWait(browser, 30).until(
        lambda _: browser.execute_script("return arguments[0].currentTime", preview) > 0
    )
    assert axe_violations(browser) == [] and console_errors(browser) == []
    screenshots(browser, "avatars-ready")

    # The new avatar speaks: a video made on the Videos page plays there.
    browser.find_element(By.LINK_TEXT, "Videos").click()
    wait_for_heading(browser, "Videos")
    browser.find_element(By.ID, "audio-file").send_keys(str(clips["hello.wav"]))
    browser.find_element(By.ID, "video-submit").click()
    video = WebDriverWait(browser, PREPARE_BOUND).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, '.job[data-status="succeeded"] video')
    )[0]
    browser.execute_script("arguments[0].muted = true; arguments[0].play()", video)
    WebDriverWait(browser, 30).until(
        lambda b: b.execute_script("return arguments[0].currentTime", video) > 0.2
    )
    assert browser.execute_script("return arguments[0].duration", video) == pytest.approx(
        1.2, abs=0.1
    )
    browser.get(base + "/")
    card = WebDriverWait(browser, 20).until(
        expected_conditions.presence_of_element_located(
            (By.CSS_SELECTOR, '.avatar-card[data-avatar-id="presenter"]')
        )
    )

    card.find_element(By.PARTIAL_LINK_TEXT, "Delete").click()
    wait_for_heading(browser, "Delete")
    assert axe_violations(browser) == []
    screenshots(browser, "avatar-delete")
    browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    wait_for_text(browser, ".messages", "deleted")
    assert not Avatar.objects.filter(avatar_id="presenter").exists()
