"""Soak: many live sessions streaming short utterances at once, for a few minutes.

Not a unit test, but it checks and exits non-zero when a check fails. It starts the real
platform (embedded Redis, the worker processes, daphne) on free ports with its own var dir,
prepares one small avatar through the API, opens ``--sessions`` sessions, each followed by an
SSE client of its own, and then, per session, posts a short utterance, waits for its
``speaking_ended``, checks its ``chunk`` events (indices 0..total-1, in order, once each),
fetches every chunk (200, non-empty, decodes as MP4 with PyAV) and posts the next one::

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.soak --sessions 50 --minutes 3

Every session first streams one warm-up utterance (all at once: the stack reaches its
full-concurrency working set); after 10 s idle the web and worker RSS are read (the warmed
start), then the soak runs for ``--minutes``, sampling RSS every 10 s; the sessions finish the
utterance they are in, and after another 10 s idle the RSS is read again (the end).
Live admission is off (``LIVE_ADMISSION=0``) and the per-user quotas and upload rate are
lifted: all sessions belong to one user, and the soak tests delivery, not those limits.
Results: ``bench/results/soak-<profile>-<device>.json`` and ``.md`` (random weights).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import requests

from musetalk_site.stack import BASE_DIR, Stack, StackConfig, free_port
from tests.media import make_face_video, make_speech_wav

RESULTS = BASE_DIR / "bench" / "results"
AVATAR_ID = "soak"
IDLE_SECONDS = 10.0  # quiet time before the warmed-start and end RSS readings
SAMPLE_SECONDS = 10.0
# End RSS may exceed the warmed start by this share and still count as flat; see README.
RSS_FLAT_SHARE = 0.15
UTTERANCE_SECONDS = (1.0, 1.25, 1.5)
SSE_READ_TIMEOUT = 120.0  # the feed sends a keepalive comment every 15 s


@dataclass
class Tally:
    """Everything the clients saw, shared by all their threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    utterances: list[dict[str, Any]] = field(default_factory=list)
    reconnects: int = 0

    def status(self, kind: str, code: str) -> None:
        with self.lock:
            self.statuses[code] += 1
            self.by_kind[f"{kind} {code}"] += 1

    def error(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)

    def utterance(self, record: dict[str, Any]) -> None:
        with self.lock:
            self.utterances.append(record)


def call(
    http: requests.Session, tally: Tally, kind: str, method: str, url: str, **kwargs: Any
) -> requests.Response | None:
    """One HTTP request, its status (or its exception) recorded under ``kind``."""
    try:
        response = http.request(method, url, timeout=kwargs.pop("timeout", 60), **kwargs)
    except requests.RequestException as exc:
        tally.status(kind, f"exception {type(exc).__name__}")
        tally.error(f"{kind} {method} {url}: {exc!r}")
        return None
    tally.status(kind, str(response.status_code))
    if response.status_code >= 300:
        tally.error(f"{kind} {method} {url}: {response.status_code} {response.text[:200]}")
    return response


