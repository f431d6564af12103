from __future__ import annotations

import logging

import pytest

from inference.errors import InferenceError
from musetalk_site.errors import ApplicationError
from musetalk_site.runs import claimed_run


def _run(body_error: Exception | None) -> list[str]:
    recorded: list[str] = []
    with claimed_run("test run", on_failure=recorded.append, internal_message="internal error"):
        if body_error is not None:
            raise body_error
    return recorded


def test_it_records_nothing_when_the_run_succeeds() -> None:
    assert _run(None) == []


@pytest.mark.parametrize(
    "error",
    [InferenceError("no face in the video", permanent=True), ApplicationError("too long", {})],
)
def test_it_records_a_typed_failure_with_its_message_and_ends_quietly(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    assert _run(error) == [str(error)]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_it_records_a_crash_as_internal_logs_it_and_raises_it_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorded: list[str] = []
    with pytest.raises(KeyError):
        with claimed_run("test run", on_failure=recorded.append, internal_message="internal"):
            raise KeyError("secret detail")
    assert recorded == ["internal"]  # the user never sees the exception's text
    crash = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(crash) == 1 and crash[0].exc_info is not None
