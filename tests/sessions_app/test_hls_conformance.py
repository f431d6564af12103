"""HLS conformance: the real playlists and segments of a session's life, checked against
RFC 8216 and Apple's "HLS authoring specification for Apple devices" (cited as "Apple n.n").

Safari cannot run here, so a strict validator stands in for it: it parses the playlists
itself, reads the MPEG-TS packets by hand (PAT, PMT, PES headers, PCR, continuity counters,
SPS, ADTS) and the timestamps with PyAV, and plays the part of a client that reloads the
playlist on a clock it controls.
"""

from __future__ import annotations

import gzip
import io
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from urllib.parse import urlsplit

import av
import pytest
from rest_framework.test import APIClient

from sessions_app.hls import services
from sessions_app.models import StreamRequest, StreamSession
from sessions_app.tokens import player_token_make
from tests.factories import StreamRequestFactory
from tests.sessions_app.test_hls import _chunk, session  # noqa: F401 - a fixture

PLAYLIST_TYPES = ("application/vnd.apple.mpegurl", "audio/mpegurl")  # RFC 8216 4
# The playlist-wide tags of a live media playlist (each at most once, before any segment)...
ONCE = {"EXT-X-VERSION", "EXT-X-TARGETDURATION", "EXT-X-MEDIA-SEQUENCE"}
ONCE |= {"EXT-X-DISCONTINUITY-SEQUENCE", "EXT-X-INDEPENDENT-SEGMENTS"}
# ...and the tags of one segment; anything else is unexpected here.
SEGMENT_TAGS = {"EXTINF", "EXT-X-DISCONTINUITY", "EXT-X-PROGRAM-DATE-TIME"}
DATE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d)$")
H264, ADTS_AAC = 0x1B, 0x0F  # PMT stream types (ISO 13818-1 table 2-34)
TICK = 1 / 90000
AAC_FRAME = 1024 / 48000  # seconds


# -- playlists ----------------------------------------------------------------------------


@dataclass
class Entry:
    uri: str
    duration: float
    discontinuity: bool
    date_time: float  # EXT-X-PROGRAM-DATE-TIME, epoch seconds


@dataclass
class MediaPlaylist:
    version: int
    target: int
    sequence: int
    discontinuity_sequence: int
    entries: list[Entry]

    def numbered(self) -> list[tuple[int, int, Entry]]:
        """(media sequence number, discontinuity number, entry) of each segment."""
        out, disc = [], self.discontinuity_sequence
        for offset, entry in enumerate(self.entries):
            disc += entry.discontinuity and offset > 0
            out.append((self.sequence + offset, disc, entry))
        return out


def _lines(text: str) -> list[str]:
    """RFC 8216 4.1: UTF-8 without BOM or control characters; no stray whitespace."""
    assert not text.startswith("\ufeff"), "RFC 8216 4.1: no byte order mark"
    assert not re.search(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f]", text), "4.1: control char"
    lines = [line for line in text.split("\n") if line]
    assert all(line == line.strip() for line in lines), "RFC 8216 4.1: no whitespace"
    assert lines[0] == "#EXTM3U", "RFC 8216 4.3.1.1: #EXTM3U first"
    return lines


def _tag(line: str) -> tuple[str, str]:
    name, _, value = line[1:].partition(":")
    return name, value


