"""The HLS timeline of a session, and its playlist: pure data and pure functions.

A timeline is the list of segments a session's playlist has published. Each playlist
request extends it (:func:`timeline_extend`): every chunk of the current utterance that
exists, else idle parts, paced by the wall clock. Once published, a segment never changes.

The playlist lists a window of it (:func:`playlist_window`) that follows the wall clock, so a
player that reloads the playlist now and then sees every segment even when an utterance is
published faster than real time; a segment that left the window stays available for as long
as RFC 8216 (6.2.2) asks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

WINDOW_MIN_SEGMENTS = 6  # Apple's authoring spec 8.11; and 3 target durations (RFC 8216 6.2.2)
# Players stay about 3 target durations behind the playlist's end (RFC 8216 6.3.3), which
# runs LEAD_TARGETS ahead of the clock: the window keeps what was due this long ago.
HOLD_TARGETS = 4
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
    due: float = 0.0  # wall-clock time (epoch s) at which it has played, as paced
    gone: float | None = None  # when it left the playlist window

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
    epoch: float | None = None  # wall-clock time of media time 0 (EXT-X-PROGRAM-DATE-TIME)
    first: int = 0  # the media sequence number that opens the playlist window
    longest: float = 0.0  # seconds: the longest playlist served so far

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Timeline:
        segments = [Segment(**segment) for segment in data.pop("segments")]
        return cls(segments=segments, **data)


@dataclass(frozen=True)
class Variant:
    """The stream as a multivariant playlist describes it (RFC 8216 4.3.4.2)."""

    bandwidth: int  # bits per second: the peak segment bit rate expected
    average_bandwidth: int
    codecs: str  # RFC 6381, e.g. "avc1.64001f,mp4a.40.2"
    width: int
    height: int
    frame_rate: float


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
    timeline.epoch = now - timeline.next_start
    for segment in timeline.segments:
        segment.due = timeline.epoch + segment.start + segment.duration
    _slide(timeline, now=now)
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
    _slide(timeline, now=now)


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
    segment.due = timeline.edge


def playlist_window(timeline: Timeline, *, now: float) -> list[Segment]:
    """The segments to list at ``now``: every one due less than HOLD_TARGETS ago, and at
    least WINDOW_MIN_SEGMENTS and 3 target durations. Never earlier than the last window."""
    window: list[Segment] = []
    total = 0.0
    for segment in reversed(timeline.segments):
        short = len(window) < WINDOW_MIN_SEGMENTS or total < 3 * timeline.target
        recent = segment.due > now - HOLD_TARGETS * timeline.target
        if segment.seq < timeline.first or not (short or recent):
            break
        window.insert(0, segment)
        total += segment.duration
    return window


def _slide(timeline: Timeline, *, now: float) -> None:
    """Move the window to ``now``. A segment that left it stays available for its duration
    plus that of the longest playlist served (RFC 8216 6.2.2), and is then forgotten."""
    window = playlist_window(timeline, now=now)
    timeline.first = window[0].seq
    timeline.longest = max(timeline.longest, sum(segment.duration for segment in window))
    kept = []
    for segment in timeline.segments:
        if segment.seq < timeline.first and segment.gone is None:
            segment.gone = now
        if segment.gone is None or now < segment.gone + segment.duration + timeline.longest:
            kept.append(segment)
    timeline.segments = kept


def _date_time(seconds: float) -> str:
    """An epoch time as RFC 3339 in UTC, to the millisecond (RFC 8216 4.3.2.6)."""
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def playlist_render(timeline: Timeline, *, segment_url: Callable[[Segment], str]) -> str:
    """The live media playlist (RFC 8216) of ``timeline``'s window. EXTINF has microsecond
    precision, so that durations add up to the media's (Apple's authoring spec 8.1), and
    each segment has its EXT-X-PROGRAM-DATE-TIME (8.4) on the media clock."""
    window = [segment for segment in timeline.segments if segment.seq >= timeline.first]
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
        if timeline.epoch is not None:  # None: a timeline stored by an earlier version
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_date_time(timeline.epoch + segment.start)}")
        lines.append(f"#EXTINF:{segment.duration:.6f},")
        lines.append(segment_url(segment))
    return "\n".join(lines) + "\n"


def master_render(variant: Variant, *, uri: str) -> str:
    """A multivariant playlist of one variant: ``uri``, the live media playlist. Apple
    devices want CODECS, RESOLUTION, AVERAGE-BANDWIDTH and FRAME-RATE on it (authoring spec
    9.1, 9.2, 9.14, 9.15), and learn from it what to expect before the first segment."""
    attributes = (
        f"BANDWIDTH={variant.bandwidth},AVERAGE-BANDWIDTH={variant.average_bandwidth},"
        f'CODECS="{variant.codecs}",RESOLUTION={variant.width}x{variant.height},'
        f"FRAME-RATE={variant.frame_rate:.3f}"
    )
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        f"#EXT-X-STREAM-INF:{attributes}",
        uri,
    ]
    return "\n".join(lines) + "\n"


def timeline_segment(timeline: Timeline, name: str) -> Segment | None:
    match = SEGMENT_NAME.match(name)
    if match is None:
        return None
    for segment in timeline.segments:
        if segment.seq == int(match.group(2)) and segment.kind == match.group(1):
            return segment
    return None
