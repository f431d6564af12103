"""WebRTC delivery: what moving live frames from the worker to the peer's process costs.

Not a test. Run from the repository root (a Redis on ``--redis-url``, or one started here)::

    .venv/bin/python -m bench.webrtc --streams 1,4,8,16 --seconds 4

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
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import redis
import redis.asyncio

from bench.engine import write_results
from inference.sinks import Frame
from musetalk_site.stack import Stack, StackConfig, free_port
from sessions_app.webrtc.transport import FramePublisher, StreamEnd, read_frames
from tests.media import SHARED_MEDIA

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webrtc", description=__doc__)
    parser.add_argument("--redis-url", default="", help="default: a redis-server started here")
    parser.add_argument("--streams", default="1,4,8,16")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
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
