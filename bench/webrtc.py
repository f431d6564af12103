"""WebRTC delivery: the frame transport's cost, and sessions end to end on the real stack.

Not a test. Run from the repository root::

    .venv/bin/python -m bench.webrtc --streams 1,4,8,16 --seconds 4      # transport only
    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.webrtc --mode sessions --peers 1,2,4
    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.webrtc --mode sessions --profile random-full

``sessions``: the platform on free ports (embedded Redis, worker, daphne; ``bench/soak.py``'s
setup), one avatar prepared through the API, and aiortc viewers negotiating through
``/webrtc/sessions/{id}/offer``. Latency: ``--utterances`` utterances of ``--speech`` seconds,
one after another, each timed from the moment its upload's answer came back to the first live
frame the viewer received (a frame is live when more than 0.5% of its pixels differ by over 40
levels from every idle frame seen before: the generated face); the intervals between frames
received while live. Peers: K viewers at once, idle for 2 s then all speaking; per viewer the
frames/s received idle and live and the worst interval; a process sustains K peers when every
viewer receives at least 90% of the session fps while live. The viewers decode in this process,
on the same machine; ``--web-cpus 0`` pins the web process to CPU 0 alone and everything
else (worker, Redis, the viewers) to the other CPUs, so the viewers' decoding does not take the
web process's CPU: what one web process holds with a core of its own and its viewers elsewhere.
``--viewers count`` makes the peers rounds' viewers count the encoded video frames they receive
instead of decoding them (a player decodes on its own device). Results:
``bench/results/webrtc-sessions-<profile>[-<size>][-web-pinned][-counting-viewers].json``/``.md``.

``transport``: K streams at once, each a thread that makes frames at ``--fps`` in real time
(576x768 BGR from ``sun.mp4``, or synthesized) and publishes them the way the worker does
(``Frame.i420()`` then ``FramePublisher.frame``: one ``XADD`` of 648 KiB); one asyncio loop
reads all K streams like the peer's process (``read_frames``: ``XREAD`` + trim) and turns each
into the ``av.VideoFrame`` the video track sends. Reported per K: CPU ms per frame on each side
(thread CPU time), the delay from publish to the reader having the frame (median, p95, max),
and whether the reader kept up (its delay did not grow). Results:
``bench/results/webrtc-transport-cpu.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import math
import os
import platform
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import av
import numpy as np
import redis
import redis.asyncio
import requests

from bench.engine import write_results
from bench.soak import AVATAR_ID
from inference.sinks import Frame
from musetalk_site.stack import Stack, StackConfig, free_port
from sessions_app.webrtc.transport import FramePublisher, StreamEnd, read_frames
from tests.media import SHARED_MEDIA, make_face_video, make_speech_wav

RESULTS = Path(__file__).resolve().parent / "results"

DEFAULT_VIDEO = SHARED_MEDIA / "sun.mp4"


def _frames(video: Path, count: int) -> list[np.ndarray]:
    if video.is_file():
        from inference.media import read_video

        frames = read_video(video, max_frames=count).frames
        return [np.ascontiguousarray(f) for f in frames]
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (768, 576, 3), dtype=np.uint8)
    return [np.roll(base, 4 * i, axis=1) for i in range(count)]


def _publish(
    url: str,
    request_id: str,
    images: list[np.ndarray],
    count: int,
    fps: int,
    sent: dict[int, float],
    cpu: list[float],
) -> None:
    publisher = FramePublisher(redis.Redis.from_url(url), request_id)
    began = time.monotonic()
    cpu_start = time.thread_time()
    for i in range(count):
        delay = began + i / fps - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        image = images[i % len(images)]
        planes = Frame(i, image, fps, 0, 0).i420()
        sent[i] = time.monotonic()
        publisher.frame(
            index=i, cycle=i, i420=planes.tobytes(), width=planes.shape[1], height=image.shape[0]
        )
    publisher.end()
    cpu.append(time.thread_time() - cpu_start)


async def _read_all(url: str, ids: list[str], got: dict[str, dict[int, float]]) -> float:
    client = redis.asyncio.Redis.from_url(url)
    cpu_start = time.thread_time()

    async def one(request_id: str) -> None:
        async for item in read_frames(client, request_id, block_ms=500):
            if isinstance(item, StreamEnd):
                return
            item.to_video_frame()
            got[request_id][item.index] = time.monotonic()

    try:
        await asyncio.gather(*(one(request_id) for request_id in ids))
    finally:
        await client.aclose()
    return time.thread_time() - cpu_start


def run_transport(url: str, streams: int, seconds: float, fps: int, images: list[np.ndarray]):
    count = round(seconds * fps)
    ids = [uuid.uuid4().hex for _ in range(streams)]
    sent: dict[str, dict[int, float]] = {request_id: {} for request_id in ids}
    got: dict[str, dict[int, float]] = {request_id: {} for request_id in ids}
    publish_cpu: list[float] = []
    reader_cpu: list[float] = []

    def reader() -> None:
        reader_cpu.append(asyncio.run(_read_all(url, ids, got)))

    reading = threading.Thread(target=reader)
    reading.start()
    threads = [
        threading.Thread(
            target=_publish, args=(url, rid, images, count, fps, sent[rid], publish_cpu)
        )
        for rid in ids
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reading.join(timeout=60)
    delays = [
        1000 * (got[rid][i] - sent[rid][i]) for rid in ids for i in sent[rid] if i in got[rid]
    ]
    received = sum(len(g) for g in got.values())
    delays.sort()
    first_half = [1000 * (got[r][i] - sent[r][i]) for r in ids for i in range(count // 2)]
    second_half = [1000 * (got[r][i] - sent[r][i]) for r in ids for i in range(count // 2, count)]
    return {
        "streams": streams,
        "frames": streams * count,
        "received": received,
        "publish_cpu_ms_per_frame": 1000 * sum(publish_cpu) / (streams * count),
        "reader_cpu_ms_per_frame": 1000 * reader_cpu[0] / max(1, received),
        "delay_ms_median": statistics.median(delays),
        "delay_ms_p95": delays[int(0.95 * (len(delays) - 1))],
        "delay_ms_max": delays[-1],
        "kept_up": statistics.median(second_half) <= statistics.median(first_half) + 1000 / fps,
    }


def markdown(summary: dict[str, Any]) -> str:
    env = summary["environment"]
    lines = [
        "# WebRTC frame transport: worker -> Redis Stream -> the peer's process",
        "",
        f"Host {env['host']} ({env['cpu_count']} CPUs), Redis {env['redis']}; frames "
        f"{summary['width']}x{summary['height']} I420 ({summary['frame_kib']:.0f} KiB) at "
        f"{summary['fps']} fps for {summary['seconds']} s per stream, published in real time.",
        "",
        "| streams | frames received | publish CPU ms/frame | reader CPU ms/frame | "
        "delay ms median / p95 / max | reader kept up |",
        "|---|---|---|---|---|---|",
    ]
    for r in summary["rounds"]:
        lines.append(
            f"| {r['streams']} | {r['received']}/{r['frames']} | "
            f"{r['publish_cpu_ms_per_frame']:.2f} | {r['reader_cpu_ms_per_frame']:.2f} | "
            f"{r['delay_ms_median']:.1f} / {r['delay_ms_p95']:.1f} / {r['delay_ms_max']:.1f} | "
            f"{'yes' if r['kept_up'] else '**no**'} |"
        )
    lines += [
        "",
        "Publish: BGR -> I420 (OpenCV) + one XADD. Reader: XREAD + XTRIM + the av.VideoFrame "
        "the track sends, all K streams on one asyncio loop (the peer's process). Delay: from "
        "the frame's publish to the reader holding its VideoFrame.",
    ]
    return "\n".join(lines) + "\n"


# -- sessions end to end ------------------------------------------------------------------------


def _is_live(picture: np.ndarray, idle: list[np.ndarray]) -> bool:
    share = min(float((np.abs(picture - known) > 40).mean()) for known in idle)
    return share > 0.005


def _luma(frame: Any) -> np.ndarray:
    return frame.to_ndarray(format="yuv420p")[: frame.height].astype(np.int16)


class _CountingDecoder:
    """A video "decoder" that only counts: each complete encoded frame the receiver's jitter
    buffer hands over becomes a 16x16 grey frame, so a viewer costs its RTP, SRTP and jitter
    buffer work but not the H.264 decoding a player does on its own machine."""

    def decode(self, encoded_frame: Any) -> list[Any]:
        frame = av.VideoFrame(16, 16, "yuv420p")
        frame.pts, frame.time_base = encoded_frame.timestamp, fractions.Fraction(1, 90000)
        return [frame]


@contextlib.contextmanager
def _viewers_count_only(enabled: bool) -> Iterator[None]:
    """While it holds, the viewers this process connects count video frames without decoding
    them (audio is still decoded: Opus costs little)."""
    import aiortc.rtcrtpreceiver

    real = aiortc.rtcrtpreceiver.get_decoder

    def get_decoder(codec: Any) -> Any:
        return _CountingDecoder() if codec.mimeType.startswith("video/") else real(codec)

    if enabled:
        aiortc.rtcrtpreceiver.get_decoder = get_decoder  # type: ignore[assignment]
    try:
        yield
    finally:
        aiortc.rtcrtpreceiver.get_decoder = real  # type: ignore[assignment]


async def _viewer(base: str, created: dict[str, Any]) -> Any:
    from tests.e2e.webrtc_client import Viewer

    viewer = Viewer(base, created["session_id"], created["player_url"].split("?token=")[1])
    try:
        await viewer.connect()
    except BaseException:
        await viewer.close()
        raise
    return viewer


def _upload(base: str, token: str, session_id: str, audio: Path) -> float:
    with audio.open("rb") as handle:
        response = requests.post(
            f"{base}/webrtc/sessions/{session_id}/stream",
            headers={"Authorization": f"Token {token}"},
            files={"audio_file": (audio.name, handle, "audio/wav")},
            timeout=120,
        )
    response.raise_for_status()
    return time.monotonic()


def _stages(base: str, token: str, session_id: str) -> dict[str, Any] | None:
    """The latest utterance's server timestamps (``/sessions/{id}/status``) as Unix seconds:
    queued (the upload stored), started (a worker took it), first frame (made and published);
    and, once it ended, the engine's timings (``engine_timings``, ms). Waits up to 10 s for
    the end."""
    keys = {"queued": "queued_at", "started": "started_at", "first_frame": "first_chunk_at"}
    request: dict[str, Any] | None = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        response = requests.get(
            f"{base}/sessions/{session_id}/status",
            headers={"Authorization": f"Token {token}"},
            timeout=30,
        )
        request = response.json().get("current_request") if response.ok else None
        if request and request.get("engine_timings"):
            break
        time.sleep(0.1)
    if not request or not all(request.get(key) for key in keys.values()):
        return None
    stages: dict[str, Any] = {
        name: datetime.fromisoformat(request[key].replace("Z", "+00:00")).timestamp()
        for name, key in keys.items()
    }
    stages["engine"] = request.get("engine_timings") or {}
    return stages


def _breakdown(stages: dict[str, Any] | None, posted_wall: float, seen_wall: float) -> dict:
    """Milliseconds spent in each step from the upload's answer to the viewer's first live
    frame: worker pickup, the engine's first frame, then its way to the viewer (Redis, the
    prebuffer, the track's pacing, RTP and decoding). Server and viewer share this clock.

    ``model_ms``: the models' own work on the first frame's path (the utterance's audio
    features, then the batch that made frame 0 and the rest of the player's prebuffer);
    ``platform_ms``: everything else, the platform's own overhead."""
    if stages is None:
        return {}
    steps = {
        "pickup_ms": 1000 * (stages["started"] - max(stages["queued"], posted_wall)),
        "engine_first_frame_ms": 1000 * (stages["first_frame"] - stages["started"]),
        "to_viewer_ms": 1000 * (seen_wall - stages["first_frame"]),
        "answer_after_queued_ms": 1000 * (posted_wall - stages["queued"]),
    }
    engine = stages.get("engine") or {}
    if "audio_features_ms" in engine and "first_batch_ms" in engine:
        steps["audio_features_ms"] = engine["audio_features_ms"]
        steps["first_batch_ms"] = engine["first_batch_ms"]
        steps["first_batch_frames"] = engine.get("first_batch_frames", 0)
        steps["model_ms"] = engine["audio_features_ms"] + engine["first_batch_ms"]
        steps["platform_ms"] = 1000 * (seen_wall - posted_wall) - steps["model_ms"]
    return steps


BREAKDOWN_STEPS = (
    "pickup_ms",
    "engine_first_frame_ms",
    "to_viewer_ms",
    "audio_features_ms",
    "first_batch_ms",
    "first_batch_frames",
    "model_ms",
    "platform_ms",
)


def _create(base: str, token: str, fps: int) -> dict[str, Any]:
    response = requests.post(
        f"{base}/webrtc/sessions/create?avatar_id={AVATAR_ID}&fps={fps}&batch_size=4",
        headers={"Authorization": f"Token {token}"},
        timeout=60,
    )
    response.raise_for_status()
    return dict(response.json())


def _quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p95": None, "max": None}
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "p95": ordered[math.ceil(0.95 * len(ordered)) - 1],  # nearest rank
        "max": ordered[-1],
    }


