"""MPEG-TS packet surgery that makes independently muxed segments play as one stream.

HLS players read the segments of a playlist as one transport stream, and Apple's authoring
spec (7.2) wants its continuity counters to run on from segment to segment. Each segment here
comes from a fresh muxer, which starts every counter at 0. Instead of keeping state between
segments, each PID is padded to a multiple of 16 packets, so every segment starts each
counter at 0 and ends it at 15: any sequence of segments counts on without a gap.

Padding splits a few PES packets in two (the payload is unchanged, stuffing fills the rest)
and repeats the PAT and PMT, which players expect to see again and again anyway. The DVB
service table (SDT) is dropped: HLS has no use for it, and RFC 8216 (3.2) wants a segment to
open on its PAT and PMT.
"""

from __future__ import annotations

PACKET_SIZE = 188
SDT_PID = 0x11
PUSI = 0x40  # payload_unit_start_indicator, in the second header byte


def _pid(packet: bytes) -> int:
    return ((packet[1] & 0x1F) << 8) | packet[2]


def _has_payload(packet: bytes) -> bool:
    return bool(packet[3] & 0x10)


def _parts(packet: bytes) -> tuple[bytes, bytes]:
    """(adaptation field body without its length byte, payload)."""
    if not packet[3] & 0x20:
        return b"", packet[4:]
    length = packet[4]
    return packet[5 : 5 + length], packet[5 + length :]


def _is_pes(packet: bytes) -> bool:
    """A payload that starts a PES packet (PSI sections start with a pointer field)."""
    return _parts(packet)[1][:3] == b"\x00\x00\x01"


def _packet(first_bytes: bytes, adaptation: bytes, payload: bytes) -> bytes:
    """A packet of header bytes 1-2 ``first_bytes``, an adaptation field padded with
    stuffing to fill 188 bytes, and ``payload``; the counter is set later."""
    room = PACKET_SIZE - 4 - len(payload)
    if room == 0 and not adaptation:
        return b"\x47" + first_bytes + b"\x10" + payload
    if room > 1 and not adaptation:
        adaptation = b"\x00"  # no flags
    field = adaptation + b"\xff" * (room - 1 - len(adaptation))
    return b"\x47" + first_bytes + b"\x30" + bytes([room - 1]) + field + payload


def _split(packet: bytes) -> list[bytes]:
    """The packet's payload carried in two packets; a PES header stays whole in the first."""
    adaptation, payload = _parts(packet)
    head = 9 + payload[8] if packet[1] & PUSI else 0
    cut = head + (len(payload) - head) // 2
    continued = bytes([packet[1] & ~PUSI & 0xFF, packet[2]])
    return [_packet(packet[1:3], adaptation, payload[:cut]), _packet(continued, b"", payload[cut:])]


def _splittable(packet: bytes) -> bool:
    payload = _parts(packet)[1]
    head = 9 + payload[8] if packet[1] & PUSI and len(payload) > 8 else 0
    return len(payload) - head >= 2


def _pad_pes(packets: list[bytes], pid: int, missing: int) -> list[bytes]:
    """Split ``missing`` packets of ``pid``, earliest first (in passes, if need be)."""
    while missing:
        before, padded = missing, []
        for packet in packets:
            if missing and _pid(packet) == pid and _has_payload(packet) and _splittable(packet):
                padded.extend(_split(packet))
                missing -= 1
            else:
                padded.append(packet)
        packets = padded
        if missing == before:
            break  # nothing left to split: cannot happen with real audio or video
    return packets


def _pad_psi(packets: list[bytes], pid: int, missing: int) -> list[bytes]:
    """Repeat the first packet of a table ``missing`` times, right after it."""
    first = next(i for i, packet in enumerate(packets) if _pid(packet) == pid)
    return packets[: first + 1] + [packets[first]] * missing + packets[first + 1 :]


def _renumber(packets: list[bytes]) -> bytes:
    """Continuity counters from 0 in each PID; packets without payload do not count."""
    counts: dict[int, int] = {}
    out = bytearray()
    for packet in packets:
        pid = _pid(packet)
        if _has_payload(packet):
            counts[pid] = counts.get(pid, -1) + 1
        counter = counts.get(pid, -1) % 16
        out += packet[:3] + bytes([(packet[3] & 0xF0) | counter]) + packet[4:]
    return bytes(out)


def ts_continuity_pad(data: bytes) -> bytes:
    """``data`` (whole 188-byte packets) with each PID padded to a multiple of 16 packets
    carrying payload, counters renumbered from 0, and without the SDT."""
    packets = [data[i : i + PACKET_SIZE] for i in range(0, len(data), PACKET_SIZE)]
    packets = [packet for packet in packets if _pid(packet) != SDT_PID]
    counts: dict[int, int] = {}
    pes: set[int] = set()
    for packet in packets:
        if _has_payload(packet):
            counts[_pid(packet)] = counts.get(_pid(packet), 0) + 1
        if packet[1] & PUSI and _is_pes(packet):
            pes.add(_pid(packet))
    for pid, count in counts.items():
        missing = -count % 16
        if missing and pid in pes:
            packets = _pad_pes(packets, pid, missing)
        elif missing:
            packets = _pad_psi(packets, pid, missing)
    return _renumber(packets)