def parse_media_playlist(text: str) -> MediaPlaylist:
    """A live media playlist, checked line by line (RFC 8216 4.3)."""
    tags: dict[str, str] = {}
    entries: list[Entry] = []
    pending: dict[str, str] = {}
    for line in _lines(text)[1:]:
        if not line.startswith("#"):
            assert "EXTINF" in pending, f"RFC 8216 4.3.2.1: a URI without EXTINF: {line}"
            entries.append(_entry(line, pending))
            pending = {}
            continue
        name, value = _tag(line)
        assert name in ONCE | SEGMENT_TAGS, f"unexpected in a live media playlist: {line}"
        if name in ONCE:
            assert name not in tags, f"RFC 8216 4.3.3: {name} twice"
            assert not entries and not pending, f"RFC 8216 4.3.3: {name} after a segment"
            tags[name] = value
        else:
            assert name not in pending, f"{name} twice for one segment"
            pending[name] = value
    assert not pending, "RFC 8216 4.3.2: segment tags without a URI at the end"
    for name in ("EXT-X-TARGETDURATION", "EXT-X-MEDIA-SEQUENCE"):
        assert name in tags, f"RFC 8216 4.3.3: {name} missing"
    assert "EXT-X-DISCONTINUITY-SEQUENCE" in tags, "Apple 8.17: EXT-X-DISCONTINUITY-SEQUENCE"
    return MediaPlaylist(
        version=int(tags.get("EXT-X-VERSION", "1")),
        target=int(tags["EXT-X-TARGETDURATION"]),
        sequence=int(tags["EXT-X-MEDIA-SEQUENCE"]),
        discontinuity_sequence=int(tags["EXT-X-DISCONTINUITY-SEQUENCE"]),
        entries=entries,
    )


def _entry(uri: str, tags: dict[str, str]) -> Entry:
    duration, comma, _title = tags["EXTINF"].partition(",")
    assert comma and re.fullmatch(r"\d+(\.\d+)?", duration), f"RFC 8216 4.3.2.1: {duration}"
    stamp = tags.get("EXT-X-PROGRAM-DATE-TIME")
    assert stamp is not None, "Apple 8.4: EXT-X-PROGRAM-DATE-TIME in a live playlist"
    assert DATE_TIME.match(stamp), f"RFC 8216 4.3.2.6: date-time to the ms: {stamp}"
    date_time = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    assert not tags.get("EXT-X-DISCONTINUITY"), "RFC 8216 4.3.2.3: a tag without value"
    return Entry(uri, float(duration), "EXT-X-DISCONTINUITY" in tags, date_time)


def check_media_playlist(playlist: MediaPlaylist, text: str) -> None:
    """The rules one live media playlist must meet by itself."""
    needed = 3 if any("." in line for line in text.split("\n") if "#EXTINF:" in line) else 1
    assert playlist.version == needed, f"RFC 8216 7: version {playlist.version} for {needed}"
    for entry in playlist.entries:
        assert entry.duration > 0, "RFC 8216 4.3.2.1: a positive duration"
        assert round(entry.duration) <= playlist.target, "RFC 8216 4.3.3.1: over the target"
        assert entry.duration <= playlist.target + 0.5, "Apple 7.7: over the target"
    assert len(playlist.entries) >= 6, "Apple 8.11: at least six segments in a live playlist"
    total = sum(entry.duration for entry in playlist.entries)
    assert total >= 3 * playlist.target, "RFC 8216 6.2.2: at least 3 target durations"
    for before, after in zip(playlist.entries, playlist.entries[1:]):
        if not after.discontinuity:  # PDT follows the media clock within a millisecond
            step = after.date_time - before.date_time
            assert abs(step - before.duration) <= 0.0015, "RFC 8216 4.3.2.6: PDT vs EXTINF"