async def _latency(base: str, token: str, args: argparse.Namespace, speech: Path) -> dict:
    created = await asyncio.to_thread(_create, base, token, args.fps)
    viewer = await _viewer(base, created)
    runs = []
    try:
        idle_frames = await viewer.frames_after(0, 3 * args.fps)
        idle = [_luma(r.frame) for r in idle_frames]
        for _ in range(args.utterances):
            mark = len(viewer.video)
            posted = await asyncio.to_thread(_upload, base, token, created["session_id"], speech)
            posted_wall = time.time() - (time.monotonic() - posted)
            deadline = time.monotonic() + args.speech * 4 + args.utterance_timeout
            live: list[Any] = []
            seen = mark
            quiet = 0
            while time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                for received in viewer.video[seen:]:
                    if _is_live(_luma(received.frame), idle):
                        live.append(received)
                        quiet = 0
                    elif live:
                        quiet += 1
                seen = len(viewer.video)
                if live and quiet > args.fps:  # a second of idle after live frames: over
                    break
            if not live:
                runs.append({"first_live_ms": None, "live_frames": 0, "intervals_ms": []})
                continue
            span = [r for r in viewer.video[mark:seen] if live[0].at <= r.at <= live[-1].at]
            gaps = [1000 * (b.at - a.at) for a, b in zip(span, span[1:], strict=False)]
            stages = await asyncio.to_thread(_stages, base, token, created["session_id"])
            seen_wall = posted_wall + (live[0].at - posted)
            runs.append(
                {
                    "first_live_ms": 1000 * (live[0].at - posted),
                    "live_frames": len(live),
                    "intervals_ms": gaps,
                    "breakdown": _breakdown(stages, posted_wall, seen_wall),
                }
            )
    finally:
        await viewer.close()
        await asyncio.to_thread(
            requests.delete,
            f"{base}/webrtc/sessions/{created['session_id']}",
            headers={"Authorization": f"Token {token}"},
            timeout=30,
        )
    firsts = [r["first_live_ms"] for r in runs if r["first_live_ms"] is not None]
    intervals = [gap for r in runs for gap in r["intervals_ms"]]
    return {
        "utterances": len(runs),
        "with_live_frames": len(firsts),
        "first_live_ms": _quantiles(firsts),
        "first_live_ms_all": firsts,
        "live_interval_ms": _quantiles(intervals),
        "live_frames": [r["live_frames"] for r in runs],
        "breakdown_ms": {
            step: statistics.median(values)
            for step in BREAKDOWN_STEPS
            if (values := [r["breakdown"][step] for r in runs if step in r.get("breakdown", {})])
        },
        "platform_ms": _quantiles(
            [r["breakdown"]["platform_ms"] for r in runs if "platform_ms" in r.get("breakdown", {})]
        ),
    }


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process under it (Linux ``/proc``)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += parents.get(current, [])
    return found


