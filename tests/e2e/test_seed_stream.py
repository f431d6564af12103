"""The live-event feed and chunks as the seed API's own clients use them, on the real stack.

The pages here are written from what the seed's players do: an ``EventSource`` on
``/sessions/{id}/events`` (or a ``fetch`` POST to ``/generate/stream`` read block by block),
then, for each ``chunk`` event, a plain ``fetch`` of its ``url`` whose bytes go straight into
one SourceBuffer opened as ``video/mp4; codecs="avc1.42E01E, mp4a.40.2"``, ``mode =
'sequence'``.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from musetalk_site.sse import OPENING
from musetalk_site.stack import Stack
from tests.e2e.client import ApiClient, ready_avatar_user, sse_payloads, wait_for
from tests.media import make_face_video, make_speech_wav

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FPS = 25
SPEECH_SECONDS = 2.5
SPOKEN_SECONDS = 62 / FPS  # floor(2.5 s * 25 fps) frames, in 1 s chunks: 25 + 25 + 12
SEED_TYPE = 'video/mp4; codecs="avc1.42E01E, mp4a.40.2"'
WORK_BOUND = 300  # seconds: far above what an utterance takes on the CPU

# The seed player's MSE side: fetch each announced url and append the bytes as they are.
APPENDER = """
const mime = arguments[0];
window.seedPlayer = {opened: false, order: [], chunks: 0, fetched: 0, appended: 0,
                     total: null, errors: [], buffered: []};