def parse_master_playlist(text: str) -> tuple[dict[str, str], str]:
    """The one EXT-X-STREAM-INF of a multivariant playlist: (its attributes, its URI)."""
    lines = _lines(text)
    streams = [i for i, line in enumerate(lines) if line.startswith("#EXT-X-STREAM-INF:")]
    assert len(streams) == 1, "one variant"
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in lines, "Apple 9.11: EXT-X-INDEPENDENT-SEGMENTS"
    uri = lines[streams[0] + 1]
    assert not uri.startswith("#"), "RFC 8216 4.3.4.2: EXT-X-STREAM-INF is followed by a URI"
    found = re.findall(r'([A-Z0-9-]+)=("[^"]*"|[^",]*)', _tag(lines[streams[0]])[1])
    attributes = {name: value for name, value in found}
    assert "BANDWIDTH" in attributes, "RFC 8216 4.3.4.2: BANDWIDTH"
    assert "AVERAGE-BANDWIDTH" in attributes, "Apple 9.14: AVERAGE-BANDWIDTH"
    assert attributes.get("CODECS", "").startswith('"'), "Apple 9.1: CODECS, quoted"
    assert re.fullmatch(r"\d+x\d+", attributes.get("RESOLUTION", "")), "Apple 9.2: RESOLUTION"
    assert "FRAME-RATE" in attributes, "Apple 9.15: FRAME-RATE"
    assert float(attributes["FRAME-RATE"]) <= 60, "Apple 1.19: at most 60 fps"
    return attributes, uri


# -- MPEG-TS ------------------------------------------------------------------------------


@dataclass
class TsPacket:
    pid: int
    start: bool  # payload_unit_start_indicator
    counter: int
    has_payload: bool
    pcr: float | None  # seconds
    payload: bytes


def ts_packets(data: bytes) -> list[TsPacket]:
    assert data and len(data) % 188 == 0, "ISO 13818-1: whole 188-byte packets"
    packets = []
    for offset in range(0, len(data), 188):
        raw = data[offset : offset + 188]
        assert raw[0] == 0x47, f"ISO 13818-1: sync byte at {offset}"
        control, body, pcr = (raw[3] >> 4) & 3, 4, None
        assert control, "ISO 13818-1: adaptation_field_control 00 is reserved"
        if control & 2:
            length = raw[4]
            if length and raw[5] & 0x10:
                b = raw[6:12]
                base = (b[0] << 25) | (b[1] << 17) | (b[2] << 9) | (b[3] << 1) | (b[4] >> 7)
                pcr = (base * 300 + ((b[4] & 1) << 8 | b[5])) / 27_000_000
            body = 5 + length
        pid = (raw[1] & 0x1F) << 8 | raw[2]
        start = bool(raw[1] & 0x40)
        packets.append(TsPacket(pid, start, raw[3] & 15, bool(control & 1), pcr, raw[body:]))
    return packets


