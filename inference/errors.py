from __future__ import annotations


class InferenceError(Exception):
    """An engine failure. ``permanent`` errors are not worth retrying (bad input)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


class MissingWeightsError(InferenceError):
    """The generator weights for the ``musetalk-v15`` profile are not in MODELS_DIR."""

    def __init__(self, missing: list[str], models_dir: str) -> None:
        lines = "\n".join(f"  - {path}" for path in missing)
        message = (
            f"MuseTalk v1.5 weights are missing from {models_dir}:\n{lines}\n"
            "Download them with: python manage.py download_models"
        )
        super().__init__(message, permanent=True)
        self.missing = missing


class MediaError(InferenceError):
    """An input file cannot be decoded (not audio/video, corrupt, empty)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


class NoFaceError(InferenceError):
    """No usable face in a video (or in too many of its frames)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


class BudgetTimeoutError(InferenceError):
    """Memory could not be reserved in time; transient, the work may be retried."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=False)


class StreamCancelled(Exception):
    """A stream was stopped before its last frame: its ``cancelled`` hook said so, its sink
    asked to stop, or the engine closed. Not a failure."""
