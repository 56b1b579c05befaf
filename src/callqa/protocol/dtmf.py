"""RFC 4733 (formerly 2833) telephone events: DTMF digits from RTP event packets.

An event is carried by several packets with the same RTP timestamp (the event's start) and a growing
duration; the last ones have the End bit set. One digit per distinct timestamp.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from callqa.protocol.rtp import RtpPacket

DIGITS = "0123456789*#ABCD"


@dataclass(frozen=True, slots=True)
class DtmfEvent:
    digit: str
    start: float  # arrival of the first packet, seconds
    duration_ms: float
    ended: bool


def looks_like_event(payload: bytes) -> bool:
    return len(payload) == 4 and payload[0] <= 16 and payload[1] & 0x40 == 0


def event_payload_type(packets: Sequence[RtpPacket], encodings: dict[int, tuple[str, int]]) -> int | None:
    """The telephone-event payload type: from the SDP, else a dynamic type whose packets all look like events."""
    for pt, (name, _) in encodings.items():
        if name.lower() == "telephone-event":
            return pt
    dynamic = {p.pt for p in packets if p.pt >= 96}
    for pt in sorted(dynamic):
        mine = [p for p in packets if p.pt == pt]
        if all(looks_like_event(p.payload) for p in mine):
            return pt
    return None


def events(packets: Sequence[RtpPacket], encodings: dict[int, tuple[str, int]], clock: int = 8000) -> list[DtmfEvent]:
    pt = event_payload_type(packets, encodings)
    if pt is None:
        return []
    clock = (encodings.get(pt) or ("", clock))[1] or clock
    found: dict[int, list[RtpPacket]] = {}
    for p in packets:
        if p.pt == pt and looks_like_event(p.payload):
            found.setdefault(p.timestamp, []).append(p)
    out = []
    for group in sorted(found.values(), key=lambda g: g[0].arrival):
        code = group[0].payload[0]
        duration = max(int.from_bytes(p.payload[2:4], "big") for p in group)
        ended = any(p.payload[1] & 0x80 for p in group)
        digit = DIGITS[code] if code < len(DIGITS) else "flash"
        out.append(DtmfEvent(digit, group[0].arrival, 1000.0 * duration / clock, ended))
    return out
