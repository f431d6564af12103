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
on the same machine. Results: ``bench/results/webrtc-sessions-<profile>-<device>.json`` and
``.md``.

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
import os
import platform
import statistics
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

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


def _stages(base: str, token: str, session_id: str) -> dict[str, float] | None:
    """The latest utterance's server timestamps (``/sessions/{id}/status``) as Unix seconds:
    queued (the upload stored), started (a worker took it), first frame (made and published)."""
    response = requests.get(
        f"{base}/sessions/{session_id}/status",
        headers={"Authorization": f"Token {token}"},
        timeout=30,
    )
    request = response.json().get("current_request") if response.ok else None
    keys = {"queued": "queued_at", "started": "started_at", "first_frame": "first_chunk_at"}
    if not request or not all(request.get(key) for key in keys.values()):
        return None
    return {
        name: datetime.fromisoformat(request[key].replace("Z", "+00:00")).timestamp()
        for name, key in keys.items()
    }


def _breakdown(stages: dict[str, float] | None, posted_wall: float, seen_wall: float) -> dict:
    """Milliseconds spent in each step from the upload's answer to the viewer's first live
    frame: worker pickup, the engine's first frame, then its way to the viewer (Redis, the
    prebuffer, the track's pacing, RTP and decoding). Server and viewer share this clock."""
    if stages is None:
        return {}
    return {
        "pickup_ms": 1000 * (stages["started"] - max(stages["queued"], posted_wall)),
        "engine_first_frame_ms": 1000 * (stages["first_frame"] - stages["started"]),
        "to_viewer_ms": 1000 * (seen_wall - stages["first_frame"]),
        "answer_after_queued_ms": 1000 * (posted_wall - stages["queued"]),
    }


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
        "p95": ordered[int(0.95 * (len(ordered) - 1))],
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
            deadline = time.monotonic() + args.speech * 4 + 60
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
            for step in ("pickup_ms", "engine_first_frame_ms", "to_viewer_ms")
            if (values := [r["breakdown"][step] for r in runs if r.get("breakdown")])
        },
    }


async def _peers(base: str, token: str, k: int, args: argparse.Namespace, speech: Path) -> dict:
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
        await asyncio.sleep(2.0)
        idle_fps = [(len(v.video) - m) / 2.0 for v, m in zip(viewers, marks, strict=True)]
        marks = [len(v.video) for v in viewers]
        began = time.monotonic()
        probe = asyncio.ensure_future(_responsiveness(base, args.speech + 1.0))
        await asyncio.gather(
            *(asyncio.to_thread(_upload, base, token, c["session_id"], speech) for c in created)
        )
        await asyncio.sleep(args.speech + 1.0)
        spent = time.monotonic() - began
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
        video = make_face_video(work / "face.mp4", seconds=1.0, fps=25, size=(256, 320))
        speech = make_speech_wav(work / "speech.wav", seconds=args.speech)
        token = api_token(env)
        config = StackConfig(port=free_port(), var_dir=work / "var", env=env, log_dir=work / "logs")
        with Stack(config) as stack:
            stack.start(health_timeout=600)
            base = stack.base_url
            prepare_s = prepare_avatar(base, token, video, Tally())
            latency = asyncio.run(_latency(base, token, args, speech))
            print("latency", {k: v for k, v in latency.items() if k != "first_live_ms_all"})
            peers = []
            for k in (int(n) for n in args.peers.split(",")):
                result = asyncio.run(_peers(base, token, k, args, speech))
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
        "avatar": "256x320 synthesized face, prepared through the API",
        "prepare_s": round(prepare_s, 1),
        "latency": latency,
        "peers": peers,
    }


def sessions_markdown(summary: dict[str, Any]) -> str:
    env, latency = summary["environment"], summary["latency"]

    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.0f}"

    first, gaps = latency["first_live_ms"], latency["live_interval_ms"]
    lines = [
        f"# WebRTC sessions end to end: {env['profile']} on {env['device']}",
        "",
        f"**RANDOM WEIGHTS** ({env['profile']}): the face is noise, the costs are the "
        f"platform's. Host {env['host']} ({env['cpu_count']} CPUs): web, worker, Redis and the "
        f"aiortc viewers all on it. {summary['avatar']}; {summary['speech_seconds']} s "
        f"utterances at {summary['fps']} fps.",
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
    lines += [
        "",
        "| peers | idle fps (min) | live fps (min / mean) | worst interval ms | "
        "GET /health ms median / p95 while live | sustained |",
        "|---|---|---|---|---|---|",
    ]
    for r in summary["peers"]:
        if "error" in r:
            lines.append(
                f"| {r['peers']} | only {r['connected']} of {r['peers']} viewers connected "
                f"within 30 s ({r['error']}) | | | | **no** |"
            )
            continue
        health = r["health_ms"]
        lines.append(
            f"| {r['peers']} | {r['idle_fps_min']:.1f} | {r['live_fps_min']:.1f} / "
            f"{r['live_fps_mean']:.1f} | {r['worst_interval_ms']:.0f} | "
            f"{ms(health['median'])} / {ms(health['p95'])} | "
            f"{'yes' if r['sustained'] else '**no**'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webrtc", description=__doc__)
    parser.add_argument("--mode", default="transport", choices=["transport", "sessions"])
    parser.add_argument("--profile", default="random-tiny", choices=["random-tiny", "random-full"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--utterances", type=int, default=5)
    parser.add_argument("--speech", type=float, default=2.0, help="seconds per utterance")
    parser.add_argument("--peers", default="1,2,4", help="concurrent viewers per round")
    parser.add_argument("--redis-url", default="", help="default: a redis-server started here")
    parser.add_argument("--streams", default="1,4,8,16")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.mode == "sessions":
        summary = run_sessions(args)
        name = f"webrtc-sessions-{args.profile}"
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
