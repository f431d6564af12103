"""The joins between chunks as heard in a real headless Chromium: a pure tone streamed in
1 s chunks must come out of the session player as one unbroken tone.

The player page, opened with ``?debug_audio=1``, records what its live <video> plays (an
AudioWorklet at 48 kHz, see static/players/session-player.js). Each chunk is a separately
encoded AAC stream, so a wrong cut at a join shows up in the recording as a gap, a repeated
or skipped stretch (a jump in the sine's phase) or a click.
"""

from __future__ import annotations

import base64
import wave
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from musetalk_site.stack import Stack
from tests.conftest import ARTIFACTS_DIR
from tests.e2e.client import SseFollower, ready_avatar_user
from tests.e2e.test_player_browser import FPS, stream_audio, until_state
from tests.media import make_face_video

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TONE_HZ = 440.0  # whole cycles per second: every 1 s join falls on a zero crossing
TONE_AMPLITUDE = 0.5
TONE_SECONDS = 3.2  # 80 frames at 25 fps: chunks of 1, 1, 1 and 0.2 s
SEAMS = (1.0, 2.0, 3.0)
# A chunk's pre-roll (the encoder's priming frame plus the audio before the chunk) runs up
# to ~90 ms: put in the wrong place, it spoils the tone up to that far before a join.
SEAM_ZONE_S = 0.1

RATE = 48000  # the recorder's rate, that of the chunks' AAC audio
FIT = RATE // 20  # the sine is fitted to the 100 ms around each point checked
NEAR = RATE // 100  # residual looked at within 10 ms of it ...
BLOCK = RATE // 500  # ... as the RMS of 2 ms blocks
STEP = RATE // 100  # points checked every 10 ms along the tone
SEAM_FACTOR = 3.0  # near a join, at most this times the worst seen away from the joins
NOISE_FLOOR = 0.02  # -28 dB under the tone: below this nothing counts as a click
QUIET = 0.05  # |sample| under this for more than 1 ms inside the tone is a gap
MAX_QUIET_SAMPLES = RATE // 1000
LENGTH_TOLERANCE_S = 0.025


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("player-audio-media")
    make_face_video(folder / "face.mp4", seconds=0.8, fps=FPS, size=(256, 320))
    _make_tone_wav(folder / "tone.wav", sample_rate=16000)
    return folder


def _make_tone_wav(path: Path, *, sample_rate: int) -> Path:
    """A 16-bit mono WAV of the test tone; it starts and ends at a zero crossing."""
    t = np.arange(int(round(TONE_SECONDS * sample_rate))) / sample_rate
    tone = TONE_AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * t)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes((tone * 32767).astype("<i2").tobytes())
    return path


def test_a_tone_streamed_in_chunks_plays_without_a_gap_or_click_at_the_joins(
    live_stack: Stack, media_dir: Path, browser: Any
):
    client = ready_avatar_user(live_stack.base_url, media_dir / "face.mp4", "audio-user")
    created = client.post("/sessions/create?avatar_id=host&chunk_duration=1").json()
    session_id, player_url = created["session_id"], created["player_url"]
    token = player_url.split("?token=")[1]
    feed = SseFollower(
        client,
        f"/sessions/{session_id}/events?token={token}",
        {"speaking_ended", "error", "interrupted"},
    )
    stream_audio(client, session_id, media_dir / "tone.wav")
    events = feed.wait(timeout=240)
    assert events[-1]["event"] == "speaking_ended" and events[-1]["reason"] == "complete"
    assert [e["duration"] for e in events if e["event"] == "chunk"] == [1, 1, 1, 0.2]

    # Opened right after the utterance, the page replays it with every chunk at hand: the
    # recording then holds the joins themselves, not waits for chunks still being made.
    browser.get(f"{live_stack.base_url}{player_url}&debug_audio=1")
    done = until_state(browser, lambda s: s["ended"] >= 1 or s["errors"], timeout=60)
    assert done["errors"] == [] and done["utterances"][0]["chunksAppended"] == 4
    assert done["stalls"] == 0, "playback waited for a chunk: the recording has a pause"
    heard = _recording(browser, after_frames=done["audioFrames"])

    start, end = _tone_span(heard)
    tone = heard[start:end]
    times, residuals = _residual_profile(tone)
    _save_artifacts(heard, start, end, times, residuals)

    _assert_no_click_near_a_join(times, residuals)
    quiet = _longest_quiet_run(tone)
    assert quiet <= MAX_QUIET_SAMPLES, f"a {quiet * 1000 / RATE:.1f} ms gap inside the tone"
    assert tone.size / RATE == pytest.approx(TONE_SECONDS, abs=LENGTH_TOLERANCE_S)


def _recording(browser: Any, *, after_frames: int) -> np.ndarray:
    """The page's recording once it runs 0.3 s past the end (the last blocks have arrived)."""
    until_state(browser, lambda s: s["audioFrames"] >= after_frames + 0.3 * RATE, timeout=10)
    assert browser.execute_script("return window.musetalkPlayer.audio.sampleRate") == RATE
    encoded = browser.execute_script("return window.musetalkPlayer.audio.base64()")
    return np.frombuffer(base64.b64decode(encoded), dtype="<f4").astype(np.float64)


def _tone_span(signal: np.ndarray) -> tuple[int, int]:
    """First and one-past-last loud sample. The tone starts and ends at a zero crossing, so
    it passes ``QUIET`` within a sample or two of either end."""
    loud = np.flatnonzero(np.abs(signal) > QUIET)
    assert loud.size, "the recording is silent"
    return int(loud[0]), int(loud[-1]) + 1


