"""How a worker runs the work it claimed: one place decides what a failure tells the user.

A *typed* failure (``InferenceError`` from the engine, ``ApplicationError`` from a service)
carries a message meant for the user: it is recorded on the row and the run ends quietly.
Anything else is a bug or an outage: the user gets a generic message, the log gets the
traceback, and the exception goes on to Dramatiq (actors are never retried: ``max_retries=0``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from inference.errors import InferenceError
from musetalk_site.errors import ApplicationError

logger = logging.getLogger(__name__)


def failure_message(exc: BaseException) -> str | None:
    """The user-facing message of a typed failure; None for any other exception."""
    if isinstance(exc, (InferenceError, ApplicationError)):
        return exc.message
    return None


@contextmanager
def claimed_run(
    label: str, *, on_failure: Callable[[str], None], internal_message: str
) -> Iterator[None]:
    """Run the body for claimed work; a failure is recorded with ``on_failure(message)``."""
    try:
        yield
    except Exception as exc:
        message = failure_message(exc)
        if message is None:
            logger.exception("%s crashed", label)
        on_failure(message or internal_message)
        if message is None:
            raise
