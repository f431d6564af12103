"""WebRTC sessions on the real stack (daphne, a worker process, Redis) with a real aiortc
viewer: the seed's create / offer / stream / status / delete flow, live frames that change
only the lower face, audio while live and silence after, interrupt, bad signaling, cleanup.
Profile random-tiny: RANDOM weights, the face is noise; timings are the platform's own."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from avatars.models import Avatar
from avatars.services.avatar import avatar_dir
from musetalk_site.stack import Stack
from sessions_app.models import StreamRequest
from sessions_app.webrtc.tracks import decode_pcm
from tests.e2e.client import ApiClient, ready_avatar_user, wait_for
from tests.e2e.webrtc_client import Viewer, loud, luma
from tests.media import make_face_video, make_speech_wav

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FPS = 25


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("webrtc-media")
    make_face_video(folder / "face.mp4", seconds=0.8, fps=FPS, size=(256, 320))
    make_speech_wav(folder / "speech.wav", seconds=2.0, sample_rate=16000)
    make_speech_wav(folder / "long.wav", seconds=8.0, sample_rate=16000)
    (folder / "notes.wav").write_text("not audio at all")
    return folder


def _create(client: ApiClient, **params: object) -> dict:
    query = "&".join(f"{k}={v}" for k, v in {"avatar_id": "host", **params}.items())
    response = client.post(f"/webrtc/sessions/create?{query}")
    assert response.status_code == 200, response.text
    return response.json()


def _token(created: dict) -> str:
    return created["player_url"].split("?token=")[1]


def _status(client: ApiClient, session_id: str) -> dict:
    response = client.get(f"/webrtc/sessions/{session_id}/status")
    assert response.status_code == 200, response.text
    return response.json()


def _stream(client: ApiClient, session_id: str, audio: Path, **query: str):
    suffix = "?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else ""
    with audio.open("rb") as handle:
        return client.post(
            f"/webrtc/sessions/{session_id}/stream{suffix}",
            files={"audio_file": (audio.name, handle, "audio/wav")},
        )


def _mask_region(username: str, height: int, width: int) -> np.ndarray:
    """Pixels any frame's paste-back may touch (the union of the avatar's mask boxes)."""
    avatar = Avatar.objects.get(owner__username=username, avatar_id="host")
    boxes = json.loads((avatar_dir(avatar) / "boxes.json").read_text())["mask_boxes"]
    region = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        region[max(0, y0) : y1, max(0, x0) : x1] = True
    return region


def test_a_viewer_sees_idle_then_live_speech_then_idle_with_audio_in_step(
    live_stack: Stack, media_dir: Path
) -> None:
    username = "webrtc-viewer"
    client = ready_avatar_user(live_stack.base_url, media_dir / "face.mp4", username)
    created = _create(client, user_id="u1", fps=FPS, batch_size=4)
    assert created["player_url"].startswith(f"/webrtc/player/{created['session_id']}?token=")
    assert created["ice_transport_policy"] == "all" and created["ice_servers"] == []
    assert created["config"]["fps"] == FPS and created["config"]["prebuffer_seconds"] == 0.2
    session_id = created["session_id"]

    async def run() -> dict:
        viewer = Viewer(live_stack.base_url, session_id, _token(created))
        await viewer.connect()
        try:
            idle = await viewer.frames_after(0, 50)  # 2 s
            idle_span = idle[-1].at - idle[0].at
            status = await asyncio.to_thread(_status, client, session_id)
            assert status["peer_state"] == "connected" and status["active_stream"] is None
            mark = len(viewer.video)
            sent = time.monotonic()
            response = await asyncio.to_thread(
                _stream, client, session_id, media_dir / "speech.wav"
            )
            posted = time.monotonic()
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["status"] == "streaming" and body["session_id"] == session_id
            assert body["audio_timeline"]["frames"] == 50
            live_status = await asyncio.to_thread(_status, client, session_id)
            assert live_status["active_stream"] == body["request_id"]
            assert live_status["status"] == "streaming"

            def done() -> dict | None:
                s = _status(client, session_id)
                video = s["track_stats"]["video"]
                finished = not s["active_stream"] and not video["live_active"]
                return s if finished and video["generation_complete"] else None

            final = await asyncio.to_thread(wait_for, done, timeout=120)
            after = len(viewer.video)
            tail = await viewer.frames_after(after, 25)  # idle again
            return {
                "idle": idle,
                "idle_span": idle_span,
                "between": viewer.video[mark:after],
                "tail": tail,
                "audio": list(viewer.audio),
                "sent": sent,
                "posted": posted,
                "final": final,
            }
        finally:
            await viewer.close()

    got = asyncio.run(run())
    assert 1.6 < got["idle_span"] < 2.6  # 50 idle frames at 25 fps (arrival jitter aside)
    first = got["idle"][0].frame
    region = _mask_region(username, first.height, first.width)
    idle_lumas = [luma(r.frame) for r in got["idle"]]

    def nearest_idle(picture: np.ndarray) -> np.ndarray:
        return min(idle_lumas, key=lambda i: float(np.abs(i - picture)[~region].mean()))

    live = []
    for received in got["between"]:
        picture = luma(received.frame)
        idle = nearest_idle(picture)
        outside = float(np.abs(picture - idle)[~region].mean())
        inside = float(np.abs(picture - idle)[region].mean())
        assert outside < 4.0, (outside, inside)  # the picture around the face never changes
        if inside > max(3.0, 2.5 * outside):  # the lower face changed (noise: random weights)
            live.append(received)
    assert len(live) >= 40, len(live)  # 50 live frames (the codec may merge a few)
    stats = got["final"]["track_stats"]
    assert stats["video"]["live_released"] == 50
    assert stats["audio"]["live_frames"] >= 90  # 2 s of 20 ms frames went out
    offset = stats["audio"]["offset_seconds"]
    assert offset is not None and -0.12 - 0.04 <= offset <= 0.08 + 0.02
    print(f"audio - video offset at the end: {offset * 1000:.0f} ms")
    loud_times = [r.at for r in got["audio"] if loud(r.frame)]
    assert loud_times, "no speech came through"
    assert live[0].at - 0.5 <= loud_times[0] <= live[-1].at  # the speech plays with the video
    # As the viewer sees it: when the speech starts in what it hears, against when it shows
    # the frame of that moment. A worker slower than real time makes the track hold frames
    # (the audio waits with them), so frames are counted as they change, not by the clock.
    # A held frame still changes a little as the encoder refines it (mean change in the face
    # up to ~1.5 levels seen), a new frame from the model by 3 or more.
    pcm = decode_pcm(media_dir / "speech.wav")
    onset = next(i for i in range(0, len(pcm), 960) if np.abs(pcm[i : i + 960]).max() > 300)
    shown: list[float] = []  # arrival of live frame 0, 1, 2 ... (repeats skipped)
    previous = None
    for received in live:
        picture = luma(received.frame)
        if previous is None or float(np.abs(picture - previous)[region].mean()) > 2.0:
            shown.append(received.at)
        previous = picture
    frame = min(round(onset / 48000 * FPS), len(shown) - 1)
    heard = loud_times[0] - shown[frame]
    print(
        f"audio - video offset at the viewer (speech onset, frame {frame}): {heard * 1000:.0f} ms"
    )
    assert abs(heard) <= 0.25
    assert all(t <= live[-1].at + 0.5 for t in loud_times)  # silence after
    for received in got["tail"]:  # idle again: the face is the prepared one
        picture = luma(received.frame)
        assert float(np.abs(picture - nearest_idle(picture))[region].mean()) < 6.0
    print(f"first live frame {1000 * (live[0].at - got['posted']):.0f} ms after the upload")

    response = client.delete(f"/webrtc/sessions/{session_id}")
    assert response.json() == {"status": "deleted", "session_id": session_id}
    assert client.get(f"/webrtc/sessions/{session_id}/status").status_code == 404
    stats = client.get("/webrtc/sessions/stats").json()
    assert stats["active_sessions"] == 0 and stats["peers"] == 0


def test_an_interrupt_goes_back_to_idle_and_a_second_stream_needs_interrupt(
    live_stack: Stack, media_dir: Path
) -> None:
    client = ready_avatar_user(live_stack.base_url, media_dir / "face.mp4", "webrtc-interrupt")
    created = _create(client, fps=FPS, batch_size=4)
    session_id = created["session_id"]

    async def run() -> None:
        viewer = Viewer(live_stack.base_url, session_id, _token(created))
        await viewer.connect()
        try:
            response = await asyncio.to_thread(_stream, client, session_id, media_dir / "long.wav")
            assert response.status_code == 200, response.text

            def live() -> bool:
                return _status(client, session_id)["track_stats"]["video"]["live_active"]

            await asyncio.to_thread(wait_for, live, timeout=120)
            again = await asyncio.to_thread(_stream, client, session_id, media_dir / "speech.wav")
            assert again.status_code == 409, again.text
            assert "interrupt" in again.json()["message"]
            began = time.monotonic()
            stop = await asyncio.to_thread(client.post, f"/webrtc/sessions/{session_id}/interrupt")
            assert stop.status_code == 200 and stop.json()["interrupted"]
            status = await asyncio.to_thread(_status, client, session_id)
            assert not status["track_stats"]["video"]["live_active"]
            assert time.monotonic() - began < 5
            replaced = await asyncio.to_thread(
                _stream, client, session_id, media_dir / "speech.wav", interrupt="true"
            )
            assert replaced.status_code == 200, replaced.text
        finally:
            await viewer.close()

    asyncio.run(run())
    client.delete(f"/webrtc/sessions/{session_id}")


def test_bad_signaling_and_streams_get_clear_4xx_and_leave_no_peer(
    live_stack: Stack, media_dir: Path
) -> None:
    client = ready_avatar_user(live_stack.base_url, media_dir / "face.mp4", "webrtc-bad")
    other = ready_avatar_user(live_stack.base_url, media_dir / "face.mp4", "webrtc-other")
    created = _create(client, fps=FPS)
    session_id, token = created["session_id"], _token(created)
    base = f"{live_stack.base_url}/webrtc/sessions/{session_id}"

    def post(path: str, body: object, **kwargs) -> requests.Response:
        return requests.post(f"{base}/{path}?token={token}", timeout=30, **kwargs, json=body)

    cases = [
        (post("offer", {"sdp": "hello", "type": "offer"}), 400, "not a session description"),
        (post("offer", {"sdp": "v=0\r\nm=video 9", "type": "answer"}), 400, "expected an SDP"),
        (post("offer", [1, 2]), 400, "JSON object"),
        (requests.post(f"{base}/offer?token={token}", data=b"{", timeout=30), 400, "not JSON"),
        (post("ice", {"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host"}), 409, "offer"),
        (_stream(client, session_id, media_dir / "speech.wav"), 409, "No viewer is connected"),
        (other.post(f"/webrtc/sessions/{session_id}/offer", json={}), 404, "not found"),
        (client.post("/webrtc/sessions/nosuchsession/offer", json={}), 404, "not found"),
        (requests.get(f"{base}/offer?token={token}", timeout=30), 405, "not allowed"),
    ]
    for response, status, message in cases:
        assert response.status_code == status, response.text
        assert message in response.json()["message"], response.json()
        assert set(response.json()) == {"message", "extra"}

    async def run() -> None:
        viewer = Viewer(live_stack.base_url, session_id, token)
        await viewer.connect()
        try:
            second = Viewer(live_stack.base_url, session_id, token)
            second.pc.addTransceiver("video", direction="recvonly")
            await second.pc.setLocalDescription(await second.pc.createOffer())
            offer = {"sdp": second.pc.localDescription.sdp, "type": "offer"}
            refused = await second.post("offer", offer)
            assert refused.status_code == 409, refused.text
            await second.close()
            missing = await viewer.post("ice", {"candidate": "candidate:1 1 udp 1 1.2.3.4 5"})
            assert missing.status_code == 400, missing.text
            fields = await viewer.post(
                "ice", {"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host"}
            )
            assert fields.status_code == 400 and "sdpMid" in fields.json()["message"]
            end = await viewer.post("ice", {"candidate": None})
            assert end.json() == {"status": "ok"}
            not_audio = await asyncio.to_thread(
                _stream, client, session_id, media_dir / "notes.wav"
            )
            assert not_audio.status_code == 400, not_audio.text
            status = await asyncio.to_thread(_status, client, session_id)
            assert status["active_stream"] is None  # nothing was left queued
        finally:
            await viewer.close()

    asyncio.run(run())

    def no_peer() -> bool:  # the viewer hung up: the server closed its side
        return client.get("/webrtc/sessions/stats").json()["peers"] == 0

    wait_for(no_peer, timeout=40)
    assert client.delete(f"/webrtc/sessions/{session_id}").status_code == 200


def test_a_session_ended_elsewhere_closes_its_peer_connection(
    live_stack: Stack, media_dir: Path
) -> None:
    """Ended through the plain sessions API (any process): the peer's process notices and
    closes the connection; the viewer sees it close."""
    client = ready_avatar_user(live_stack.base_url, media_dir / "face.mp4", "webrtc-ended")
    created = _create(client, fps=FPS)
    session_id = created["session_id"]

    async def run() -> None:
        viewer = Viewer(live_stack.base_url, session_id, _token(created))
        await viewer.connect()
        try:
            assert (await asyncio.to_thread(client.get, "/webrtc/sessions/stats")).json()[
                "peers"
            ] == 1
            ended = await asyncio.to_thread(client.delete, f"/sessions/{session_id}")
            assert ended.status_code == 200, ended.text
            deadline = time.monotonic() + 30
            while viewer.pc.connectionState not in ("closed", "failed"):
                assert time.monotonic() < deadline, viewer.pc.connectionState
                await asyncio.sleep(0.2)
        finally:
            await viewer.close()

    asyncio.run(run())
    assert client.get("/webrtc/sessions/stats").json()["peers"] == 0


PLAYER_STATE = (
    "const p = window.musetalkWebrtcPlayer;"
    "return p && Object.assign({}, p.state, {audioMuted: p.audio.muted,"
    " debugText: document.querySelector('.debug').textContent,"
    " status: document.querySelector('.status').textContent});"
)


def test_the_player_page_connects_and_decodes_frames_in_chromium(
    live_stack: Stack, media_dir: Path, browser
) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    client = ready_avatar_user(live_stack.base_url, media_dir / "face.mp4", "webrtc-browser")
    created = _create(client, fps=FPS)
    session_id = created["session_id"]
    browser.get(client.url(created["player_url"] + "&debug=1"))

    def player_when(predicate):
        def check(driver):
            state = driver.execute_script(PLAYER_STATE)
            return state if state and predicate(state) else None

        return check

    state = WebDriverWait(browser, 90).until(
        player_when(lambda s: s["connection"] == "connected" and s["framesDecoded"] > 10)
    )
    assert state["ice"] in ("connected", "completed") and state["audioMuted"]
    assert "frames decoded" in state["debugText"] and state["status"] == "Connected"
    browser.execute_script(
        "window.postMessage({type: 'webrtc-audio', muted: false}, window.location.origin)"
    )
    WebDriverWait(browser, 10).until(player_when(lambda s: not s["audioMuted"]))
    before = state["audioBytes"]
    response = _stream(client, session_id, media_dir / "speech.wav")
    assert response.status_code == 200, response.text
    WebDriverWait(browser, 120).until(
        player_when(lambda s: s["audioBytes"] > before + 2000 and s["framesDecoded"] > 60)
    )
    assert client.delete(f"/webrtc/sessions/{session_id}").status_code == 200


def test_the_player_page_opens_with_its_token_only_for_webrtc_sessions(
    live_stack: Stack, media_dir: Path
) -> None:
    client = ready_avatar_user(live_stack.base_url, media_dir / "face.mp4", "webrtc-page")
    created = _create(client, fps=FPS)
    page = requests.get(client.url(created["player_url"]), timeout=30)
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    token = _token(created)
    assert f"/webrtc/sessions/{created['session_id']}/offer?token={token}" in page.text
    bad = requests.get(client.url(f"/webrtc/player/{created['session_id']}?token=x"), timeout=30)
    assert bad.status_code == 401 and "not valid" in bad.text
    sse = client.post("/sessions/create?avatar_id=host").json()
    sse_token = sse["player_url"].split("?token=")[1]
    other_kind = requests.get(
        client.url(f"/webrtc/player/{sse['session_id']}?token={sse_token}"), timeout=30
    )
    assert other_kind.status_code == 404
    offer = requests.post(
        client.url(f"/webrtc/sessions/{sse['session_id']}/offer?token={sse_token}"),
        json={"sdp": "v=0", "type": "offer"},
        timeout=30,
    )
    assert offer.status_code == 404 and "not a WebRTC session" in offer.json()["message"]
    for session_id in (created["session_id"], sse["session_id"]):
        assert client.delete(f"/sessions/{session_id}").status_code == 200


def test_a_client_following_the_seed_load_testers_protocol_completes(
    live_stack: Stack, media_dir: Path
) -> None:
    """As the seed's load tester drives a session: create with query parameters (no body),
    an offer after its own ICE gathering, the upload, then status every 0.5 s: "live" once
    ``active_stream`` is set and any of the live flags holds; "done" once ``active_stream``
    is empty, ``live_active`` false, and the sync clock inactive or generation complete."""
    client = ready_avatar_user(live_stack.base_url, media_dir / "face.mp4", "webrtc-loadtest")
    created = client.post(
        "/webrtc/sessions/create?avatar_id=host&user_id=load-1&fps=25&playback_fps=30"
        "&batch_size=4&chunk_duration=1"
    ).json()
    assert created["config"] == {
        "fps": 25,
        "playback_fps": 30,
        "batch_size": 4,
        "chunk_duration": 1.0,
        "prebuffer_seconds": 0.2,
    }
    session_id = created["session_id"]

    async def run() -> dict:
        viewer = Viewer(live_stack.base_url, session_id, _token(created))
        await viewer.connect()
        try:
            response = await asyncio.to_thread(
                _stream, client, session_id, media_dir / "speech.wav"
            )
            assert response.status_code == 200, response.text
            started = time.monotonic()
            live_at = done_at = None
            polls = 0
            while done_at is None:
                assert time.monotonic() - started < 120, "the utterance never finished"
                status = await asyncio.to_thread(_status, client, session_id)
                polls += 1
                stats = status["track_stats"] or {}
                video, clock = stats.get("video", {}), stats.get("sync_clock", {})
                flags = (
                    video.get("live_released"),
                    video.get("prebuffer_ready"),
                    video.get("live_active"),
                    clock.get("playout_released"),
                )
                if live_at is None and status["active_stream"] and any(flags):
                    live_at = time.monotonic()
                finished = not status["active_stream"] and not video.get("live_active")
                if (
                    live_at
                    and finished
                    and (not clock.get("active") or video.get("generation_complete"))
                ):
                    done_at = time.monotonic()
                await asyncio.sleep(0.5)
            frames = len(viewer.video)
            return {
                "live": live_at - started,
                "done": done_at - started,
                "polls": polls,
                "frames": frames,
            }
        finally:
            await viewer.close()

    got = asyncio.run(run())
    assert got["live"] < got["done"] and got["polls"] >= 3
    print(f"load-tester protocol: live after {got['live']:.2f} s, done after {got['done']:.2f} s")
    [spoken] = StreamRequest.objects.filter(session__session_id=session_id)
    assert spoken.generated_seconds == pytest.approx(2.0, abs=0.05)  # frames / fps, for usage
    assert client.delete(f"/webrtc/sessions/{session_id}").json()["status"] == "deleted"


def test_signaling_and_events_over_the_websocket(live_stack: Stack, media_dir: Path) -> None:
    """``ws/webrtc/{id}/``: offer -> answer and trickled candidates as messages, mistakes as
    error messages (the socket stays open), and the session's events on the same socket."""
    import websocket
    from aiortc import RTCPeerConnection, RTCSessionDescription

    client = ready_avatar_user(live_stack.base_url, media_dir / "face.mp4", "webrtc-ws")
    created = _create(client, fps=FPS)
    session_id, token = created["session_id"], _token(created)
    ws_url = live_stack.base_url.replace("http://", "ws://") + f"/ws/webrtc/{session_id}/"
    ws = websocket.create_connection(
        f"{ws_url}?token={token}", timeout=60, origin=live_stack.base_url
    )

    def exchange(message: dict, want: str) -> dict:
        ws.send(json.dumps(message))
        while True:
            reply = json.loads(ws.recv())
            if reply.get("type") in (want, "error"):
                return reply

    try:
        assert exchange({"type": "hello"}, "error")["message"].startswith("Unknown message")
        bad = exchange({"type": "offer", "sdp": "nonsense"}, "answer")
        assert bad["type"] == "error" and "not a session description" in bad["message"]
        early = exchange({"type": "ice", "candidate": None}, "ice")
        assert early["type"] == "error" and "offer" in early["message"]

        async def run() -> list[dict]:
            pc = RTCPeerConnection()
            pc.addTransceiver("video", direction="recvonly")
            pc.addTransceiver("audio", direction="recvonly")
            frames: list = []

            @pc.on("track")
            def on_track(track) -> None:
                async def pull() -> None:
                    while True:
                        try:
                            frames.append(await track.recv())
                        except Exception:
                            return

                if track.kind == "video":
                    asyncio.ensure_future(pull())

            try:
                await pc.setLocalDescription(await pc.createOffer())
                offer = {"type": "offer", "sdp": pc.localDescription.sdp}
                answer = await asyncio.to_thread(exchange, offer, "answer")
                assert answer["type"] == "answer", answer
                await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
                end = await asyncio.to_thread(exchange, {"type": "ice", "candidate": None}, "ice")
                assert end == {"type": "ice", "status": "ok"}
                deadline = time.monotonic() + 30
                while len(frames) < 10:
                    assert time.monotonic() < deadline, pc.connectionState
                    await asyncio.sleep(0.05)
                streamed = await asyncio.to_thread(
                    _stream, client, session_id, media_dir / "speech.wav"
                )
                assert streamed.status_code == 200, streamed.text
                events: list[dict] = []
                while not any(e.get("event") == "speaking_ended" for e in events):
                    events.append(json.loads(await asyncio.to_thread(ws.recv)))
                return events
            finally:
                await pc.close()

        events = asyncio.run(run())
        names = [e["event"] for e in events if "event" in e]
        assert names[0] == "speaking_started" and "complete" in names, names
        assert all(isinstance(e["id"], int) for e in events if "event" in e)
    finally:
        ws.close()
    assert client.delete(f"/webrtc/sessions/{session_id}").status_code == 200