def _pin(pid: int, cpus: set[int], *, children: bool = True) -> None:
    """Every thread of ``pid`` (and of the processes under it) onto ``cpus``; threads and
    processes they start later inherit it."""
    for process in _descendants(pid) if children else [pid]:
        for task in Path(f"/proc/{process}/task").glob("*"):
            try:
                os.sched_setaffinity(int(task.name), cpus)
            except (ProcessLookupError, FileNotFoundError):
                pass


def _split_cpus(stack: Stack, web_cpus: str) -> dict[str, list[int]]:
    """The web process on ``web_cpus`` alone; the worker, Redis and this process (the viewers)
    on the other CPUs: viewers on other cores stand in for viewers on other machines."""
    web = {int(n) for n in web_cpus.split(",")}
    rest = set(os.sched_getaffinity(0)) - web
    if not web or not rest:
        raise SystemExit(f"--web-cpus {web_cpus}: needs some CPUs and leaves none for the rest")
    _pin(os.getpid(), rest, children=False)  # the stack's processes are this one's children
    for child in stack.children:
        _pin(child.process.pid, web if child.name == "web" else rest)
    return {"web": sorted(web), "rest": sorted(rest)}


def _cpu_ticks() -> dict[str, tuple[int, int]]:
    """Per CPU, (busy, total) clock ticks since boot (``/proc/stat``)."""
    ticks = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            counts = [int(v) for v in values]
            idle = counts[3] + counts[4]  # idle + iowait
            ticks[name] = (sum(counts[:8]) - idle, sum(counts[:8]))
    return ticks


