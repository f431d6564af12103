"""The run command's launcher, as a user runs it: one process that owns the whole stack."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from musetalk_site.stack import BASE_DIR, free_port

pytestmark = pytest.mark.e2e


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, stack = set(), [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except OSError:
        return 0, {}


def _wait_for_demo_health(process: subprocess.Popen, port: int) -> dict:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        status, body = _health(port)
        if status == 200 and body.get("engine", {}).get("loaded"):
            return body
        time.sleep(0.5)
    raise AssertionError(f"launcher never became healthy: {body}")


def test_launcher_runs_the_stack_in_demo_mode_and_stops_cleanly(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.pop("MUSETALK_MODEL_PROFILE", None)
    env.update(
        VAR_DIR=str(tmp_path / "var"),
        MEDIA_ROOT=str(tmp_path / "var" / "media"),
        MODELS_DIR=str(tmp_path / "models"),
        PORT=str(port),
        HF_HUB_OFFLINE="1",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "musetalk_site.launcher"],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        body = _wait_for_demo_health(process, port)
        assert body["demo_mode"] is True
        assert body["warning"] == "demo mode: random weights, output is not real lip-sync"
        assert body["engine"]["profile"] == "random-tiny"
        assert (tmp_path / "var" / "redis").is_dir()  # embedded Redis keeps its data in var/
        assert (tmp_path / "var" / "db.sqlite3").exists()
        children = _descendants(process.pid)
        assert len(children) >= 3  # redis, worker (+ its processes), daphne
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "Demo account created" in output and "password:" in output
    assert "demo mode: random weights, output is not real lip-sync" in output
    assert f"dashboard at http://127.0.0.1:{port}/" in output
    time.sleep(0.5)
    assert [pid for pid in children if _alive(pid)] == []
    assert _health(port)[0] == 0  # nothing listens any more


def test_launcher_refuses_to_start_the_real_profile_without_weights(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(
        VAR_DIR=str(tmp_path / "var"),
        MODELS_DIR=str(tmp_path / "models"),
        MUSETALK_MODEL_PROFILE="musetalk-v15",
        PORT=str(free_port()),
    )
    result = subprocess.run(
        [sys.executable, "-m", "musetalk_site.launcher"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 1
    assert "musetalkV15/unet.pth" in result.stderr and "sd-vae/config.json" in result.stderr
    assert "python manage.py download_models" in result.stderr
    assert "dashboard at" not in result.stdout + result.stderr
