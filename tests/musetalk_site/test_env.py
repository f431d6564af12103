from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from musetalk_site.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_secret,
    env_str,
)


@pytest.mark.parametrize(
    "raw,expected",
    [("1", True), ("yes", True), ("ON", True), ("0", False), ("false", False), ("", False)],
)
def test_env_bool_parses_common_spellings(monkeypatch, raw, expected):
    monkeypatch.setenv("X_FLAG", raw)
    assert env_bool("X_FLAG", not expected) is expected


def test_env_bool_uses_the_default_when_unset(monkeypatch):
    monkeypatch.delenv("X_FLAG", raising=False)
    assert env_bool("X_FLAG", True) is True


def test_env_bool_rejects_garbage_naming_the_variable(monkeypatch):
    monkeypatch.setenv("X_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X_FLAG"):
        env_bool("X_FLAG")


def test_env_int_parses_and_checks_the_minimum(monkeypatch):
    monkeypatch.setenv("X_INT", " 42 ")
    assert env_int("X_INT", 1) == 42
    monkeypatch.setenv("X_INT", "0")
    with pytest.raises(ImproperlyConfigured, match="X_INT must be >= 1"):
        env_int("X_INT", 5, minimum=1)
    monkeypatch.setenv("X_INT", "4.5")
    with pytest.raises(ImproperlyConfigured, match="X_INT must be an integer"):
        env_int("X_INT", 5)


def test_env_int_checks_the_maximum(monkeypatch):
    monkeypatch.setenv("X_INT", "70000")
    with pytest.raises(ImproperlyConfigured, match="X_INT must be <= 65535, got 70000"):
        env_int("X_INT", 8000, minimum=1, maximum=65535)
    monkeypatch.setenv("X_INT", "65535")
    assert env_int("X_INT", 8000, minimum=1, maximum=65535) == 65535


def test_the_helpers_read_a_given_mapping_instead_of_the_process_environment(monkeypatch):
    for name in ("X_STR", "X_FLAG", "X_INT", "X_FLOAT", "X_LIST", "X_PROFILE"):
        monkeypatch.setenv(name, "from-os-environ")
    environ = {
        "X_STR": "given",
        "X_FLAG": "yes",
        "X_INT": "7",
        "X_FLOAT": "0.5",
        "X_LIST": "a,b",
        "X_PROFILE": "random-tiny",
    }
    assert env_str("X_STR", environ=environ) == "given"
    assert env_bool("X_FLAG", environ=environ) is True
    assert env_int("X_INT", 1, environ=environ) == 7
    assert env_float("X_FLOAT", 1.0, environ=environ) == 0.5
    assert env_list("X_LIST", environ=environ) == ["a", "b"]
    profile = env_choice("X_PROFILE", "auto", ("auto", "random-tiny"), environ=environ)
    assert profile == "random-tiny"
    assert env_int("X_INT", 3, environ={}) == 3  # unset in the mapping: the default


def test_a_bad_value_in_a_given_mapping_names_the_variable_and_the_value():
    with pytest.raises(ImproperlyConfigured, match="PORT must be an integer, got 'abc'"):
        env_int("PORT", 8000, environ={"PORT": "abc"})


def test_env_float_and_list(monkeypatch):
    monkeypatch.setenv("X_FLOAT", "0.25")
    assert env_float("X_FLOAT", 1.0) == 0.25
    monkeypatch.setenv("X_LIST", "a.example, b.example,,")
    assert env_list("X_LIST") == ["a.example", "b.example"]
    monkeypatch.delenv("X_LIST")
    assert env_list("X_LIST", ["x"]) == ["x"]


def test_env_choice_refuses_unknown_values(monkeypatch):
    monkeypatch.setenv("X_PROFILE", "random-huge")
    with pytest.raises(ImproperlyConfigured, match="random-tiny"):
        env_choice("X_PROFILE", "auto", ("auto", "random-tiny"))


def test_env_secret_prefers_the_variable_then_the_file(monkeypatch, tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-file\n")
    monkeypatch.setenv("X_SECRET_FILE", str(secret_file))
    assert env_secret("X_SECRET") == "from-file"
    monkeypatch.setenv("X_SECRET", "from-env")
    assert env_secret("X_SECRET") == "from-env"


def test_env_secret_without_value_or_generator_is_an_error(monkeypatch):
    monkeypatch.delenv("X_SECRET", raising=False)
    monkeypatch.delenv("X_SECRET_FILE", raising=False)
    with pytest.raises(ImproperlyConfigured, match="X_SECRET"):
        env_secret("X_SECRET")


def test_env_secret_is_generated_once_and_private(monkeypatch, tmp_path):
    monkeypatch.delenv("X_SECRET", raising=False)
    monkeypatch.delenv("X_SECRET_FILE", raising=False)
    target = tmp_path / "var" / "secret_key"
    first = env_secret("X_SECRET", generate_into=target)
    assert len(first) >= 50
    assert env_secret("X_SECRET", generate_into=target) == first
    assert target.stat().st_mode & 0o777 == 0o600


def _generate(path: str, queue) -> None:
    queue.put(env_secret("X_RACE_SECRET", generate_into=Path(path)))


def test_env_secret_generation_agrees_across_racing_processes(tmp_path, monkeypatch):
    monkeypatch.delenv("X_RACE_SECRET", raising=False)
    target = tmp_path / "secret_key"
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    processes = [ctx.Process(target=_generate, args=(str(target), queue)) for _ in range(6)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=30)
    secrets = {queue.get(timeout=5) for _ in processes}
    assert secrets == {target.read_text().strip()}