def _busy_share(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict:
    return {
        name: round((after[name][0] - busy) / max(after[name][1] - total, 1), 2)
        for name, (busy, total) in before.items()
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _peers(
    base: str, token: str, k: int, args: argparse.Namespace, speech: Path, web_pid: int
) -> dict:
    """K viewers idle, then all speaking: what they receive, and what the web process (which
    holds the peer connections and encodes their video) spends on them."""
    created = [await asyncio.to_thread(_create, base, token, args.fps) for _ in range(k)]
    viewers: list[Any] = []
    try:
        for c in created:
            try:
                viewers.append(await _viewer(base, c))
            except AssertionError as exc:  # ICE did not connect in time: past what it holds
                return {
                    "peers": k,
                    "connected": len(viewers),
                    "error": str(exc),
                    "sustained": False,
                }
        await asyncio.sleep(1.0)
        marks = [len(v.video) for v in viewers]
        cpu_before, busy_before = _cpu_seconds(web_pid), _cpu_ticks()
        await asyncio.sleep(2.0)
        idle_cpu = (_cpu_seconds(web_pid) - cpu_before) / 2.0
        idle_busy = _busy_share(busy_before, _cpu_ticks())
        idle_fps = [(len(v.video) - m) / 2.0 for v, m in zip(viewers, marks, strict=True)]
        marks = [len(v.video) for v in viewers]
        cpu_before, busy_before = _cpu_seconds(web_pid), _cpu_ticks()
        began = time.monotonic()
        probe = asyncio.ensure_future(_responsiveness(base, args.speech + 1.0))
        await asyncio.gather(
            *(asyncio.to_thread(_upload, base, token, c["session_id"], speech) for c in created)
        )
        await asyncio.sleep(args.speech + 1.0)
        spent = time.monotonic() - began
        live_cpu = (_cpu_seconds(web_pid) - cpu_before) / spent
        live_busy = _busy_share(busy_before, _cpu_ticks())
        health_ms = await probe
        live_fps = [(len(v.video) - m) / spent for v, m in zip(viewers, marks, strict=True)]
        worst_gap = max(
            (
                1000 * (b.at - a.at)
                for v, m in zip(viewers, marks, strict=True)
                for a, b in zip(v.video[m:], v.video[m + 1 :], strict=False)
            ),
            default=0.0,
        )
    finally:
        for viewer in viewers:
            await viewer.close()
        for c in created:
            await asyncio.to_thread(
                requests.delete,
                f"{base}/webrtc/sessions/{c['session_id']}",
                headers={"Authorization": f"Token {token}"},
                timeout=30,
            )
    return {
        "peers": k,
        "idle_fps_min": min(idle_fps),
        "live_fps_min": min(live_fps),
        "live_fps_mean": statistics.mean(live_fps),
        "worst_interval_ms": worst_gap,
        "health_ms": _quantiles(health_ms),
        "sustained": min(live_fps) >= 0.9 * args.fps,
        # the web process's CPU, in cores: idle peers, then live ones (and the uploads)
        "web_cpu_idle": idle_cpu,
        "web_cpu_live": live_cpu,
        "web_cpu_per_live_peer": live_cpu / k,
        # CPU ms per frame the viewers received: what a frame sent to a peer costs the web
        # process, idle (the loop) and live (frames from the worker over Redis, the uploads)
        "web_ms_per_frame_idle": 1000 * idle_cpu / max(sum(idle_fps), 1e-9),
        "web_ms_per_frame_live": 1000 * live_cpu / max(sum(live_fps), 1e-9),
        # how busy each CPU of the machine was (0-1): which side ran out
        "cpu_busy_idle": idle_busy,
        "cpu_busy_live": live_busy,
    }


async def _responsiveness(base: str, seconds: float) -> list[float]:
    """``GET /health`` every 0.2 s while the peers speak: how long the web process takes."""
    took: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        await asyncio.to_thread(requests.get, f"{base}/health", timeout=30)
        took.append(1000 * (time.monotonic() - started))
        await asyncio.sleep(0.2)
    return took


def run_sessions(args: argparse.Namespace) -> dict[str, Any]:
    from bench.soak import Tally, api_token, prepare_avatar, stack_env

    with tempfile.TemporaryDirectory(prefix="bench-webrtc-") as tmp:
        work = Path(tmp)
        env_args = argparse.Namespace(profile=args.profile, device=args.device)
        env = stack_env(env_args, work)
        width, height = (int(n) for n in args.size.split("x"))
        video = make_face_video(work / "face.mp4", seconds=1.0, fps=25, size=(width, height))
        speech = make_speech_wav(work / "speech.wav", seconds=args.speech)
        token = api_token(env)
        config = StackConfig(port=free_port(), var_dir=work / "var", env=env, log_dir=work / "logs")
        with Stack(config) as stack:
            stack.start(health_timeout=600)
            pinned = _split_cpus(stack, args.web_cpus) if args.web_cpus else None
            base = stack.base_url
            prepare_s = prepare_avatar(base, token, video, Tally())
            latency = asyncio.run(_latency(base, token, args, speech))
            print("latency", {k: v for k, v in latency.items() if k != "first_live_ms_all"})
            peers = []
            for k in (int(n) for n in args.peers.split(",") if n.strip() not in ("", "0")):
                web_pid = stack.child("web").process.pid
                with _viewers_count_only(args.viewers == "count"):
                    result = asyncio.run(_peers(base, token, k, args, speech, web_pid))
                print(result, flush=True)
                peers.append(result)
    return {
        "environment": {
            "device": args.device,
            "profile": args.profile,
            "host": platform.node(),
            "cpu_count": os.cpu_count(),
        },
        "fps": args.fps,
        "speech_seconds": args.speech,
        "avatar": f"{args.size} synthesized face, prepared through the API",
        "pinned": pinned,
        "viewers": args.viewers,
        "prepare_s": round(prepare_s, 1),
        "latency": latency,
        "peers": peers,
    }


def _what_ran_out(summary: dict[str, Any]) -> str:
    """Which side's CPUs were full in the live phase of the rounds not sustained."""
    web = {f"cpu{n}" for n in summary["pinned"]["web"]}
    sides = []
    for r in summary["peers"]:
        busy = r.get("cpu_busy_live")
        if r.get("sustained") or not busy:
            continue
        web_full = max(v for k, v in busy.items() if k in web) >= 0.9
        rest_full = max(v for k, v in busy.items() if k not in web) >= 0.9
        side = "both" if web_full and rest_full else "web" if web_full else "rest"
        sides.append(f"{r['peers']} peers: {side if web_full or rest_full else 'neither'}")
    if not sides:
        return ""
    return (
        "Rounds not sustained, and whose CPUs were full (>= 90% busy) while live: "
        + "; ".join(sides)
        + " (web: the web process's own; rest: the worker's, Redis's and the viewers')."
    )


def _marginal_text(summary: dict[str, Any]) -> str:
    """The largest round sustained, and what each live peer added to the web process's CPU
    from the smallest round to it (the fixed cost of the process left out)."""
    rounds = [
        r for r in summary["peers"] if r.get("sustained") and r.get("web_cpu_live") is not None
    ]
    if len(rounds) < 2:
        return ""
    low, high = rounds[0], max(rounds, key=lambda r: r["peers"])
    if high["peers"] == low["peers"]:
        return ""
    added = (high["web_cpu_live"] - low["web_cpu_live"]) / (high["peers"] - low["peers"])
    text = (
        f"The largest round sustained: **{high['peers']} live peers**, the web process at "
        f"{high['web_cpu_live']:.2f} cores; from {low['peers']} to {high['peers']} peers each "
        f"added **{added:.3f} cores**"
    )
    if added > 0:
        room = low["peers"] + max(0.0, 1.0 - low["web_cpu_live"]) / added
        text += f", so one core holds about **{int(room)} live peers** of this size"
    return text + "."


def _busy_text(result: dict[str, Any], key: str) -> str:
    busy = result.get(key)
    return " ".join(f"{share:.0%}" for share in busy.values()) if busy else "n/a"


def sessions_markdown(summary: dict[str, Any]) -> str:
    env, latency = summary["environment"], summary["latency"]

    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.0f}"

    first, gaps = latency["first_live_ms"], latency["live_interval_ms"]
    pinned = summary.get("pinned")
    where = "web, worker, Redis and the aiortc viewers all on it, sharing its CPUs"
    if pinned:
        where = (
            f"the web process pinned to CPU {pinned['web']} alone; the worker, Redis and the "
            f"aiortc viewers on CPU {pinned['rest']} (the viewers on other cores stand in for "
            "viewers on other machines)"
        )
    if summary.get("viewers") == "count":
        where += (
            "; in the peers rounds the viewers count the video frames they receive without "
            "decoding them (each player decodes on its own device)"
        )
    lines = [
        f"# WebRTC sessions end to end: {env['profile']} on {env['device']}",
        "",
        f"**RANDOM WEIGHTS** ({env['profile']}): the face is noise, the costs are the "
        f"platform's. Host {env['host']} ({env['cpu_count']} CPUs): {where}. "
        f"{summary['avatar']}; {summary['speech_seconds']} s utterances at {summary['fps']} fps.",
        "",
        f"- first live frame after the upload's answer: median **{ms(first['median'])} ms**, "
        f"p95 {ms(first['p95'])}, max {ms(first['max'])} ({latency['with_live_frames']} of "
        f"{latency['utterances']} utterances)",
        f"- intervals between frames received while live: median {ms(gaps['median'])} ms, "
        f"p95 {ms(gaps['p95'])}, max {ms(gaps['max'])} (ideal {1000 / summary['fps']:.0f})",
    ]
    steps = latency.get("breakdown_ms") or {}
    if steps:
        lines.append(
            "- where the first live frame's time goes (medians): a worker takes the utterance "
            f"{ms(steps.get('pickup_ms'))} ms after the answer, the engine makes its first "
            f"frame {ms(steps.get('engine_first_frame_ms'))} ms later (audio features, the "
            f"first batch, paste-back), and {ms(steps.get('to_viewer_ms'))} ms after that the "
            "viewer has it (Redis, the prebuffer, the track's pacing, RTP, decoding)"
        )
    platform = latency.get("platform_ms") or {}
    if platform.get("median") is not None:
        frames = steps.get("first_batch_frames", 0)
        lines.append(
            "- the models' own share of that wait (medians, measured by the engine for each "
            f"utterance): audio features {ms(steps.get('audio_features_ms'))} ms (whisper over "
            f"the 30-s window) + the batch that made the first {frames:.0f} frames (the "
            f"player's prebuffer) {ms(steps.get('first_batch_ms'))} ms = "
            f"{ms(steps.get('model_ms'))} ms"
        )
        lines.append(
            "- **the platform's own overhead** (first live frame minus the models' share): "
            f"median **{ms(platform['median'])} ms**, p95 {ms(platform['p95'])}, max "
            f"{ms(platform['max'])} (target 150 ms)"
        )
    if summary["peers"]:
        lines += [
            "",
            "| peers | idle fps (min) | live fps (min / mean) | worst interval ms | "
            "GET /health ms median / p95 while live | web process CPU idle / live (cores) | "
            "web CPU ms per frame sent idle / live | machine's CPUs busy idle / live | "
            "sustained |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
    costs: list[float] = []
    frame_costs: list[tuple[int, float]] = []  # (peers, web CPU ms per frame live)
    for r in summary["peers"]:
        if "error" in r:
            lines.append(
                f"| {r['peers']} | only {r['connected']} of {r['peers']} viewers connected "
                f"within 30 s ({r['error']}) | | | | | | | **no** |"
            )
            continue
        health = r["health_ms"]
        cpu = f"{r['web_cpu_idle']:.2f} / {r['web_cpu_live']:.2f}" if "web_cpu_live" in r else "n/a"
        per_frame = "n/a"
        if "web_ms_per_frame_live" in r:
            per_frame = f"{r['web_ms_per_frame_idle']:.1f} / {r['web_ms_per_frame_live']:.1f}"
            frame_costs.append((r["peers"], r["web_ms_per_frame_live"]))
        if r.get("sustained") and "web_cpu_per_live_peer" in r:
            costs.append(r["web_cpu_per_live_peer"])
        lines.append(
            f"| {r['peers']} | {r['idle_fps_min']:.1f} | {r['live_fps_min']:.1f} / "
            f"{r['live_fps_mean']:.1f} | {r['worst_interval_ms']:.0f} | "
            f"{ms(health['median'])} / {ms(health['p95'])} | {cpu} | {per_frame} | "
            f"{_busy_text(r, 'cpu_busy_idle')} / {_busy_text(r, 'cpu_busy_live')} | "
            f"{'yes' if r['sustained'] else '**no**'} |"
        )
    if costs:
        per_peer = max(costs)
        lines += [
            "",
            f"The web process (it holds the peer connections and encodes their video) spends "
            f"up to **{per_peer:.3f} cores per live peer** in the rounds it sustained (its "
            f"fixed cost shared by fewer peers weighs most): at that rate one process (one "
            f"core, its event loop) holds at least **{int(1 / per_peer)} live peers** of this "
            f"size at {summary['fps']} fps, given cores of its own.",
        ]
    marginal = _marginal_text(summary)
    if marginal:
        lines += ["", marginal]
    if frame_costs and pinned:
        lines += [
            "",
            f"Each frame a live peer received cost the web process {frame_costs[0][1]:.1f} CPU "
            f"ms with {frame_costs[0][0]} peer(s), {frame_costs[-1][1]:.1f} with "
            f"{frame_costs[-1][0]} (its fixed cost shared by more frames). "
            f"{_what_ran_out(summary)}",
        ]
    return "\n".join(lines) + "\n"


ENCODER_PRESETS = ("medium", "veryfast", "superfast", "ultrafast")


def _yuv_frames(video: Path, count: int, size: tuple[int, int]) -> list[Any]:
    """``count`` frames of ``video`` (``_frames``' synthesized ones when it is absent), as
    yuv420p at ``size``."""
    import av

    if not video.is_file():
        return [
            av.VideoFrame.from_ndarray(image, format="bgr24").reformat(
                width=size[0], height=size[1], format="yuv420p"
            )
            for image in _frames(video, count)
        ]
    frames = []
    with av.open(str(video)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.reformat(width=size[0], height=size[1], format="yuv420p"))
            if len(frames) == count:
                break
    return frames


def _encode_round(encoder: Any, frames: list[Any], fps: int) -> dict[str, float]:
    """Encode ``frames`` with ``encoder`` as an RTP sender does (``encode``: H.264 into RTP
    payloads), timing the process's CPU (x264 runs threads of its own); then decode the
    payloads back (depacketized as a receiver does) for the luma PSNR against the source."""
    import fractions

    import av
    from aiortc.codecs.h264 import H264Decoder, h264_depayload
    from aiortc.jitterbuffer import JitterFrame

    encoded = []
    started = time.process_time()
    for n, source in enumerate(frames):
        frame = source.reformat(format="yuv420p")
        frame.pts, frame.time_base = n, fractions.Fraction(1, fps)
        encoded.append(encoder.encode(frame, force_keyframe=n == 0))
    cpu = time.process_time() - started
    decoder, size, psnr = H264Decoder(), 0, []
    for source, (payloads, timestamp) in zip(frames, encoded, strict=True):
        size += sum(len(p) for p in payloads)
        data = b"".join(h264_depayload(p) for p in payloads)
        for decoded in decoder.decode(JitterFrame(data=data, timestamp=timestamp)):
            assert isinstance(decoded, av.VideoFrame)
            got = decoded.to_ndarray(format="gray").astype(np.float64)
            want = source.to_ndarray(format="gray").astype(np.float64)
            mse = float(((got - want) ** 2).mean())
            psnr.append(99.0 if mse == 0 else 10 * np.log10(255**2 / mse))
    seconds = len(frames) / fps
    return {
        "cpu_ms_per_frame": 1000 * cpu / len(frames),
        "cores_per_viewer": cpu / seconds,
        "kbit_s": 8 * size / seconds / 1000,
        "luma_psnr_db": float(statistics.mean(psnr)) if psnr else float("nan"),
        "frames_decoded": len(psnr),
    }


def run_encoder(args: argparse.Namespace) -> dict[str, Any]:
    """Per viewer, what its H.264 costs the process holding the peer: aiortc's own encoder
    (x264 ``medium``) against :class:`PresetH264Encoder` at each preset, same frames, same
    bitrate (aiortc's 1 Mbit/s start)."""
    from aiortc.codecs.h264 import H264Encoder

    from sessions_app.webrtc.encoder import PresetH264Encoder

    width, height = (int(n) for n in args.size.split("x"))
    frames = _yuv_frames(args.video, 5 * args.fps, (width, height))
    rounds = [{"encoder": "aiortc's default", **_encode_round(H264Encoder(), frames, args.fps)}]
    for preset in ENCODER_PRESETS:
        result = _encode_round(PresetH264Encoder(preset), frames, args.fps)
        rounds.append({"encoder": preset, **result})
        print(rounds[-1], flush=True)
    return {
        "environment": {"device": "cpu", "host": platform.node(), "cpu_count": os.cpu_count()},
        "video": args.video.name,
        "size": f"{width}x{height}",
        "frames": len(frames),
        "fps": args.fps,
        "rounds": rounds,
    }


def encoder_markdown(summary: dict[str, Any]) -> str:
    base = summary["rounds"][0]
    lines = [
        f"# WebRTC viewers' H.264: CPU per viewer by x264 preset ({summary['size']})",
        "",
        f"{summary['frames']} frames of `{summary['video']}` at {summary['size']}, "
        f"{summary['fps']} fps, encoded as a peer's RTP sender does (H.264 into RTP payloads, "
        "aiortc's 1 Mbit/s starting bitrate; CPU of all the process's threads) on host "
        f"{summary['environment']['host']} ({summary['environment']['cpu_count']} CPUs); "
        "decoded back from the payloads for the luma PSNR.",
        "",
        "| encoder | CPU ms / frame | cores per viewer | vs aiortc's default | kbit/s | "
        "luma PSNR dB |",
        "|---|---|---|---|---|---|",
    ]
    for r in summary["rounds"]:
        lines.append(
            f"| {r['encoder']} | {r['cpu_ms_per_frame']:.1f} | {r['cores_per_viewer']:.3f} | "
            f"{r['cpu_ms_per_frame'] / base['cpu_ms_per_frame']:.2f}x | {r['kbit_s']:.0f} | "
            f"{r['luma_psnr_db']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webrtc", description=__doc__)
    parser.add_argument("--mode", default="transport", choices=["transport", "sessions", "encoder"])
    parser.add_argument("--profile", default="random-tiny", choices=["random-tiny", "random-full"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--utterances", type=int, default=5)
    parser.add_argument("--speech", type=float, default=2.0, help="seconds per utterance")
    parser.add_argument(
        "--peers", default="1,2,4", help="concurrent viewers per round (0: no peers rounds)"
    )
    parser.add_argument(
        "--utterance-timeout",
        type=float,
        default=60.0,
        help="sessions: seconds an utterance may take beyond 4x its length (random-full on a "
        "CPU makes a frame in seconds)",
    )
    parser.add_argument("--size", default="", help="WxH: sessions 256x320, encoder 576x768")
    parser.add_argument(
        "--web-cpus",
        default="",
        help="sessions: pin the web process to these CPUs (e.g. 0), the rest elsewhere",
    )
    parser.add_argument(
        "--viewers",
        default="decode",
        choices=["decode", "count"],
        help="sessions, peers rounds: viewers decode the video, or only count its frames",
    )
    parser.add_argument("--redis-url", default="", help="default: a redis-server started here")
    parser.add_argument("--streams", default="1,4,8,16")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.mode == "encoder":
        args.size = args.size or "576x768"
        summary = run_encoder(args)
        write_results(args.out_dir, "webrtc-encoder", summary, encoder_markdown(summary))
        return 0
    if args.mode == "sessions":
        args.size = args.size or "256x320"
        summary = run_sessions(args)
        name = f"webrtc-sessions-{args.profile}"
        if args.size != "256x320":
            name += f"-{args.size}"
        if args.web_cpus:
            name += "-web-pinned"
        if args.viewers == "count":
            name += "-counting-viewers"
        write_results(args.out_dir, name, summary, sessions_markdown(summary))
        return 0
    stack = None
    url = args.redis_url
    if not url:
        var = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-webrtc-{os.getpid()}"
        stack = Stack(StackConfig(redis_port=free_port(), var_dir=var, log_dir=var / "logs"))
        url = stack.start_redis()
    try:
        images = _frames(args.video, 25)
        height, width = images[0].shape[:2]
        info = redis.Redis.from_url(url).info("server")
        summary: dict[str, Any] = {
            "environment": {
                "device": "cpu",
                "host": platform.node(),
                "cpu_count": os.cpu_count(),
                "redis": info.get("redis_version"),
            },
            "width": width,
            "height": height,
            "frame_kib": width * height * 1.5 / 1024,
            "fps": args.fps,
            "seconds": args.seconds,
            "rounds": [],
        }
        for streams in (int(k) for k in args.streams.split(",")):
            result = run_transport(url, streams, args.seconds, args.fps, images)
            print(result, flush=True)
            summary["rounds"].append(result)
            write_results(args.out_dir, "webrtc-transport", summary, markdown(summary))
    finally:
        if stack is not None:
            stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
