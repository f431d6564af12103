"""Shared by the admin commands: follow a row's progress with a terminal progress bar."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from django.core.management.base import CommandError
from tqdm import tqdm


def follow(
    read: Callable[[], tuple[str, int, str]],
    *,
    done: Collection[str],
    failed: Collection[str],
    label: str,
    timeout: float,
) -> str:
    """Poll ``read() -> (status, progress, error)`` until a final status; returns it."""
    deadline = time.monotonic() + timeout
    with tqdm(total=100, desc=label, unit="%") as bar:
        while time.monotonic() < deadline:
            status, progress, error = read()
            bar.update(max(0, progress - bar.n))
            bar.set_postfix_str(status)
            if status in done:
                bar.update(100 - bar.n)
                return status
            if status in failed:
                raise CommandError(f"{label} {status}: {error or 'no reason given'}")
            time.sleep(0.5)
    raise CommandError(f"{label} did not finish in {timeout:.0f} s (is the worker running?)")
