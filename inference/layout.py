"""Names the engine gives to what it writes, for the code that finds those files again.

Torch-free, so the web process may import it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

CHUNK_NAME = "chunk_{:04d}.mp4"  # chunk 1 is chunk_0001.mp4
CHUNK_PATTERN = re.compile(r"^chunk_(\d{4,6})\.mp4$")
STAGING_MARK = ".tmp-"
# Beside the chunks: the utterance's whole audio as one continuous AAC track, for the HLS
# segmenter (MPEG-TS has no edit lists to join separately encoded chunk audio cleanly).
AUDIO_TRACK = "audio.m4a"


def chunk_name(number: int) -> str:
    """The file name of chunk ``number`` (1-based) of an utterance."""
    return CHUNK_NAME.format(number)


def chunk_number(name: str) -> int | None:
    """The 1-based number of a chunk file ``name``, or None when it is not a chunk's name."""
    match = CHUNK_PATTERN.match(name)
    return int(match.group(1)) if match else None


def staging_folder(folder: Path) -> Path:
    """A fresh hidden sibling of ``folder`` where its new contents are built before a rename."""
    return folder.with_name(f".{folder.name}{STAGING_MARK}{uuid.uuid4().hex[:8]}")


def staging_leftovers(folder: Path) -> Iterator[Path]:
    """Staging siblings of ``folder`` that a killed process left behind."""
    return folder.parent.glob(f".{folder.name}{STAGING_MARK}*")
