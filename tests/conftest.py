"""Test-wide fixtures: our own Redis and the real stack on free ports (see environment.py)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from musetalk_site.stack import Stack, StackConfig, free_port

_VAR_DIR = Path(os.environ["VAR_DIR"])
_REDIS_PORT = int(os.environ["REDIS_URL"].rsplit(":", 1)[1].split("/")[0])


@pytest.fixture(scope="session")
def var_dir() -> Path:
    return _VAR_DIR


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """A real redis-server for the whole session, on the port the settings point at."""
    stack = Stack(StackConfig(redis_port=_REDIS_PORT, var_dir=_VAR_DIR, log_dir=_VAR_DIR / "logs"))
    url = stack.start_redis()
    yield url
    stack.stop()


@pytest.fixture(autouse=True)
def _fresh_request_counts() -> None:
    """Request-rate counts (sign-ins, sign-ups, tokens, uploads) live in the cache, which
    outlives each test's database: every test starts with none."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def _clean_redis_between_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "redis_server" in request.fixturenames and "live_stack" not in request.fixturenames:
        from musetalk_site.heartbeat import KEY_PREFIX
        from musetalk_site.redis_conn import redis_client

        client = redis_client()
        for key in client.scan_iter(match=KEY_PREFIX + "*"):
            client.delete(key)


def database_url(settings_dict: dict) -> str:
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or ""
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{settings_dict['NAME']}"


@pytest.fixture(scope="session")
def live_stack(
    redis_server: str, django_db_setup: None, django_db_blocker: object
) -> Iterator[Stack]:
    """The real platform on free ports: a worker process and daphne, on the test database.

    Tests that use it must commit their rows (``transactional_db``) so the other
    processes see them.
    """
    from django.db import connection

    env = {"DATABASE_URL": database_url(connection.settings_dict)}
    stack = Stack(
        StackConfig(
            port=free_port(),
            redis_url=redis_server,
            var_dir=_VAR_DIR,
            env=env,
            log_dir=_VAR_DIR / "logs",
            worker_threads=2,
        )
    )
    try:
        stack.start(health_timeout=180)
    except Exception:
        stack.stop()
        _dump_logs(_VAR_DIR / "logs")
        raise
    _LIVE_STACKS.append(stack)
    yield stack
    _LIVE_STACKS.remove(stack)
    stack.stop()


_LIVE_STACKS: list[Stack] = []


@contextmanager
def live_stack_workers_paused() -> Iterator[None]:
    """The shared live stack's workers stopped (SIGSTOP) while a test runs a stack of its own
    on the same database: their maintenance would take that stack's rows for orphans (its
    heartbeats and messages live in another Redis) and reap them."""
    groups = [
        child.process.pid
        for stack in _LIVE_STACKS
        for child in stack.children
        if child.name.startswith("worker")
    ]
    for pid in groups:
        os.killpg(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in groups:
            os.killpg(pid, signal.SIGCONT)


def _dump_logs(log_dir: Path) -> None:
    for log in sorted(log_dir.glob("*.log")):
        tail = log.read_text(errors="replace")[-4000:]
        print(f"----- {log.name} -----\n{tail}")  # noqa: T201 - shown by pytest on failure


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that drives a real browser (the ``browser`` fixture: Chromium) is marked
    ``browser``, as the WebKit tests are by their module."""
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)


ARTIFACTS_DIR = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture
def browser() -> Iterator[object]:
    """A fresh real headless Chromium (Debian chromium + chromium-driver) per test, driven by
    Selenium: no page or console log of one test leaks into the next."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver must be installed in CI")
        pytest.skip("chromium / chromedriver not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--autoplay-policy=no-user-gesture-required",
        # A synthetic camera and microphone (a test pattern and a beep), allowed without a
        # prompt: the dashboard's recordings.
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    yield chrome
    chrome.quit()
