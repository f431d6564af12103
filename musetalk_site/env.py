"""Small typed readers for settings that come from the environment.

Each helper returns a working default when the variable is unset and raises
``ImproperlyConfigured`` naming the variable when a value cannot be parsed. All but
``env_secret`` read ``environ`` when given one, else ``os.environ``: the launcher checks the
mapping it hands its children.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _source(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def env_str(name: str, default: str = "", *, environ: Mapping[str, str] | None = None) -> str:
    return _source(environ).get(name, default)


def env_bool(name: str, default: bool = False, *, environ: Mapping[str, str] | None = None) -> bool:
    raw = _source(environ).get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false, yes/no), got {raw!r}")


def env_int(
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    raw = _source(environ).get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name} must be <= {maximum}, got {value}")
    return value


def env_float(
    name: str,
    default: float,
    *,
    minimum: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> float:
    raw = _source(environ).get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {value}")
    return value


_RATE_PERIODS = {"s", "sec", "second", "m", "min", "minute", "h", "hour", "d", "day"}


def env_rate(
    name: str, default: str | None, *, environ: Mapping[str, str] | None = None
) -> str | None:
    """A DRF throttle rate such as ``30/min`` (``N/s|sec|m|min|h|hour|d|day``); ``0`` or an
    empty value: no limit (None)."""
    raw = _source(environ).get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in {"", "0"}:
        return None
    count, _, period = value.partition("/")
    if not (count.isdigit() and int(count) >= 1 and period in _RATE_PERIODS):
        raise ImproperlyConfigured(
            f"{name} must be a rate such as 30/min (N/s, N/min, N/hour or N/day; 0: no limit), "
            f"got {raw!r}"
        )
    return f"{int(count)}/{period}"


def env_list(
    name: str, default: list[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> list[str]:
    raw = _source(environ).get(name)
    if raw is None:
        return list(default or [])
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_choice(
    name: str,
    default: str,
    choices: tuple[str, ...],
    *,
    environ: Mapping[str, str] | None = None,
) -> str:
    value = _source(environ).get(name, default).strip() or default
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


_USERNAME = re.compile(r"^[\w.@+-]{1,150}$")


def env_username(name: str, *, environ: Mapping[str, str] | None = None) -> str:
    """A Django username (letters, digits and ``@.+-_``, at most 150), or "" when unset."""
    value = _source(environ).get(name, "").strip()
    if value and not _USERNAME.match(value):
        raise ImproperlyConfigured(
            f"{name} must be a username (letters, digits and @.+-_, at most 150), got {value!r}"
        )
    return value


def env_secret(name: str, *, generate_into: Path | None = None) -> str:
    """Read a secret from ``NAME``, or from the file named by ``NAME_FILE``.

    When neither is set and ``generate_into`` is given, a random secret is generated
    once into that file (mode 0600) and reused afterwards.
    """
    value = os.environ.get(name)
    if value:
        return value
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={file_name!r} cannot be read: {exc}") from None
    if generate_into is None:
        raise ImproperlyConfigured(f"{name} (or {name}_FILE) must be set")
    return _generated_secret(generate_into)


def _generated_secret(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(50))
    # link() is atomic and fails when the target exists: when two processes start together,
    # exactly one secret wins and both read it back.
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text().strip()
