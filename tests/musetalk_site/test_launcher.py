"""The run command's launcher, as a user runs it: one process that owns the whole stack.

Its environment is checked before anything starts, and its profile comes from the engine's
own rule (``inference.profiles.resolve_profile``) without importing torch.
"""

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

from inference.config import missing_weights
from inference.errors import MissingWeightsError
from musetalk_site.launcher import read_launch_config, resolve_launch_profile
from musetalk_site.stack import BASE_DIR, free_port

# The official layout; the launcher only checks that the files exist.
WEIGHT_FILES = (
    "musetalkV15/unet.pth",
    "musetalkV15/musetalk.json",
    "sd-vae/config.json",
    "sd-vae/diffusion_pytorch_model.bin",
    "whisper/config.json",
    "whisper/pytorch_model.bin",
    "whisper/preprocessor_config.json",
)


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


def _launcher_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(VAR_DIR=str(tmp_path / "var"), MODELS_DIR=str(tmp_path / "models"), **overrides)
    return env


def _launch(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "musetalk_site.launcher"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _fake_weights(models_dir: Path) -> Path:
    for name in WEIGHT_FILES:
        (models_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (models_dir / name).write_bytes(b"")
    assert missing_weights(models_dir) == []
    return models_dir


@pytest.mark.parametrize(
    "name,value,message",
    [
        ("PORT", "abc", "PORT must be an integer, got 'abc'"),
        ("PORT", "70000", "PORT must be <= 65535, got 70000"),
        ("WORKER_THREADS", "0", "WORKER_THREADS must be >= 1, got 0"),
        ("WORKER_SHUTDOWN_SECONDS", "0", "WORKER_SHUTDOWN_SECONDS must be >= 1.0, got 0.0"),
        (
            "MUSETALK_MODEL_PROFILE",
            "bogus",
            "MUSETALK_MODEL_PROFILE must be one of auto, musetalk-v15, random-full, random-tiny;"
            " got 'bogus'",
        ),
    ],
)
def test_launcher_refuses_a_bad_value_in_one_line_before_starting_anything(
    tmp_path, name, value, message
):
    overrides = {"PORT": str(free_port()), name: value}
    result = _launch(_launcher_env(tmp_path, **overrides))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"configuration error: {message}"]
    assert result.stdout == ""
    assert not (tmp_path / "var").exists()  # no database, secret key or Redis data


def test_launch_config_reads_the_given_mapping_with_the_documented_defaults():
    config = read_launch_config({"PORT": "8123", "REDIS_URL": ""})
    assert (config.host, config.port, config.redis_url) == ("127.0.0.1", 8123, None)
    assert config.profile == "auto"  # not the test process's own MUSETALK_MODEL_PROFILE
    assert config.models_dir == BASE_DIR / "models" and config.var_dir == BASE_DIR / "var"
    assert (config.worker_processes, config.worker_threads, config.prepare_threads) == (1, 4, 1)
    assert config.worker_shutdown_seconds == 30.0
    assert config.startup_timeout == 300.0


def test_the_launcher_never_imports_torch(tmp_path):
    models_dir = _fake_weights(tmp_path / "models")
    code = (
        "import sys; from musetalk_site import launcher; "
        "assert 'torch' not in sys.modules, 'import'; "
        f"env = {{'MODELS_DIR': {str(models_dir)!r}}}; "
        "launcher.resolve_launch_profile(env, launcher.read_launch_config(env)); "
        "print(env['MUSETALK_MODEL_PROFILE'], 'torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["musetalk-v15", "False"]


def test_auto_picks_the_real_profile_when_the_weights_are_there(tmp_path):
    env = {"MODELS_DIR": str(_fake_weights(tmp_path / "models"))}
    resolved = resolve_launch_profile(env, read_launch_config(env))
    assert (resolved.profile, resolved.demo) == ("musetalk-v15", False)
    assert env["MUSETALK_MODEL_PROFILE"] == "musetalk-v15"
    assert "MUSETALK_DEMO_MODE" not in env


def test_auto_falls_back_to_demo_mode_when_the_download_is_impossible(tmp_path, caplog):
    env = _launcher_env(tmp_path, HF_HUB_OFFLINE="1")
    env.pop("MUSETALK_MODEL_PROFILE", None)
    resolved = resolve_launch_profile(env, read_launch_config(env))  # runs download_models
    assert "model download impossible" in caplog.text and "offline" in caplog.text
    assert (resolved.profile, resolved.demo) == ("random-tiny", True)
    assert env["MUSETALK_MODEL_PROFILE"] == "random-tiny"
    assert env["MUSETALK_DEMO_MODE"] == "1"


def test_an_explicit_real_profile_without_weights_names_every_missing_file(tmp_path):
    env = {"MODELS_DIR": str(tmp_path / "models"), "MUSETALK_MODEL_PROFILE": "musetalk-v15"}
    with pytest.raises(MissingWeightsError) as excinfo:
        resolve_launch_profile(env, read_launch_config(env))
    assert [name for name in WEIGHT_FILES if name not in excinfo.value.message] == []
    assert len(excinfo.value.missing) == len(WEIGHT_FILES)


@pytest.mark.e2e
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
    assert "Killing worker process" not in output  # one SIGTERM each: a graceful stop
    time.sleep(0.5)
    assert [pid for pid in children if _alive(pid)] == []
    assert _health(port)[0] == 0  # nothing listens any more


def test_launcher_refuses_to_start_the_real_profile_without_weights(tmp_path):
    env = _launcher_env(tmp_path, MUSETALK_MODEL_PROFILE="musetalk-v15", PORT=str(free_port()))
    result = _launch(env)
    assert result.returncode == 1
    assert "musetalkV15/unet.pth" in result.stderr and "sd-vae/config.json" in result.stderr
    assert "python manage.py download_models" in result.stderr
    assert "dashboard at" not in result.stdout + result.stderr
    assert not (tmp_path / "var").exists()  # stopped before the database was touched