def _crc32_mpeg(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
    return crc


def _section(packet: TsPacket, table_id: int) -> bytes:
    assert packet.start, "a table opens its packet"
    section = packet.payload[1 + packet.payload[0] :]
    length = (section[1] & 0x0F) << 8 | section[2]
    section = section[: 3 + length]
    assert section[0] == table_id, f"table id {section[0]} where {table_id} belongs"
    assert _crc32_mpeg(section) == 0, "ISO 13818-1: the table's CRC_32"
    return section


def _program(packets: list[TsPacket]) -> tuple[int, dict[int, int]]:
    """(PCR PID, stream type by PID) from the PAT and PMT that open the segment."""
    assert packets[0].pid == 0, "RFC 8216 3.2: a segment opens on its PAT"
    pat = _section(packets[0], 0)
    programs = [pat[i : i + 4] for i in range(8, len(pat) - 4, 4)]
    pmt_pids = [(p[2] & 0x1F) << 8 | p[3] for p in programs if p[0] << 8 | p[1]]
    assert len(pmt_pids) == 1, "RFC 8216 3.2: a single MPEG-2 program"
    first_pes = next(i for i, p in enumerate(packets) if p.pid not in (0, pmt_pids[0]))
    pmts = [p for p in packets[:first_pes] if p.pid == pmt_pids[0]]
    assert pmts, "RFC 8216 3.2: the PMT comes before any media"
    pmt = _section(pmts[0], 2)
    offset = 12 + ((pmt[10] & 0x0F) << 8 | pmt[11])
    streams = {}
    while offset < len(pmt) - 4:
        streams[(pmt[offset + 1] & 0x1F) << 8 | pmt[offset + 2]] = pmt[offset]
        offset += 5 + ((pmt[offset + 3] & 0x0F) << 8 | pmt[offset + 4])
    assert sorted(streams.values()) == [ADTS_AAC, H264], "one H.264 and one ADTS AAC stream"
    return (pmt[8] & 0x1F) << 8 | pmt[9], streams


def _pes_units(packets: list[TsPacket], pid: int) -> list[bytes]:
    units: list[bytearray] = []
    for packet in packets:
        if packet.pid == pid and packet.has_payload:
            if packet.start:
                units.append(bytearray())
            assert units, "a PES opens its PID's first packet"
            units[-1] += packet.payload
    return [bytes(unit) for unit in units]


def _timestamp(b: bytes) -> float:
    return ((b[0] >> 1 & 7) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1) / 9e4


def _pes(unit: bytes) -> tuple[float, float, bytes]:
    """(PTS, DTS, elementary stream data) of one PES packet."""
    assert unit[:3] == b"\x00\x00\x01", "a PES start code"
    flags, header = unit[7], 9 + unit[8]
    assert flags & 0x80, "every PES here carries a PTS"
    pts = _timestamp(unit[9:14])
    dts = _timestamp(unit[14:19]) if flags & 0x40 else pts
    return pts, dts, unit[header:]


def _nal_types(data: bytes) -> list[tuple[int, bytes]]:
    nals = re.split(b"\x00\x00\x01", data)[1:]
    return [(nal[0] & 0x1F, nal.rstrip(b"\x00")) for nal in nals if nal]


def _adts_profiles(data: bytes) -> set[tuple[int, int, int]]:
    """(audio object type, sampling index, channels) of each ADTS frame; they fill ``data``."""
    found, offset = set(), 0
    while offset < len(data):
        h = data[offset : offset + 7]
        assert h[0] == 0xFF and h[1] & 0xF6 == 0xF0, "Apple 10.4: AAC in ADTS frames"
        found.add(((h[2] >> 6) + 1, (h[2] >> 2) & 15, (h[2] & 1) << 2 | h[3] >> 6))
        offset += (h[3] & 3) << 11 | h[4] << 3 | h[5] >> 5
    assert offset == len(data), "whole ADTS frames in each PES"
    return found


@dataclass
class SegmentFacts:
    """What the cross-segment rules need to know of one segment."""

    counters: dict[int, tuple[int, int]]  # PID -> (first, last) continuity counter
    pcrs: list[float]
    avc1: str
    video: list[tuple[float, float]]  # (PTS, DTS), decode order
    frame: float  # seconds per video frame
    audio: list[tuple[float, float]]  # (PTS, duration) of each AAC frame
    size: str  # decoded WIDTHxHEIGHT


def check_segment(data: bytes, duration: float) -> SegmentFacts:
    """The rules one MPEG-TS segment must meet by itself."""
    packets = ts_packets(data)
    pcr_pid, streams = _program(packets)
    video_pid = next(pid for pid, kind in streams.items() if kind == H264)
    audio_pid = next(pid for pid, kind in streams.items() if kind == ADTS_AAC)
    assert pcr_pid == video_pid, "the PCR rides on the video"
    counters = _check_counters(packets)
    pcrs = _check_pcr(packets, pcr_pid, [video_pid, audio_pid])
    units = [_pes(unit) for unit in _pes_units(packets, video_pid)]
    nals = [kind for kind, _ in _nal_types(units[0][2])]
    assert 5 in nals, "Apple 7.4: a video segment starts with an IDR frame"
    assert {7, 8} <= set(nals[: nals.index(5)]), "SPS and PPS in-band before the first IDR"
    assert 1 not in nals[: nals.index(5)], "no other picture before the IDR"
    sps = next(nal for kind, nal in _nal_types(units[0][2]) if kind == 7)
    assert sps[1] in (66, 77, 100) and sps[3] <= 52, "Apple 1.3b: at most High profile, 5.2"
    for _, _, es in [_pes(unit) for unit in _pes_units(packets, audio_pid)]:
        assert {kind for kind, _, _ in _adts_profiles(es)} == {2}, "Apple 2.3: AAC-LC"
    video, frame, audio, size = _check_timestamps(data, duration)
    avc1 = f"avc1.{sps[1]:02x}{sps[2]:02x}{sps[3]:02x}"
    return SegmentFacts(counters, pcrs, avc1, video, frame, audio, size)


def _check_counters(packets: list[TsPacket]) -> dict[int, tuple[int, int]]:
    """ISO 13818-1 2.4.3.3: each PID's counter steps by one per packet with payload."""
    counters: dict[int, tuple[int, int]] = {}
    for packet in packets:
        if packet.pid not in counters:
            counters[packet.pid] = (packet.counter, packet.counter)
            continue
        first, last = counters[packet.pid]
        expected = (last + 1) % 16 if packet.has_payload else last
        assert packet.counter == expected, f"continuity counter of PID {packet.pid:#x}"
        counters[packet.pid] = (first, packet.counter)
    return counters


def _check_pcr(packets: list[TsPacket], pcr_pid: int, pids: list[int]) -> list[float]:
    """A PCR opens the segment, comes every 100 ms, and each PES arrives before its DTS."""
    pcrs: list[float] = []
    for packet in packets:
        if packet.pid == pcr_pid and packet.pcr is not None:
            assert not pcrs or 0 < packet.pcr - pcrs[-1] <= 0.1, "ISO 13818-1: PCR interval"
            pcrs.append(packet.pcr)
        if packet.pid in pids and packet.start:
            assert pcrs, "RFC 8216 3.2 / ISO 13818-1: a PCR before the first PES"
            assert _pes(packet.payload)[1] >= pcrs[-1], "ISO 13818-1 T-STD: a PES after its DTS"
    return pcrs


def _check_timestamps(
    data: bytes, duration: float
) -> tuple[list[tuple[float, float]], float, list[tuple[float, float]], str]:
    """With PyAV: every frame decodes, the video lasts the EXTINF (Apple 8.1), the audio
    covers it within a frame, and AAC frames run on."""
    video: list[tuple[float, float]] = []
    audio: list[tuple[float, float]] = []
    decoded = 0
    with av.open(io.BytesIO(data), format="mpegts") as container:
        context = container.streams.video[0].codec_context
        size = f"{context.width}x{context.height}"
        for packet in container.demux():
            if packet.stream.type == "video":
                decoded += len(packet.decode())
            if packet.pts is None:
                continue  # the flush packet
            base = packet.time_base
            if packet.stream.type == "video":
                video.append((float(packet.pts * base), float(packet.dts * base)))
            else:
                audio.append((float(packet.pts * base), float(packet.duration * base)))
    assert decoded == len(video), "every video frame decodes"
    assert all(a[1] < b[1] for a, b in zip(video, video[1:])), "DTS increase"
    starts = sorted(pts for pts, _ in video)
    frame = (starts[-1] - starts[0]) / (len(starts) - 1) if len(starts) > 1 else duration
    assert abs(starts[-1] + frame - starts[0] - duration) <= 0.001, "Apple 8.1: EXTINF"
    for (pts, length), (after, _) in zip(audio, audio[1:]):
        assert abs(pts + length - after) <= TICK, "AAC frames run on within a segment"
    assert abs(audio[0][0] - starts[0]) <= frame, "audio and video start together"
    # Whole AAC frames: a segment cut from its own clip ends its audio inside the EXTINF;
    # one cut from an utterance's continuous track may end up to a frame past it (the next
    # segment then starts with the following frame).
    end = audio[-1][0] + audio[-1][1] - starts[0]
    assert abs(end - duration) < AAC_FRAME, "the audio lasts the EXTINF, within a frame"
    return video, frame, audio, size


def check_run(before: SegmentFacts, after: SegmentFacts, duration: float) -> None:
    """Two segments in a row without a discontinuity: one stream (Apple 7.1, 7.2, 8.13)."""
    for pid, (first, _) in after.counters.items():
        assert first == (before.counters[pid][1] + 1) % 16, "Apple 7.2: counters run on"
    assert after.pcrs[0] > before.pcrs[-1], "Apple 7.2: the PCR runs on"
    assert after.video[0][1] > before.video[-1][1], "Apple 7.2: DTS run on"
    start = min(pts for pts, _ in before.video)
    step = min(pts for pts, _ in after.video) - start
    assert abs(step - duration) <= 0.001, "Apple 7.1, 8.1: video runs on by the EXTINF"
    gap = after.audio[0][0] - (before.audio[-1][0] + before.audio[-1][1])
    assert gap >= -TICK, "Apple 7.2: audio timestamps never step back"
    assert gap < after.audio[0][1], "Apple 7.1: audio runs on (a gap under one AAC frame)"
    assert (after.avc1, after.size) == (before.avc1, before.size), "Apple 8.13: same encoding"


def peak_bit_rate(sizes: list[tuple[int, float]], target: int) -> float:
    """RFC 8216 4.3.4.2: the largest bit rate of any run of segments (bytes, seconds) that
    lasts between 0.5 and 1.5 target durations."""
    peak = 0.0
    for first in range(len(sizes)):
        total, seconds = 0, 0.0
        for size, duration in sizes[first:]:
            total, seconds = total + size, seconds + duration
            if seconds > 1.5 * target:
                break
            if seconds >= 0.5 * target:
                peak = max(peak, total * 8 / seconds)
    return peak


def check_variant(
    attributes: dict[str, str], segments: list[tuple[SegmentFacts, int, float]], target: int
) -> None:
    """Real segments (facts, bytes, EXTINF), in order, against what the multivariant
    playlist says of them (RFC 8216 4.3.4.2; Apple 1.28, 1.29)."""
    video, audio = attributes["CODECS"].strip('"').split(",")
    assert audio == "mp4a.40.2", "RFC 6381: AAC-LC, as every ADTS header says"
    for facts, _, _ in segments:  # CODECS covers every segment: same profile, level <=
        assert facts.avc1[:9] == video[:9] and facts.avc1[9:] <= video[9:], facts.avc1
        assert facts.size == attributes["RESOLUTION"], "RFC 8216 4.3.4.2: RESOLUTION"
        assert abs(1 / facts.frame - float(attributes["FRAME-RATE"])) < 0.01, "FRAME-RATE"
    sizes = [(size, seconds) for _, size, seconds in segments]
    peak = peak_bit_rate(sizes, target)
    assert peak < 1.25 * int(attributes["BANDWIDTH"]), "Apple 1.29: measured peak"
    average = sum(size for size, _ in sizes) * 8 / sum(seconds for _, seconds in sizes)
    assert average < 1.1 * int(attributes["AVERAGE-BANDWIDTH"]), "Apple 1.28: average"


# -- a client of a session's stream -------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now


@dataclass
class Seen:
    entry: Entry
    discontinuity: int  # its discontinuity number
    longest: float  # seconds: the longest playlist that listed it
    gone: float | None = None  # when a reload first left it out
    checked: bool = False


@dataclass
class Player:
    """A client of one session's stream on a clock the test moves (RFC 8216 6.3): it reloads
    the playlist, fetches each new segment and checks it, playlist and segment alike."""

    session: StreamSession
    clock: Clock
    token: str  # a player token, as in the session's player_url
    client: APIClient = field(default_factory=APIClient)
    seen: dict[int, Seen] = field(default_factory=dict)
    data: dict[int, bytes] = field(default_factory=dict)
    facts: dict[int, SegmentFacts] = field(default_factory=dict)
    last: tuple[float, MediaPlaylist] | None = None

    def playlist(self, name: str) -> str:
        """A playlist's text, fetched as Safari does (gzip welcome)."""
        response = self.client.get(
            f"/hls/{self.session.session_id}/{name}?token={self.token}",
            HTTP_ACCEPT_ENCODING="gzip, deflate",
        )
        assert response.status_code == 200, response.content
        assert response["Content-Type"] in PLAYLIST_TYPES, "RFC 8216 4: the media type"
        assert re.search(r"no-store|no-cache|max-age=[01]\b", response["Cache-Control"])
        assert response["Access-Control-Allow-Origin"] == "*", "players on other origins"
        assert response.get("Content-Encoding") == "gzip", "Apple 10.1: gzipped playlists"
        return gzip.decompress(response.content).decode()

    def segment(self, uri: str) -> bytes:
        response = self.client.get(uri)
        assert response.status_code == 200, (uri, response.content)
        assert response["Content-Type"] == "video/mp2t", "Apple 10.4: the media type"
        assert "no-store" not in response["Cache-Control"], "a segment never changes"
        assert response["Access-Control-Allow-Origin"] == "*", "players on other origins"
        return response.content

    def master(self) -> dict[str, str]:
        attributes, uri = parse_master_playlist(self.playlist("master.m3u8"))
        url = urlsplit(uri)
        assert url.path == f"/hls/{self.session.session_id}/playlist.m3u8", uri
        return attributes

    def play(self, seconds: float, every: float = 0.5) -> None:
        """Reload every ``every`` seconds (under a target duration) for ``seconds``."""
        for _ in range(round(seconds / every)):
            self.reload()
            self.wait(every)

    def reload(self) -> MediaPlaylist:
        text = self.playlist("playlist.m3u8")
        playlist = parse_media_playlist(text)
        check_media_playlist(playlist, text)
        self._check_update(playlist)
        for seq, disc, entry in playlist.numbered():
            if seq not in self.data:
                self._fetch(seq, disc, entry)
        self.last = (self.clock.now, playlist)
        return playlist

    def _check_update(self, playlist: MediaPlaylist) -> None:
        """RFC 8216 6.2.1: a reload only drops segments from the start, appends at the end,
        and leaves every segment it keeps as it was."""
        if self.last is not None:
            when, last = self.last
            assert playlist.target == last.target, "RFC 8216 6.2.1: the target never changes"
            assert playlist.sequence >= last.sequence, "RFC 8216 6.2.1: media sequence grows"
            assert playlist.discontinuity_sequence >= last.discontinuity_sequence
            if self.clock.now - when <= last.target:
                assert playlist.sequence <= last.sequence + len(last.entries), (
                    "RFC 8216 6.3.4: a client reloading each target duration sees every segment"
                )
        total = sum(entry.duration for entry in playlist.entries)
        listed = set()
        for seq, disc, entry in playlist.numbered():
            listed.add(seq)
            seen = self.seen.setdefault(seq, Seen(entry, disc, total))
            assert seen.gone is None, "RFC 8216 6.2.1: a removed segment never comes back"
            kept = (entry.uri, entry.duration, entry.date_time, disc)
            was = (seen.entry.uri, seen.entry.duration, seen.entry.date_time, seen.discontinuity)
            assert kept == was, "RFC 8216 6.2.1: a published segment never changes"
            seen.longest = max(seen.longest, total)
        for seq, seen in self.seen.items():
            if seq not in listed and seen.gone is None:
                assert seq < playlist.sequence, "RFC 8216 6.2.1: removed from the start only"
                seen.gone = self.clock.now

    def _fetch(self, seq: int, disc: int, entry: Entry) -> None:
        self.data[seq] = self.segment(entry.uri)
        self.facts[seq] = check_segment(self.data[seq], entry.duration)
        before = self.seen.get(seq - 1)
        if before is not None and before.discontinuity == disc:
            check_run(self.facts[seq - 1], self.facts[seq], before.entry.duration)

    def wait(self, seconds: float) -> None:
        """Move the clock on; first fetch again each removed segment that the server must
        still serve until then (RFC 8216 6.2.2): it must be there, and unchanged."""
        for seq, seen in self.seen.items():
            if seen.gone is None or seen.checked:
                continue
            if seen.gone + seen.entry.duration + seen.longest <= self.clock.now + seconds:
                response = self.client.get(seen.entry.uri)
                assert response.status_code == 200, "RFC 8216 6.2.2: removed, still served"
                assert response.content == self.data[seq], "the same URI, the same bytes"
                seen.checked = True
        self.clock.now += seconds

    def kinds(self) -> list[tuple[str, int]]:
        """The runs of segment kinds played, e.g. [("idle", 9), ("live", 8), ...]."""
        runs: list[tuple[str, int]] = []
        for seq in sorted(self.seen):
            kind = self.kind(seq)
            if runs and runs[-1][0] == kind:
                runs[-1] = (kind, runs[-1][1] + 1)
            else:
                runs.append((kind, 1))
        return runs

    def check_stream(self, attributes: dict[str, str]) -> None:
        """The whole stream against what the multivariant playlist says of it, and the
        discontinuities against the switches idle <-> live."""
        segments = [
            (self.facts[seq], len(self.data[seq]), self.seen[seq].entry.duration)
            for seq in sorted(self.data)
        ]
        assert self.last is not None
        check_variant(attributes, segments, self.last[1].target)
        for seq in sorted(self.seen)[1:]:
            switch = self.kind(seq) != self.kind(seq - 1)
            changed = self.seen[seq].discontinuity != self.seen[seq - 1].discontinuity
            assert changed == switch, "RFC 8216 4.3.2.3: a discontinuity at each new encoder"

    def kind(self, seq: int) -> str:
        return urlsplit(self.seen[seq].entry.uri).path.rsplit("/", 1)[1].split("_")[0]


# -- a session's life ---------------------------------------------------------------------


@pytest.fixture
def player(session: StreamSession, monkeypatch: pytest.MonkeyPatch) -> Player:  # noqa: F811
    clock = Clock(time.time())
    monkeypatch.setattr(services, "time", SimpleNamespace(time=lambda: clock.now))
    return Player(session, clock, player_token_make(session_id=session.session_id))


def test_an_idle_stream_is_conformant_as_its_window_slides(player: Player):
    variant = player.master()
    player.play(seconds=10)
    assert player.kinds() == [("idle", len(player.seen))]
    assert len(player.seen) > 2 * len(player.last[1].entries)  # the window slid on
    assert any(seen.checked for seen in player.seen.values())  # ...and kept what it dropped
    player.check_stream(variant)


def test_a_whole_session_is_conformant(player: Player, session: StreamSession):  # noqa: F811
    variant = player.master()
    player.play(seconds=2)
    # An utterance generated faster than real time: all its chunks at once.
    fast = StreamRequestFactory(session=session, status=StreamRequest.Status.STREAMING)
    for index in range(8):
        _chunk(session, fast, index, 25 if index < 7 else 13)
    StreamRequest.objects.filter(pk=fast.pk).update(status=StreamRequest.Status.COMPLETED)
    player.play(seconds=10)
    # One slower than real time, interrupted after two chunks.
    slow = StreamRequestFactory(session=session, status=StreamRequest.Status.STREAMING)
    _chunk(session, slow, 0, 25)
    player.play(seconds=1)
    _chunk(session, slow, 1, 25)
    player.play(seconds=1)
    StreamRequest.objects.filter(pk=slow.pk).update(status=StreamRequest.Status.INTERRUPTED)
    _chunk(session, slow, 2, 25)  # too late: the cut drops it
    player.play(seconds=10)
    kinds = [kind for kind, _ in player.kinds()]
    assert kinds == ["idle", "live", "idle", "live", "idle"], player.kinds()
    assert [count for kind, count in player.kinds() if kind == "live"] == [8, 2]
    player.check_stream(variant)