class EventFeed:
    """One session's SSE feed, read by a thread; reconnects with ``Last-Event-ID`` (counted)
    if the connection drops, and keeps every event with the time it arrived."""

    def __init__(self, base: str, token: str, session_id: str, tally: Tally) -> None:
        self.url = f"{base}/sessions/{session_id}/events"
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Token {token}"
        self.tally = tally
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.cond = threading.Condition()
        self.last_id = 0
        self.ended = False
        self.closing = False
        self.connected = threading.Event()
        self.last_bytes = time.perf_counter()  # when the feed last sent anything, keep-alives too
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"sse-{session_id}")
        self.thread.start()

    def _run(self) -> None:
        while not self.closing and not self.ended:
            headers = {"Last-Event-ID": str(self.last_id)} if self.last_id else {}
            try:
                self._follow(headers)
            except (requests.RequestException, OSError, ValueError) as exc:
                if not self.closing:
                    silent = time.perf_counter() - self.last_bytes
                    when = time.strftime("%H:%M:%S")
                    self.tally.error(f"{when} sse {self.url} ({silent:.0f} s silent): {exc!r}")
            if not self.closing and not self.ended:
                with self.tally.lock:
                    self.tally.reconnects += 1
                time.sleep(1.0)

    def _follow(self, headers: dict[str, str]) -> None:
        response = self.http.get(
            self.url, headers=headers, stream=True, timeout=(10, SSE_READ_TIMEOUT)
        )
        self.tally.status("sse", str(response.status_code))
        if response.status_code != 200:
            raise ValueError(f"feed answered {response.status_code}")
        self.connected.set()
        event_id = 0
        with response:
            for line in response.iter_lines(decode_unicode=True):
                raw = str(line)
                self.last_bytes = time.perf_counter()
                if raw.startswith("id:"):
                    event_id = int(raw[3:].strip())
                elif raw.startswith("data:"):
                    self._add(event_id, json.loads(raw[5:].strip()))
                if self.closing or self.ended:
                    return

    def _add(self, event_id: int, payload: dict[str, Any]) -> None:
        if event_id and event_id <= self.last_id:
            return  # replayed after a reconnect: already have it
        with self.cond:
            self.last_id = max(self.last_id, event_id)
            self.events.append((time.perf_counter(), payload))
            self.ended = self.ended or payload.get("event") == "session_ended"
            self.cond.notify_all()

    def utterance(self, request_id: str, timeout: float) -> list[tuple[float, dict[str, Any]]]:
        """The events of ``request_id`` up to its ``speaking_ended`` (or what came in time)."""

        def mine() -> list[tuple[float, dict[str, Any]]]:
            return [(t, e) for t, e in self.events if e.get("request_id") == request_id]

        def over() -> bool:
            return self.ended or any(e.get("event") == "speaking_ended" for _, e in mine())

        with self.cond:
            self.cond.wait_for(over, timeout=timeout)
            return mine()

    def close(self) -> None:
        self.closing = True
        self.thread.join(timeout=SSE_READ_TIMEOUT + 15)


def chunk_order(events: list[dict[str, Any]]) -> dict[str, int]:
    """Chunk counts of one utterance: expected, received, missing, out of order, duplicated."""
    chunks = [e for e in events if e.get("event") == "chunk"]
    indices = [int(e["index"]) for e in chunks]
    totals = {int(e["total_chunks"]) for e in events if e.get("event") in ("chunk", "complete")}
    total = max(totals, default=0)
    return {
        "total": total,
        "received": len(indices),
        "missing": len(set(range(total)) - set(indices)),
        "out_of_order": sum(1 for position, index in enumerate(indices) if index != position),
        "duplicated": len(indices) - len(set(indices)),
        "totals_disagree": int(len(totals) > 1),
    }


def mp4_video_frames(data: bytes) -> int:
    container: Any = av.open(io.BytesIO(data), format="mp4")
    with container:
        return len(list(container.decode(video=0)))


@dataclass
class Plan:
    base: str
    token: str
    audios: list[Path]
    chunk_seconds: float
    utterance_timeout: float
    go: threading.Event = field(default_factory=threading.Event)
    end_at: float = 0.0  # perf_counter time after which no utterance starts