const log = window.seedPlayer;
const video = document.createElement("video");
video.muted = true;
document.body.appendChild(video);
const mediaSource = new MediaSource();
video.src = URL.createObjectURL(mediaSource);
let sourceBuffer = null, appending = false;
const pending = [];
function next() {
  if (appending || !pending.length || !sourceBuffer || sourceBuffer.updating) return;
  appending = true;
  try { sourceBuffer.appendBuffer(pending.shift()); }
  catch (error) { appending = false; log.errors.push("append: " + error); }
}
mediaSource.addEventListener("sourceopen", () => {
  sourceBuffer = mediaSource.addSourceBuffer(mime);
  sourceBuffer.mode = "sequence";
  sourceBuffer.addEventListener("updateend", () => {
    appending = false;
    log.appended += 1;
    const ranges = sourceBuffer.buffered;
    log.buffered = [];
    for (let i = 0; i < ranges.length; i += 1) log.buffered.push([ranges.start(i), ranges.end(i)]);
    next();
  });
  sourceBuffer.addEventListener("error", () => log.errors.push("SourceBuffer error"));
  next();
});
window.seedHandle = async (data) => {
  log.order.push(data.event);
  if (data.event === "chunk") {
    log.chunks += 1;
    const url = data.url.startsWith("http") ? data.url : location.origin + data.url;
    const response = await fetch(url);
    if (!response.ok) { log.errors.push("fetch " + response.status); return; }
    pending.push(new Uint8Array(await response.arrayBuffer()));
    log.fetched += 1;
    next();
  } else if (data.event === "complete") {
    log.total = data.total_chunks;
  } else if (data.event === "error") {
    log.errors.push("event: " + data.message);
  }
};
"""

# The seed's session player: an EventSource on the session's feed.
SESSION_FEED = """
const source = new EventSource(arguments[0]);
source.addEventListener("open", () => { window.seedPlayer.opened = true; });
source.addEventListener("message", (e) => window.seedHandle(JSON.parse(e.data)));
"""

# The seed's streaming page: POST the form, read the answer, split it on blank lines and take
# the blocks that start with "data: ".
GENERATE_STREAM = """
const [path, token, audio] = arguments;
const bytes = Uint8Array.from(atob(audio), (c) => c.charCodeAt(0));
const form = new FormData();
form.append("audio_file", new Blob([bytes], {type: "audio/wav"}), "speech.wav");
(async () => {
  const response = await fetch(path, {method: "POST", body: form,
                                      headers: {Authorization: "Token " + token}});
  if (!response.ok) { window.seedPlayer.errors.push("HTTP " + response.status); return; }
  window.seedPlayer.opened = true;
  const reader = response.body.getReader(), decoder = new TextDecoder();
  let buffer = "";
  while (true) {
    const result = await reader.read();
    if (result.done) break;
    buffer += decoder.decode(result.value, {stream: true});
    const blocks = buffer.split("\\n\\n");
    buffer = blocks.pop() || "";
    for (const block of blocks) {
      if (block.startsWith("data: ")) await window.seedHandle(JSON.parse(block.slice(6)));
    }
  }
  window.seedPlayer.done = true;
})();
"""


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("seed-stream-media")
    make_face_video(folder / "face.mp4", seconds=0.8, fps=FPS, size=(256, 320))
    make_speech_wav(folder / "speech.wav", seconds=SPEECH_SECONDS, sample_rate=16000)
    make_speech_wav(folder / "long.wav", seconds=8.0, sample_rate=16000)
    return folder


def _ready_user(stack: Stack, media_dir: Path, username: str) -> ApiClient:
    return ready_avatar_user(stack.base_url, media_dir / "face.mp4", username)


def _session(client: ApiClient) -> tuple[str, str]:
    """A new session (the seed's query string); its id and player token."""
    created = client.post("/sessions/create?avatar_id=host&user_id=u1&fps=25&chunk_duration=1")
    assert created.status_code == 200, created.text
    body = created.json()
    return body["session_id"], body["player_url"].split("?token=")[1]


def _stream(client: ApiClient, session_id: str, audio: Path) -> str:
    with audio.open("rb") as handle:
        response = client.post(
            f"/sessions/{session_id}/stream",
            files={"audio_file": (audio.name, handle, "audio/wav")},
        )
    assert response.status_code == 200, response.text
    return response.json()["request_id"]


class Feed:
    """A session feed read in a thread, with the request headers the caller chose."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.events: list[dict[str, Any]] = []
        self.changed = threading.Condition()
        self.response = requests.get(url, headers=headers, stream=True, timeout=(10, 300))
        assert self.response.status_code == 200
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            for _, payload in sse_payloads(self.response):
                with self.changed:
                    self.events.append(payload)
                    self.changed.notify_all()
        except Exception:
            pass  # closed by the test

    def wait_for(self, request_id: str, name: str) -> list[dict[str, Any]]:
        def seen() -> bool:
            return any(
                e["event"] == name and e.get("request_id") == request_id for e in self.events
            )

        with self.changed:
            assert self.changed.wait_for(seen, WORK_BOUND), self.events[-5:]
            return list(self.events)

    def close(self) -> None:
        self.response.close()


def _until(browser: Any, check: Any, timeout: float) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def probe() -> bool:
        seen.update(browser.execute_script("return window.seedPlayer || {}"))
        return check(seen)

    try:
        wait_for(probe, timeout=timeout, interval=0.2)
    except AssertionError:
        raise AssertionError(f"seed player state: {seen}") from None
    return seen


def _assert_every_chunk_appended(state: dict[str, Any], browser: Any) -> None:
    assert state["errors"] == []
    assert state["chunks"] == state["fetched"] == state["appended"] == state["total"] == 3
    # 'sequence' mode lays the chunks end to end: one range, as long as the speech (plus,
    # per chunk, what its last AAC frame runs past its video: the seed's players set no
    # append window).
    [(start, end)] = state["buffered"]
    assert start == pytest.approx(0, abs=0.1)
    assert SPOKEN_SECONDS - 0.05 <= end <= SPOKEN_SECONDS + 0.1 * state["chunks"]
    assert browser.execute_script("return document.querySelector('video').error") is None
    logged = browser.get_log("browser")
    severe = [e for e in logged if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]]
    assert severe == []


def test_the_seed_session_player_appends_every_chunk_url_of_an_utterance(
    live_stack: Stack, media_dir: Path, browser: Any
):
    client = _ready_user(live_stack, media_dir, "seed-mse-user")
    session_id, token = _session(client)
    browser.get(live_stack.base_url + "/health")  # any page of the origin the player is on
    assert browser.execute_script(f"return MediaSource.isTypeSupported('{SEED_TYPE}')")
    browser.execute_script(APPENDER, SEED_TYPE)
    browser.execute_script(SESSION_FEED, f"/sessions/{session_id}/events?token={token}")
    _until(browser, lambda s: s.get("opened"), timeout=30)  # before anything is published

    _stream(client, session_id, media_dir / "speech.wav")
    state = _until(browser, lambda s: s["appended"] >= 3 or s["errors"], timeout=WORK_BOUND)
    state = _until(browser, lambda s: s["total"] is not None or s["errors"], timeout=30)
    assert state["order"][:1] == ["speaking_started"]
    _assert_every_chunk_appended(state, browser)


def test_the_seed_streaming_page_appends_every_chunk_of_generate_stream(
    live_stack: Stack, media_dir: Path, browser: Any
):
    client = _ready_user(live_stack, media_dir, "seed-generate-ui-user")
    browser.get(live_stack.base_url + "/health")
    browser.execute_script(APPENDER, SEED_TYPE)
    audio = base64.b64encode((media_dir / "speech.wav").read_bytes()).decode()
    path = "/generate/stream?avatar_id=host&batch_size=2&fps=25&chunk_duration=1"
    browser.execute_script(GENERATE_STREAM, path, client.token, audio)

    state = _until(browser, lambda s: s.get("done") or s["errors"], timeout=WORK_BOUND)
    state = _until(browser, lambda s: s["appended"] >= 3 or s["errors"], timeout=30)
    assert state["order"] == ["chunk", "chunk", "chunk", "complete"]
    _assert_every_chunk_appended(state, browser)


def test_generate_stream_answers_the_seed_request_with_data_frames_until_complete(
    live_stack: Stack, media_dir: Path
):
    client = _ready_user(live_stack, media_dir, "seed-generate-user")
    query = "avatar_id=host&batch_size=2&fps=25&chunk_duration=1"
    with (media_dir / "speech.wav").open("rb") as handle:
        response = client.session.post(
            client.url(f"/generate/stream?{query}"),
            files={"audio_file": ("speech.wav", handle, "audio/wav")},
            stream=True,
            timeout=(10, WORK_BOUND),
        )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/event-stream")
    body = b"".join(response.iter_content(chunk_size=None)).decode()  # ends after "complete"
    assert body.startswith(OPENING)
    # The seed's readers: blocks split on blank lines, only "data: " blocks, nothing else.
    blocks = [block for block in body.split("\n\n") if block.startswith("data: ")]
    events = [json.loads(block[6:]) for block in blocks]
    assert [e["event"] for e in events] == ["chunk", "chunk", "chunk", "complete"]
    chunks, complete = events[:3], events[3]
    assert complete["total_chunks"] == 3
    assert [c["index"] for c in chunks] == [0, 1, 2]
    for chunk in chunks:
        assert {"url", "index", "total_chunks", "duration", "creation_time"} <= set(chunk)
        fetched = requests.get(client.url(chunk["url"]), timeout=30)  # no credentials
        assert fetched.status_code == 200
        assert fetched.content[4:8] == b"ftyp" and b"moof" in fetched.content  # fragmented
    # It ran in a session of the caller's own, kept open a little for the chunks to be read.
    sessions = client.get("/sessions/").json()["results"]
    [own] = [s for s in sessions if s["user_id"] == "generate/stream"]
    assert own["current_request"]["status"] == "completed"
    assert own["expires_in_seconds"] <= 600


def test_a_caller_that_hangs_up_on_generate_stream_stops_its_utterance(
    live_stack: Stack, media_dir: Path
):
    client = _ready_user(live_stack, media_dir, "seed-hangup-user")
    with (media_dir / "long.wav").open("rb") as handle:
        response = client.session.post(
            client.url("/generate/stream?avatar_id=host&batch_size=2&fps=25&chunk_duration=0.4"),
            files={"audio_file": ("long.wav", handle, "audio/wav")},
            stream=True,
            timeout=(10, WORK_BOUND),
        )
    assert response.status_code == 200, response.text
    first = next(payload for _, payload in sse_payloads(response))
    assert first["event"] == "chunk" and first["total_chunks"] == 20
    response.close()

    def settled() -> dict[str, Any] | None:
        [own] = client.get("/sessions/").json()["results"]
        request = own["current_request"]
        over = request and request["status"] not in ("queued", "streaming")
        return own if over and own["expires_in_seconds"] <= 600 else None

    own = wait_for(settled, timeout=WORK_BOUND)  # and due to expire soon, with its chunks
    assert own["current_request"]["status"] == "interrupted"


def test_a_new_connection_gets_only_new_events_and_a_resumed_one_what_it_missed(
    live_stack: Stack, media_dir: Path
):
    client = _ready_user(live_stack, media_dir, "seed-fresh-user")
    session_id, token = _session(client)
    url = client.url(f"/sessions/{session_id}/events?token={token}")
    first_feed = Feed(url, {})
    first = _stream(client, session_id, media_dir / "speech.wav")
    before = first_feed.wait_for(first, "speaking_ended")

    later = Feed(url, {})  # no Last-Event-ID: a new player, after the utterance finished
    resumed = Feed(url, {"Last-Event-ID": "0"})
    second = _stream(client, session_id, media_dir / "speech.wav")
    got = later.wait_for(second, "speaking_ended")
    replayed = resumed.wait_for(second, "speaking_ended")
    for feed in (first_feed, later, resumed):
        feed.close()
    assert {e.get("request_id") for e in got} == {second}
    assert got[0]["event"] == "speaking_started"
    assert [e["event"] for e in got] == [e["event"] for e in replayed[len(before) :]]
    assert replayed[: len(before)] == before  # resuming still replays all after the id
    for chunk in (e for e in got if e["event"] == "chunk"):
        fetched = requests.get(client.url(chunk["url"]), timeout=30)  # no credentials
        assert fetched.status_code == 200, chunk


def _first_bytes(base_url: str, path: str, headers: str = "") -> tuple[str, str]:
    """The head and the first body bytes of a GET, read off the socket as they arrive
    (de-chunked)."""
    parts = urlsplit(base_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        request = f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{headers}\r\n"
        sock.sendall(request.encode())
        data = b""
        while not _first_frame(data):
            received = sock.recv(4096)
            assert received, data
            data += received
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    return head, _first_frame(data)


def _first_frame(data: bytes) -> str:
    """The body's first frame, once it is all in; "" before."""
    head, _, body = data.partition(b"\r\n\r\n")
    if not _:
        return ""
    if b"transfer-encoding: chunked" in head.lower():
        size, _, rest = body.partition(b"\r\n")
        if not _ or len(rest) < int(size, 16):
            return ""
        body = rest[: int(size, 16)]
    frame, blank, _rest = body.decode().partition("\n\n")
    return frame + blank if blank else ""


def test_sse_headers_and_an_opening_frame_come_before_any_event(live_stack: Stack, media_dir: Path):
    client = _ready_user(live_stack, media_dir, "seed-open-user")
    session_id, token = _session(client)  # nothing happens in it: no event is ever published
    head, frame = _first_bytes(live_stack.base_url, f"/sessions/{session_id}/events?token={token}")
    assert head.startswith("HTTP/1.1 200") and "text/event-stream" in head.lower()
    # Not a keep-alive, which would have come after KEEPALIVE_SECONDS of silence.
    assert frame == OPENING
    auth = f"Authorization: Token {client.token}\r\n"
    head, frame = _first_bytes(live_stack.base_url, "/avatars/host/events", auth)
    assert head.startswith("HTTP/1.1 200") and frame == OPENING
