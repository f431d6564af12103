"""Session streaming benchmark: stream POST -> first ``chunk`` event -> ``complete``.

Not a test. It starts the real platform (embedded Redis, the worker processes, daphne) on a
free port with the chosen model profile, prepares one avatar through the API, then for each
chunk duration streams one utterance per run and times the SSE events as a player sees them::

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.sessions                       # random-tiny
    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.sessions --profile random-full # the real cost

``random-tiny`` measures the platform's own overhead (upload, queue, worker, encoding, SSE);
``random-full`` has the real MuseTalk v1.5 cost (random weights: the video is noise). Results go
to ``bench/results/sessions-<profile>-<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from musetalk_site.stack import BASE_DIR, Stack, StackConfig, free_port
from tests.media import make_face_video, make_speech_wav

RESULTS = BASE_DIR / "bench" / "results"


def _events(response: requests.Response, sink: list[tuple[float, dict[str, Any]]]) -> None:
    for raw in response.iter_lines(decode_unicode=True):
        if raw.startswith("data:"):
            payload = json.loads(raw[5:].strip())
            sink.append((time.perf_counter(), payload))
            if payload.get("event") in {"complete", "error", "session_ended"}:
                return


def _demo_token(env: dict[str, str]) -> str:
    manage = [sys.executable, str(BASE_DIR / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], env=env, check=True, cwd=BASE_DIR)
    out = subprocess.run(
        [*manage, "ensure_demo_user", "--username", "bench"],
        env=env,
        check=True,
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
    ).stdout
    return out.split("API token:")[1].split()[0]


def _prepare(api: requests.Session, base: str, video: Path) -> float:
    started = time.perf_counter()
    with video.open("rb") as handle:
        response = api.post(
            f"{base}/avatars/prepare",
            data={"avatar_id": "bench", "batch_size": 8},
            files={"video_file": (video.name, handle, "video/mp4")},
        )
    response.raise_for_status()
    while True:
        avatar = api.get(f"{base}/avatars/bench").json()
        if avatar["status"] in {"ready", "failed"}:
            break
        time.sleep(0.5)
    if avatar["status"] != "ready":
        raise SystemExit(f"preparation failed: {avatar['error']}")
    return time.perf_counter() - started


def _one_run(api: requests.Session, base: str, audio: Path, chunk: float) -> dict[str, Any]:
    created = api.post(
        f"{base}/sessions/create",
        params={"avatar_id": "bench", "user_id": "bench", "chunk_duration": chunk},
    ).json()
    session_id = created["session_id"]
    events: list[tuple[float, dict[str, Any]]] = []
    stream = api.get(f"{base}/sessions/{session_id}/events", stream=True, timeout=(10, 3600))
    reader = threading.Thread(target=_events, args=(stream, events), daemon=True)
    reader.start()
    time.sleep(0.5)  # the player is connected before the utterance is posted
    posted = time.perf_counter()
    with audio.open("rb") as handle:
        api.post(
            f"{base}/sessions/{session_id}/stream",
            files={"audio_file": (audio.name, handle, "audio/wav")},
        ).raise_for_status()
    reader.join(timeout=3600)
    stream.close()
    api.delete(f"{base}/sessions/{session_id}")
    chunks = [t for t, e in events if e.get("event") == "chunk"]
    done = [t for t, e in events if e.get("event") == "complete"]
    if not chunks or not done:
        raise SystemExit(f"stream did not complete: {[e for _, e in events][-3:]}")
    return {
        "first_chunk_s": chunks[0] - posted,
        "complete_s": done[0] - posted,
        "chunks": len(chunks),
    }


def _summary(runs: list[dict[str, Any]], audio_s: float, chunk: float) -> dict[str, Any]:
    first = statistics.median(r["first_chunk_s"] for r in runs)
    complete = statistics.median(r["complete_s"] for r in runs)
    return {
        "chunk_duration": chunk,
        "audio_seconds": audio_s,
        "runs": runs,
        "first_chunk_s": round(first, 3),
        "complete_s": round(complete, 3),
        "realtime_factor": round(audio_s / complete, 3),
    }


def _markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Session streaming: {result['profile']} on {result['device']}",
        "",
        result["warning"],
        f"Avatar prepared through the API in {result['prepare_s']:.1f} s; "
        f"{result['runs_per_config']} run(s) per configuration (median shown). "
        f"Host: {result['host']}, load average at start {result['load_start']:.1f}.",
        "",
        "| chunk_duration s | audio s | chunks | POST -> first chunk s | POST -> complete s "
        "| audio s / complete s |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["configs"]:
        cells = [
            f"{row['chunk_duration']:g}",
            f"{row['audio_seconds']:.1f}",
            str(row["runs"][0]["chunks"]),
            f"{row['first_chunk_s']:.2f}",
            f"{row['complete_s']:.2f}",
            f"{row['realtime_factor']:.3f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="random-tiny", choices=["random-tiny", "random-full"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chunks", default="1,2", help="chunk durations in seconds")
    parser.add_argument("--audio-seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=0, help="0: 3 for random-tiny, 1 for full")
    return parser.parse_args()


def main() -> int:
    args = _parse()
    runs = args.runs or (3 if args.profile == "random-tiny" else 1)
    work = Path(tempfile.mkdtemp(prefix="musetalk-bench-"))
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(
        VAR_DIR=str(work / "var"),
        MEDIA_ROOT=str(work / "media"),
        MODELS_DIR=str(work / "models"),
        MUSETALK_MODEL_PROFILE=args.profile,
        MUSETALK_DEVICE=args.device,
        HF_HUB_OFFLINE="1",
    )
    video = make_face_video(work / "face.mp4", seconds=1.0, fps=25, size=(256, 320))
    audio = make_speech_wav(work / "speech.wav", seconds=args.audio_seconds)
    token = _demo_token(env)
    load_start = os.getloadavg()[0]
    stack = Stack(
        StackConfig(port=free_port(), var_dir=work / "var", env=env, log_dir=work / "logs")
    )
    with stack:
        stack.start(health_timeout=600)
        api = requests.Session()
        api.headers["Authorization"] = f"Token {token}"
        prepare_s = _prepare(api, stack.base_url, video)
        configs = []
        for chunk in [float(c) for c in args.chunks.split(",")]:
            results = [_one_run(api, stack.base_url, audio, chunk) for _ in range(runs)]
            configs.append(_summary(results, args.audio_seconds, chunk))
            print(json.dumps(configs[-1]), flush=True)  # noqa: T201 - a benchmark's output
    result = {
        "profile": args.profile,
        "device": args.device,
        "warning": "Random weights: the video is noise; the cost is "
        + ("the platform's own overhead." if args.profile == "random-tiny" else "the real cost."),
        "host": f"{platform.node()} ({os.cpu_count()} CPUs)",
        "load_start": load_start,
        "prepare_s": prepare_s,
        "runs_per_config": runs,
        "configs": configs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"sessions-{args.profile}-{args.device}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
    stem.with_suffix(".md").write_text(_markdown(result))
    print(_markdown(result))  # noqa: T201 - a benchmark's output
    return 0


if __name__ == "__main__":
    sys.exit(main())