def _fit_sine(segment: np.ndarray) -> np.ndarray:
    """The ``TONE_HZ`` sine (any amplitude and phase) closest to ``segment``."""
    t = np.arange(segment.size) / RATE
    basis = np.stack([np.sin(2 * np.pi * TONE_HZ * t), np.cos(2 * np.pi * TONE_HZ * t)], axis=1)
    coefficients, *_ = np.linalg.lstsq(basis, segment, rcond=None)
    return basis @ coefficients


def _residual_near(signal: np.ndarray, at: int) -> float:
    """The largest 2 ms RMS, within 10 ms of sample ``at``, of what is left after taking
    out the sine fitted to the 100 ms around it. A gap, a click or a phase jump at ``at``
    leaves much more than the codec's noise does."""
    segment = signal[at - FIT : at + FIT]
    residual = (segment - _fit_sine(segment))[FIT - NEAR : FIT + NEAR]
    return float(np.sqrt((residual.reshape(-1, BLOCK) ** 2).mean(axis=1)).max())


def _residual_profile(tone: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_residual_near` every 10 ms along the tone, as (seconds, residuals)."""
    points = np.arange(FIT, tone.size - FIT, STEP)
    residuals = np.array([_residual_near(tone, int(at)) for at in points])
    return points / RATE, residuals


def _assert_no_click_near_a_join(times: np.ndarray, residuals: np.ndarray) -> None:
    """Within ``SEAM_ZONE_S`` of a join the residual stays within ``SEAM_FACTOR`` of the
    worst one away from the joins, which is the codec's own error on this tone."""
    at_seams = np.min(np.abs(times[:, None] - np.array(SEAMS)), axis=1) <= SEAM_ZONE_S
    worst = int(np.argmax(np.where(at_seams, residuals, 0)))
    noise = float(residuals[~at_seams].max())
    assert residuals[worst] <= max(SEAM_FACTOR * noise, NOISE_FLOOR), (
        f"residual {residuals[worst]:.3f} at {times[worst]:.2f} s; away from joins <= {noise:.3f}"
    )


def _longest_quiet_run(tone: np.ndarray) -> int:
    """Samples in the longest stretch under ``QUIET``; a zero crossing makes 1 or 2."""
    longest = run = 0
    for quiet in np.abs(tone) < QUIET:
        run = run + 1 if quiet else 0
        longest = max(longest, run)
    return longest


def _save_artifacts(
    heard: np.ndarray, start: int, end: int, times: np.ndarray, residuals: np.ndarray
) -> None:
    """The recording (WAV), the numbers (npz) and a picture of the joins (PNG)."""
    clip = heard[max(0, start - RATE // 10) : end + RATE // 10]
    with wave.open(str(ARTIFACTS_DIR / "player-audio.wav"), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes((np.clip(clip, -1, 1) * 32767).astype("<i2").tobytes())
    np.savez(
        ARTIFACTS_DIR / "player-audio-seams.npz",
        recording=heard.astype(np.float32),
        rate=RATE,
        tone_start=start,
        tone_end=end,
        times=times,
        residuals=residuals,
    )
    tone = heard[start:end]
    panels = [_seam_panel(tone, round(at * RATE), at) for at in SEAMS]
    panels.append(_profile_panel(times, residuals))
    cv2.imwrite(str(ARTIFACTS_DIR / "player-audio-seams.png"), np.vstack(panels))


def _seam_panel(signal: np.ndarray, at: int, seconds: float) -> np.ndarray:
    """20 ms around one join: the recording (white), the fitted sine (green) and the
    residual magnified 4 times (red)."""
    width, height = 960, 220
    segment = signal[at - FIT : at + FIT]
    fitted = _fit_sine(segment)
    image = np.zeros((height, width, 3), np.uint8)
    cv2.line(image, (width // 2, 0), (width // 2, height), (90, 90, 90), 1)
    for values, colour in ((fitted, (0, 180, 0)), (segment, (255, 255, 255))):
        _trace(image, values[FIT - NEAR : FIT + NEAR], colour)
    _trace(image, 4 * (segment - fitted)[FIT - NEAR : FIT + NEAR], (60, 60, 255))
    label = f"t = {seconds:g} s  residual {_residual_near(signal, at):.4f}"
    cv2.putText(image, label, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (220, 220, 220), 1)
    return image


def _trace(image: np.ndarray, values: np.ndarray, colour: tuple[int, int, int]) -> None:
    height, width = image.shape[:2]
    span = 1.2 * TONE_AMPLITUDE  # anything louder is drawn at the edge
    xs = np.linspace(0, width - 1, values.size)
    ys = height / 2 - np.clip(values, -span, span) * (height / 2 - 4) / span
    points = np.stack([xs, ys], axis=1).round().astype(np.int32)
    cv2.polylines(image, [points], isClosed=False, color=colour, thickness=1)


def _profile_panel(times: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    """The residual along the whole tone (yellow, 0 to 0.1 full height), joins in grey."""
    width, height = 960, 160
    image = np.zeros((height, width, 3), np.uint8)
    length = times[-1] + times[0]
    for at in SEAMS:
        x = round(at / length * (width - 1))
        cv2.line(image, (x, 0), (x, height), (90, 90, 90), 1)
    xs = times / length * (width - 1)
    ys = (height - 4) - np.clip(residuals / 0.1, 0, 1) * (height - 8)
    points = np.stack([xs, ys], axis=1).round().astype(np.int32)
    cv2.polylines(image, [points], isClosed=False, color=(0, 220, 255), thickness=1)
    label = f"residual along the tone, max {residuals.max():.4f}"
    cv2.putText(image, label, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (220, 220, 220), 1)
    return image