class SessionClient:
    """One session: its feed, and a thread that streams utterances one after the other."""

    def __init__(self, number: int, plan: Plan, tally: Tally) -> None:
        self.number, self.plan, self.tally = number, plan, tally
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Token {plan.token}"
        self.random = random.Random(number)
        self.session_id = ""
        self.feed: EventFeed | None = None
        self.warmed = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"session-{number}")

    def open(self) -> bool:
        params = {"avatar_id": AVATAR_ID, "fps": 25, "chunk_duration": self.plan.chunk_seconds}
        url = f"{self.plan.base}/sessions/create"
        response = call(self.http, self.tally, "create", "POST", url, params=params)
        if response is None or response.status_code != 200:
            return False
        self.session_id = response.json()["session_id"]
        self.feed = EventFeed(self.plan.base, self.plan.token, self.session_id, self.tally)
        return self.feed.connected.wait(60)

    def _run(self) -> None:
        try:
            self._utterance("warmup")
            self.warmed.set()
            self.plan.go.wait()
            while time.perf_counter() < self.plan.end_at:
                self._utterance("soak")
        except Exception as exc:  # a client bug: recorded, and the check on utterances fails
            self.tally.error(f"session client {self.number} crashed: {exc!r}")
            self.tally.utterance({"session": self.number, "outcome": f"client crash {exc!r}"})
        finally:
            self.warmed.set()

    def _utterance(self, phase: str) -> None:
        assert self.feed is not None
        audio = self.random.choice(self.plan.audios)
        url = f"{self.plan.base}/sessions/{self.session_id}/stream"
        posted = time.perf_counter()
        with audio.open("rb") as handle:
            files = {"audio_file": (audio.name, handle, "audio/wav")}
            response = call(self.http, self.tally, "stream", "POST", url, files=files)
        record: dict[str, Any] = {"session": self.number, "phase": phase, "audio": audio.name}
        if response is None or response.status_code not in (200, 202):
            record["outcome"] = "refused"
            self.tally.utterance(record)
            time.sleep(1.0)
            return
        record["request_id"] = request_id = response.json()["request_id"]
        events = self.feed.utterance(request_id, self.plan.utterance_timeout)
        record.update(self._judge(posted, events))
        record.update(self._fetch([e for _, e in events if e.get("event") == "chunk"]))
        self.tally.utterance(record)

    @staticmethod
    def _judge(posted: float, timed: list[tuple[float, dict[str, Any]]]) -> dict[str, Any]:
        events = [e for _, e in timed]
        ended = [e for e in events if e.get("event") == "speaking_ended"]
        firsts = [t for t, e in timed if e.get("event") == "chunk"]
        completes = [t for t, e in timed if e.get("event") == "complete"]
        kinds = Counter(str(e.get("event")) for e in events)
        return {
            "outcome": ended[0].get("reason", "?") if ended else "timeout",
            "first_chunk_s": round(firsts[0] - posted, 3) if firsts else None,
            "complete_s": round(completes[0] - posted, 3) if completes else None,
            "degraded": kinds["degraded"],
            "recovered": kinds["recovered"],
            "errors": [e.get("message") for e in events if e.get("event") == "error"],
            **chunk_order(events),
        }

    def _fetch(self, chunks: list[dict[str, Any]]) -> dict[str, Any]:
        fetched = bad = frames = 0
        for chunk in chunks:
            url = self.plan.base + str(chunk["url"])
            response = call(self.http, self.tally, "chunk", "GET", url)
            if response is None or response.status_code != 200 or not response.content:
                bad += 1
                continue
            try:
                count = mp4_video_frames(response.content)
            except av.error.FFmpegError as exc:
                self.tally.error(f"chunk {url} does not decode: {exc!r}")
                count = 0
            fetched += 1
            frames += count
            bad += int(count == 0)
        return {"chunks_fetched": fetched, "chunks_bad": bad, "frames_decoded": frames}

    def close(self) -> None:
        url = f"{self.plan.base}/sessions/{self.session_id}"
        call(self.http, self.tally, "delete", "DELETE", url)
        if self.feed is not None:
            with self.feed.cond:
                self.feed.cond.wait_for(lambda: self.feed is not None and self.feed.ended, 30)
            if not self.feed.ended:
                self.tally.error(f"session {self.session_id}: no session_ended after DELETE")
            self.feed.close()


# -- the processes' memory -------------------------------------------------------------------


