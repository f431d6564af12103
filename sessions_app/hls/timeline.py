"""The HLS timeline of a session, and its playlist: pure data and pure functions.

A timeline is the list of segments a session's playlist has published. Each playlist
request extends it (:func:`timeline_extend`): every chunk of the current utterance that
exists, else idle parts, paced by the wall clock. Once published, a segment never changes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

WINDOW_MIN_SEGMENTS = 6  # and at least 3 target durations (RFC 8216 6.2.2)
PREFILL_TARGETS = 3  # a new playlist starts with this much idle "in the past"...
LEAD_TARGETS = 1  # ...and publishes idle this far ahead of the wall clock
STALL_TARGETS = 2  # an utterance slower than real time falls back to idle after this
MAX_APPENDS = 500
SEGMENT_NAME = re.compile(r"^(idle|live)_(\d{1,9})\.ts$")
IDLE, LIVE = "idle", "live"


@dataclass(frozen=True)
class Clip:
    """A media file (relative to MEDIA_ROOT) that becomes one segment."""

    source: str
    duration: float


@dataclass(frozen=True)
class LiveRequest:
    """An utterance as the timeline sees it: its chunks so far, in index order."""

    pk: int
    chunks: list[Clip]
    finished: bool  # no further chunk will come
    cut: bool  # interrupted: what was not published yet is dropped


@dataclass
class Segment:
    seq: int
    kind: str  # IDLE or LIVE
    source: str
    duration: float
    start: float  # media time, seconds
    discontinuity: bool  # an EXT-X-DISCONTINUITY precedes it
    disc_seq: int  # its discontinuity sequence number

    @property
    def name(self) -> str:
        return f"{self.kind}_{self.seq}.ts"


@dataclass
class Timeline:
    """What a session's playlist has published; ``edge`` is the wall-clock time (epoch s)
    at which the last published segment is due to end."""

    target: int
    segments: list[Segment] = field(default_factory=list)
    next_seq: int = 0
    next_start: float = 0.0
    disc_seq: int = 0
    edge: float = 0.0
    idle_next: int = 0
    done_pk: int = 0  # utterances up to this pk are played (or were history at the start)
    live_pk: int = 0  # the utterance being published...
    live_next: int = 0  # ...and the index of its next chunk

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Timeline:
        segments = [Segment(**segment) for segment in data.pop("segments")]
        return cls(segments=segments, **data)


def target_duration(durations: list[float]) -> int:
    """EXT-X-TARGETDURATION: whole seconds, at least every segment's duration."""
    return max(1, *(math.ceil(round(duration, 3)) for duration in durations))


def part_sizes(total: int, per_part: int) -> list[int]:
    """Split ``total`` frames into near-equal parts of about ``per_part`` frames."""
    count = max(1, round(total / max(1, per_part)))
    return [total // count + (1 if i < total % count else 0) for i in range(count)]


def timeline_new(*, target: int, now: float, done_pk: int, idle: list[Clip]) -> Timeline:
    """A timeline that already holds PREFILL_TARGETS of idle, ending now."""
    timeline = Timeline(target=target, done_pk=done_pk)
    while timeline.next_start < PREFILL_TARGETS * target:
        _append(timeline, IDLE, _next_idle(timeline, idle), now=0.0)
    timeline.edge = now
    return timeline


def timeline_extend(
    timeline: Timeline, *, now: float, idle: list[Clip], live: list[LiveRequest]
) -> None:
    """Publish what is due at ``now``: every chunk that exists (an utterance plays to its
    end), else idle up to LEAD_TARGETS ahead of the clock. While an utterance is slower
    than real time its stream waits, up to STALL_TARGETS, and then idles meanwhile."""
    for _ in range(MAX_APPENDS):
        chunk, pending = _next_live(timeline, live)
        if chunk is not None:
            _append(timeline, LIVE, chunk, now=now)
            continue
        last_kind = timeline.segments[-1].kind if timeline.segments else IDLE
        if pending and last_kind == LIVE and now < timeline.edge + STALL_TARGETS * timeline.target:
            break
        if timeline.edge >= now + LEAD_TARGETS * timeline.target:
            break
        _append(timeline, IDLE, _next_idle(timeline, idle), now=now)
    _prune(timeline)


def _next_live(timeline: Timeline, live: list[LiveRequest]) -> tuple[Clip | None, bool]:
    """The next chunk to publish, and whether an utterance is still to come."""
    for request in sorted(live, key=lambda r: r.pk):
        if request.pk <= timeline.done_pk:
            continue
        index = timeline.live_next if request.pk == timeline.live_pk else 0
        if request.cut or (request.finished and index >= len(request.chunks)):
            timeline.done_pk = request.pk
            continue
        if index >= len(request.chunks):
            return None, True
        timeline.live_pk, timeline.live_next = request.pk, index + 1
        return request.chunks[index], True
    return None, False


def _next_idle(timeline: Timeline, idle: list[Clip]) -> Clip:
    clip = idle[timeline.idle_next % len(idle)]
    timeline.idle_next = (timeline.idle_next + 1) % len(idle)
    return clip


def _append(timeline: Timeline, kind: str, clip: Clip, *, now: float) -> None:
    switch = bool(timeline.segments) and timeline.segments[-1].kind != kind
    if switch:
        timeline.disc_seq += 1
    segment = Segment(
        seq=timeline.next_seq,
        kind=kind,
        source=clip.source,
        duration=clip.duration,
        start=timeline.next_start,
        discontinuity=switch,
        disc_seq=timeline.disc_seq,
    )
    timeline.segments.append(segment)
    timeline.next_seq += 1
    timeline.next_start = round(timeline.next_start + clip.duration, 6)
    timeline.edge = max(timeline.edge, now) + clip.duration


def playlist_window(timeline: Timeline) -> list[Segment]:
    """The newest segments: at least WINDOW_MIN_SEGMENTS and 3 target durations."""
    window: list[Segment] = []
    total = 0.0
    for segment in reversed(timeline.segments):
        if len(window) >= WINDOW_MIN_SEGMENTS and total >= 3 * timeline.target:
            break
        window.insert(0, segment)
        total += segment.duration
    return window


def _prune(timeline: Timeline) -> None:
    """Forget segments well out of the window (a slow client may still fetch a few)."""
    keep = len(playlist_window(timeline)) + WINDOW_MIN_SEGMENTS
    del timeline.segments[:-keep]


def playlist_render(timeline: Timeline, *, segment_url: Callable[[Segment], str]) -> str:
    """The live media playlist (RFC 8216) of ``timeline``'s window."""
    window = playlist_window(timeline)
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{timeline.target}",
        f"#EXT-X-MEDIA-SEQUENCE:{window[0].seq}",
        # The first segment's own discontinuity is counted here instead of tagged.
        f"#EXT-X-DISCONTINUITY-SEQUENCE:{window[0].disc_seq}",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    for position, segment in enumerate(window):
        if segment.discontinuity and position > 0:
            lines.append("#EXT-X-DISCONTINUITY")
        lines.append(f"#EXTINF:{segment.duration:.3f},")
        lines.append(segment_url(segment))
    return "\n".join(lines) + "\n"


def timeline_segment(timeline: Timeline, name: str) -> Segment | None:
    match = SEGMENT_NAME.match(name)
    if match is None:
        return None
    for segment in timeline.segments:
        if segment.seq == int(match.group(2)) and segment.kind == match.group(1):
            return segment
    return None