def proc_field(pid: int, name: str) -> int:
    """An integer field of ``/proc/<pid>/status`` (``VmRSS:`` is in KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name):
            return int(line.split()[1])
    return 0


def rss_mb(pid: int) -> float:
    return proc_field(pid, "VmRSS:") / 1024


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def watched_pids(stack: Stack) -> dict[str, int]:
    """daphne, and the Dramatiq worker process that holds the engine (under the parent)."""
    parent = stack.child("worker").process.pid
    deadline = time.monotonic() + 60
    while not children_of(parent) and time.monotonic() < deadline:
        time.sleep(0.5)
    (worker,) = children_of(parent)
    return {"web": stack.child("web").process.pid, "worker": worker}


def rss_sample(pids: dict[str, int], started: float, label: str) -> dict[str, Any]:
    sample: dict[str, Any] = {"t_s": round(time.perf_counter() - started, 1), "label": label}
    sample.update({name: round(rss_mb(pid), 1) for name, pid in pids.items()})
    sample["web_threads"] = proc_field(pids["web"], "Threads:")
    sample["load1"] = round(os.getloadavg()[0], 2)
    return sample


# -- the run ----------------------------------------------------------------------------------


def stack_env(args: argparse.Namespace, work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(
        VAR_DIR=str(work / "var"),
        MEDIA_ROOT=str(work / "media"),
        MODELS_DIR=str(work / "models"),
        MUSETALK_MODEL_PROFILE=args.profile,
        MUSETALK_DEVICE=args.device,
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        WORKER_HEARTBEAT_SECONDS="1",  # as tests/environment.py
        WORKER_STALE_SECONDS="8",
        WORKER_MAINTENANCE_SECONDS="5",
        LIVE_ADMISSION="0",
        QUOTA_MAX_ACTIVE_SESSIONS="0",
        QUOTA_MONTHLY_MINUTES="0",
        THROTTLE_UPLOAD_RATE="0",
    )
    return env


def api_token(env: dict[str, str]) -> str:
    """Migrate the soak's database and create its one user; returns the user's API token."""

    def manage(*command: str) -> str:
        args = [sys.executable, str(BASE_DIR / "manage.py"), *command]
        done = subprocess.run(args, env=env, check=True, cwd=BASE_DIR, capture_output=True)
        return done.stdout.decode()

    manage("migrate", "--noinput", "-v0")
    manage("ensure_demo_user", "--username", "soak")
    return manage("create_api_token", "soak").strip().splitlines()[-1]


def prepare_avatar(base: str, token: str, video: Path, tally: Tally) -> float:
    http = requests.Session()
    http.headers["Authorization"] = f"Token {token}"
    started = time.perf_counter()
    with video.open("rb") as handle:
        files = {"video_file": (video.name, handle, "video/mp4")}
        data = {"avatar_id": AVATAR_ID, "batch_size": 8}
        call(http, tally, "prepare", "POST", f"{base}/avatars/prepare", data=data, files=files)
    while True:
        response = call(http, tally, "avatar", "GET", f"{base}/avatars/{AVATAR_ID}")
        avatar = response.json() if response is not None else {}
        if avatar.get("status") in ("ready", "failed"):
            break
        time.sleep(0.5)
    if avatar["status"] != "ready":
        raise SystemExit(f"avatar preparation failed: {avatar.get('error')}")
    return time.perf_counter() - started


def run_soak(args: argparse.Namespace, work: Path, tally: Tally) -> dict[str, Any]:
    env = stack_env(args, work)
    width, height = (int(v) for v in args.avatar_size.split("x"))
    video = make_face_video(work / "face.mp4", seconds=1.0, fps=25, size=(width, height))
    audios = [make_speech_wav(work / f"speech-{s:g}s.wav", seconds=s) for s in UTTERANCE_SECONDS]
    token = api_token(env)
    config = StackConfig(port=free_port(), var_dir=work / "var", env=env, log_dir=work / "logs")
    with Stack(config) as stack:
        stack.start(health_timeout=600)
        started = time.perf_counter()
        log_offsets = {log.name: log.stat().st_size for log in (work / "logs").glob("*.log")}
        prepare_s = prepare_avatar(stack.base_url, token, video, tally)
        pids = watched_pids(stack)
        plan = Plan(stack.base_url, token, audios, args.chunk_seconds, args.utterance_timeout)
        result = drive(args, plan, tally, pids, started)
        result["stack_alive_at_end"] = stack.dead_child() is None
    result.update(
        prepare_s=round(prepare_s, 1), log_problems=log_problems(work / "logs", log_offsets)
    )
    return result


def drive(
    args: argparse.Namespace, plan: Plan, tally: Tally, pids: dict[str, int], started: float
) -> dict[str, Any]:
    """Open the sessions, warm up, soak, drain; RSS all along."""
    samples = [rss_sample(pids, started, "avatar ready")]
    clients = [SessionClient(number, plan, tally) for number in range(args.sessions)]
    opened = [client for client in clients if client.open()]
    for client in opened:
        client.thread.start()
    clients = opened
    warm_deadline = time.monotonic() + args.utterance_timeout + 60
    for client in clients:
        client.warmed.wait(max(0.0, warm_deadline - time.monotonic()))
    warmup_s = time.perf_counter() - started
    time.sleep(IDLE_SECONDS)
    samples.append(rss_sample(pids, started, "start (warmed, idle)"))
    plan.end_at = time.perf_counter() + args.minutes * 60
    plan.go.set()
    drain_until = plan.end_at + args.drain_seconds
    while any(c.thread.is_alive() for c in clients) and time.perf_counter() < drain_until:
        time.sleep(SAMPLE_SECONDS)
        label = "soak" if time.perf_counter() < plan.end_at else "draining"
        samples.append(rss_sample(pids, started, label))
    soak_s = time.perf_counter() - plan.end_at + args.minutes * 60
    stuck = [client.session_id for client in clients if client.thread.is_alive()]
    time.sleep(IDLE_SECONDS)
    samples.append(rss_sample(pids, started, "end (idle)"))
    for client in clients:
        client.close()
    samples.append(rss_sample(pids, started, "sessions closed"))
    return {
        "sessions_opened": len(opened),
        "warmup_s": round(warmup_s, 1),
        "soak_s": round(soak_s, 1),
        "clients_still_running": stuck,
        "rss": samples,
    }


def log_problems(log_dir: Path, offsets: dict[str, int]) -> dict[str, Any]:
    """Tracebacks and ERROR lines the stack logged once it was healthy (the first few quoted;
    before that, ``/health`` answers 503 while the worker boots, which is no problem)."""
    found: list[str] = []
    for log in sorted(log_dir.glob("*.log")):
        with log.open("rb") as handle:
            handle.seek(offsets.get(log.name, 0))
            text = handle.read().decode(errors="replace")
        for line in text.splitlines():
            if "Traceback" in line or " ERROR " in line or "ERROR:" in line:
                found.append(f"{log.name}: {line[:240]}")
    return {"count": len(found), "first": found[:8]}


# -- the report -------------------------------------------------------------------------------


def quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p95": None, "max": None}
    p95 = statistics.quantiles(values, n=20)[18] if len(values) > 1 else values[0]
    return {"median": round(statistics.median(values), 2), "p95": round(p95, 2), "max": max(values)}


def figures(tally: Tally) -> dict[str, Any]:
    done = [u for u in tally.utterances if u.get("outcome") == "complete"]
    soak = [u for u in done if u["phase"] == "soak"]

    def total(key: str) -> int:
        return sum(int(u.get(key) or 0) for u in tally.utterances)

    return {
        "utterances": len(tally.utterances),
        "utterances_complete": len(done),
        "utterances_complete_soak": len(soak),
        "utterances_not_complete": [u for u in tally.utterances if u not in done][:20],
        "chunks_expected": total("total"),
        "chunks_delivered": total("received"),
        "chunks_missing": total("missing"),
        "chunks_out_of_order": total("out_of_order"),
        "chunks_duplicated": total("duplicated"),
        "totals_disagree": total("totals_disagree"),
        "chunks_fetched": total("chunks_fetched"),
        "chunks_bad": total("chunks_bad"),
        "frames_decoded": total("frames_decoded"),
        "degraded_events": total("degraded"),
        "recovered_events": total("recovered"),
        "utterances_degraded": sum(1 for u in tally.utterances if u.get("degraded")),
        "first_chunk_s": quantiles([u["first_chunk_s"] for u in soak]),
        "complete_s": quantiles([u["complete_s"] for u in soak]),
        "statuses": dict(tally.statuses),
        "statuses_by_kind": dict(sorted(tally.by_kind.items())),
        "sse_reconnects": tally.reconnects,
        "client_errors": tally.errors[:20],
        "client_error_count": len(tally.errors),
    }


def rss_verdict(samples: list[dict[str, Any]], utterances: int) -> dict[str, Any]:
    """Start, end, peak and growth per process; ``utterances``: those after the start."""
    start = next(s for s in samples if s["label"].startswith("start"))
    end = next(s for s in samples if s["label"].startswith("end"))
    verdict: dict[str, Any] = {}
    for name in ("web", "worker"):
        peak = max(s[name] for s in samples)
        verdict[name] = {
            "start_mb": start[name],
            "end_mb": end[name],
            "peak_mb": peak,
            "growth": round(end[name] / start[name] - 1, 3),
            "growth_kb_per_utterance": round((end[name] - start[name]) * 1024 / max(1, utterances)),
            "flat": end[name] <= start[name] * (1 + RSS_FLAT_SHARE),
        }
    return verdict


def checks(result: dict[str, Any], sessions: int) -> dict[str, bool]:
    fig, codes = result["figures"], result["figures"]["statuses"]
    return {
        f"all {sessions} sessions opened, each with its SSE feed": result["sessions_opened"]
        == sessions,
        "no 5xx": not any(code.startswith("5") for code in codes),
        "no 4xx": not any(code.startswith("4") for code in codes),
        "no request failed in transport": not any(code.startswith("exc") for code in codes),
        "every utterance completed (speaking_ended: complete)": fig["utterances"] > 0
        and fig["utterances_complete"] == fig["utterances"],
        "every chunk delivered once, in order (0 missing, 0 out of order)": fig["chunks_missing"]
        + fig["chunks_out_of_order"]
        + fig["chunks_duplicated"]
        + fig["totals_disagree"]
        == 0
        and fig["chunks_delivered"] == fig["chunks_expected"],
        "every chunk fetched (200, non-empty) and decoded": fig["chunks_bad"] == 0
        and fig["chunks_fetched"] == fig["chunks_delivered"],
        "every session drained in time": not result["clients_still_running"],
        "stack processes alive at the end": result["stack_alive_at_end"],
        f"no SSE feed silent for {SSE_READ_TIMEOUT:.0f} s (keep-alives every 15 s)": fig[
            "sse_reconnects"
        ]
        == 0,
        "no ERROR or Traceback in the stack's logs": result["log_problems"]["count"] == 0,
        f"web RSS flat (end <= start + {RSS_FLAT_SHARE:.0%})": result["rss_verdict"]["web"]["flat"],
        f"worker RSS flat (end <= start + {RSS_FLAT_SHARE:.0%})": result["rss_verdict"]["worker"][
            "flat"
        ],
    }


def markdown(result: dict[str, Any]) -> str:
    fig = result["figures"]
    lines = [
        f"# Soak: {result['sessions']} live sessions, {result['profile']} on {result['device']}",
        "",
        f"**RANDOM WEIGHTS** ({result['profile']}): the video is noise; this checks delivery, "
        "not the model. "
        f"Host `{result['host']}`, load average {result['load_start']:.2f} at start and "
        f"{result['load_end']:.2f} at the end (other processes shared the CPUs). "
        f"Live admission off, quotas and upload rate lifted; utterances of "
        f"{', '.join(f'{s:g}' for s in UTTERANCE_SECONDS)} s, {result['chunk_seconds']:g} s "
        f"chunks, avatar {result['avatar_size']} prepared in {result['prepare_s']} s. "
        f"Warm-up (one utterance per session, all at once) took {result['warmup_s']} s; "
        f"the soak {result['soak_s']} s ({result['minutes']:g} min of new utterances, "
        "then the last ones finished).",
        "",
        "| check | result |",
        "|---|---|",
    ]
    lines += [
        f"| {name} | {'pass' if ok else '**FAIL**'} |" for name, ok in result["checks"].items()
    ]
    first, complete = fig["first_chunk_s"], fig["complete_s"]
    lines += [
        "",
        "| figure | value |",
        "|---|---|",
        f"| utterances (complete / all; soak phase complete) | {fig['utterances_complete']} / "
        f"{fig['utterances']}; {fig['utterances_complete_soak']} |",
        f"| chunks delivered / expected; fetched; bad | {fig['chunks_delivered']} / "
        f"{fig['chunks_expected']}; {fig['chunks_fetched']}; {fig['chunks_bad']} |",
        f"| missing / out of order / duplicated | {fig['chunks_missing']} / "
        f"{fig['chunks_out_of_order']} / {fig['chunks_duplicated']} |",
        f"| video frames decoded from the chunks | {fig['frames_decoded']} |",
        f"| POST -> first chunk s (median / p95 / max) | {first['median']} / {first['p95']} / "
        f"{first['max']} |",
        f"| POST -> complete s (median / p95 / max) | {complete['median']} / {complete['p95']} / "
        f"{complete['max']} |",
        f"| degraded / recovered events (utterances degraded) | {fig['degraded_events']} / "
        f"{fig['recovered_events']} ({fig['utterances_degraded']}) |",
        f"| HTTP statuses | {json.dumps(fig['statuses'], sort_keys=True)} |",
        f"| SSE reconnects | {fig['sse_reconnects']} |",
        f"| ERROR/Traceback lines in the stack's logs | {result['log_problems']['count']} |",
        "",
        "| RSS MiB | warmed start | end (10 s idle) | peak | growth | KiB per soak utterance |",
        "|---|---|---|---|---|---|",
    ]
    for name, rss in result["rss_verdict"].items():
        lines.append(
            f"| {name} | {rss['start_mb']} | {rss['end_mb']} | {rss['peak_mb']} | "
            f"{rss['growth']:+.1%} | {rss['growth_kb_per_utterance']} |"
        )
    problems = result["log_problems"]["first"] + fig["client_errors"][:8]
    if problems:
        lines += ["", "First problems (stack logs, then clients):", ""]
        lines += [f"- `{line}`" for line in problems]
    lines += ["", "RSS samples (s since the stack was healthy):", ""]
    lines += ["| t s | phase | web MiB | worker MiB | web threads | load |"]
    lines += ["|---|---|---|---|---|---|"]
    for s in result["rss"]:
        cells = [s["t_s"], s["label"], s["web"], s["worker"], s["web_threads"], s["load1"]]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--minutes", type=float, default=3.0, help="how long new utterances start")
    parser.add_argument("--profile", default="random-tiny", choices=["random-tiny", "random-full"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chunk-seconds", type=float, default=0.5)
    parser.add_argument("--avatar-size", default="160x208", help="WIDTHxHEIGHT of the face video")
    parser.add_argument("--utterance-timeout", type=float, default=900.0)
    parser.add_argument("--drain-seconds", type=float, default=900.0)
    return parser.parse_args()


def main() -> int:
    args = parse()
    work = Path(tempfile.mkdtemp(prefix="musetalk-soak-"))
    tally = Tally()
    load_start = os.getloadavg()[0]
    result: dict[str, Any] = {
        "sessions": args.sessions,
        "minutes": args.minutes,
        "profile": args.profile,
        "device": args.device,
        "chunk_seconds": args.chunk_seconds,
        "avatar_size": args.avatar_size,
        "warning": f"RANDOM WEIGHTS ({args.profile}): the video is noise.",
        "host": f"{platform.node()} ({os.cpu_count()} CPUs)",
        "load_start": load_start,
        "work_dir": str(work),
    }
    result.update(run_soak(args, work, tally))
    result["load_end"] = os.getloadavg()[0]
    result["figures"] = figures(tally)
    soak_utterances = result["figures"]["utterances"] - result["sessions_opened"]
    result["rss_verdict"] = rss_verdict(result["rss"], soak_utterances)
    result["checks"] = checks(result, args.sessions)
    result["utterance_records"] = tally.utterances
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"soak-{args.profile}-{args.device}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))  # noqa: T201 - a benchmark's output
    print(f"stack logs: {work / 'logs'}")  # noqa: T201
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
