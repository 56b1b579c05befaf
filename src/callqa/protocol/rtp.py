"""RTP (RFC 3550): header parsing and per-stream statistics computed the way Wireshark's RTP analysis does,
so packets, lost, max delta and jitter agree with ``tshark -z rtp,streams``.

Statistics take arrival times as arguments; sequence and timestamp wrap-around live in ``unwrap``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from callqa.errors import ParseError

RTP_VERSION = 2
PT_CN = 13
PT_CN_OLD = 19
# RFC 3551 static payload types: (encoding name, clock rate)
STATIC_PT: dict[int, tuple[str, int]] = {
    0: ("PCMU", 8000), 3: ("GSM", 8000), 4: ("G723", 8000), 5: ("DVI4", 8000), 6: ("DVI4", 16000),
    7: ("LPC", 8000), 8: ("PCMA", 8000), 9: ("G722", 8000), 10: ("L16", 44100), 11: ("L16", 44100),
    12: ("QCELP", 8000), 13: ("CN", 8000), 14: ("MPA", 90000), 15: ("G728", 8000), 16: ("DVI4", 11025),
    17: ("DVI4", 22050), 18: ("G729", 8000), 19: ("CN", 8000), 25: ("CelB", 90000), 26: ("JPEG", 90000),
    28: ("nv", 90000), 31: ("H261", 90000), 32: ("MPV", 90000), 33: ("MP2T", 90000), 34: ("H263", 90000),
}  # fmt: skip


def encoding_of(pt: int, encodings: dict[int, tuple[str, int]]) -> tuple[str, int]:
    """(name, clock) of a payload type: the SDP's map first, then RFC 3551's static types, else ('', 0)."""
    return encodings.get(pt) or STATIC_PT.get(pt) or ("", 0)


# clock rates of common dynamic encodings, by name (IANA media subtypes)
DYNAMIC_CLOCK = {"amr": 8000, "amr-wb": 16000, "evs": 16000, "g7221": 16000, "opus": 48000, "ilbc": 8000,
                 "speex": 8000, "telephone-event": 8000, "red": 1000, "t140": 1000, "h264": 90000}  # fmt: skip


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One received RTP packet: arrival time (seconds), header fields and payload."""

    arrival: float  # seconds
    seq: int
    timestamp: int
    pt: int
    marker: bool
    payload: bytes


@dataclass(frozen=True, slots=True)
class RtpHeader:
    version: int
    padding: bool
    marker: bool
    payload_type: int
    seq: int
    timestamp: int
    ssrc: int
    payload: bytes

    @classmethod
    def parse(cls, data: bytes) -> RtpHeader:
        if len(data) < 12:
            raise ParseError(f"RTP packet is truncated ({len(data)} bytes)")
        b0, b1, seq, ts, ssrc = struct.unpack_from(">BBHII", data)
        version = b0 >> 6
        if version != RTP_VERSION:
            raise ParseError(f"RTP version {version} is not 2")
        pos = 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10:  # header extension
            if len(data) < pos + 4:
                raise ParseError("RTP header extension is truncated")
            pos += 4 + 4 * struct.unpack_from(">H", data, pos + 2)[0]
        end = len(data)
        if b0 & 0x20:  # padding: the last byte says how much
            if end <= pos or data[-1] == 0 or data[-1] > end - pos:
                raise ParseError("RTP padding length is invalid")
            end -= data[-1]
        if pos > end:
            raise ParseError("RTP header is longer than the packet")
        return cls(version, bool(b0 & 0x20), bool(b1 & 0x80), b1 & 0x7F, seq, ts, ssrc, data[pos:end])


def looks_like_rtp(data: bytes) -> bool:
    """Cheap first test for RTP on a UDP port nobody signalled (version 2, not an RTCP packet type 200-207)."""
    return len(data) >= 12 and data[0] >> 6 == RTP_VERSION and not 72 <= (data[1] & 0x7F) <= 79


def unwrap(previous: int | None, value: int, bits: int) -> int:
    """Extend a wrapping counter (16-bit sequence, 32-bit timestamp) to the nearest value to ``previous``."""
    if previous is None:
        return value
    modulus = 1 << bits
    delta = (value - previous) % modulus
    if delta >= modulus // 2:
        delta -= modulus
    return previous + delta


@dataclass
class StreamStats:
    """One RTP stream (one SSRC between two endpoints), measured like Wireshark's ``rtppacket_analyse``.

    Times are in milliseconds relative to the capture start; ``clock_of(pt)`` gives the RTP clock of a
    payload type (0 when unknown, e.g. telephone-event: such packets do not count for jitter).
    """

    first: bool = True
    start_seq: int = 0
    stop_seq: int = 0
    seq_num: int = 0
    seq_cycles: int = 0
    under: bool = False
    first_ts: int = 0  # extended timestamp of the first packet
    seq_ts: int = 0  # extended timestamp of the last in-order packet
    last_ext_ts: int | None = None
    time_ms: float = 0.0
    pt: int = -1
    delta: float = 0.0
    jitter: float = 0.0
    max_delta: float = 0.0
    max_jitter: float = 0.0
    mean_jitter: float = 0.0
    total: int = 0
    sequence_errors: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    start_time_ms: float = 0.0
    end_time_ms: float = 0.0
    regular: bool = False  # measured so far with array operations (in order, one clock): see table_stats
    clock: int = 0  # the clock of those packets
    _seen: set[int] = field(default_factory=set)  # extended sequence numbers received (recent ones)
    _max_ext_seq: int | None = None

    def add(self, arrival_ms: float, seq: int, timestamp: int, pt: int, marker: bool, clock: int) -> None:
        ext_ts = unwrap(self.last_ext_ts, timestamp, 32)
        self.last_ext_ts = ext_ts
        self._count_order(seq)
        self.end_time_ms = arrival_ms
        if self.first:
            self.first = False
            self.start_seq = self.stop_seq = self.seq_num = seq
            self.seq_ts = self.first_ts = ext_ts
            self.time_ms = self.start_time_ms = arrival_ms
            self.pt = pt
            self.total = 1
            return
        in_order = self.first_ts <= ext_ts  # behind the first packet's timestamp: late, or a restart
        if (
            seq < self.start_seq
            and in_order
            and not self.under
            or seq == 0
            and self.stop_seq == 65535
            and in_order
            and not self.under
        ):
            self.seq_cycles += 1
            self.under = True
        elif seq > self.start_seq and in_order and self.under:
            self.under = False
        if in_order and (self.seq_num + 1 == seq or (self.seq_num == 65535 and seq == 0)):
            self.seq_num = seq
        elif in_order and (self.seq_num + 1 < seq or self.seq_num - seq > 0xFF00):
            self.seq_num = seq
            self.sequence_errors += 1
        elif self.seq_num + 1 > seq:
            self.sequence_errors += 1
        comfort_noise = pt in (PT_CN, PT_CN_OLD)
        follows_cn = self.pt in (PT_CN, PT_CN_OLD)
        self.pt = pt
        current_jitter = 0.0
        if in_order:  # RFC 3550 A.8 interarrival jitter, against the last in-order packet
            if clock:
                nominal_ms = (ext_ts - self.seq_ts) / (clock / 1000)
                diff = abs(arrival_ms - (self.time_ms + nominal_ms))
                current_jitter = self.jitter = (15 * self.jitter + diff) / 16
            self.delta = arrival_ms - self.time_ms
        if not (marker or comfort_noise or follows_cn or not in_order):
            self.max_delta = max(self.max_delta, self.delta)
            if clock:
                self.max_jitter = max(self.max_jitter, self.jitter)
                self.mean_jitter = (self.mean_jitter * (self.total - 1) + current_jitter) / self.total
        if in_order:
            self.time_ms = arrival_ms
            if clock:  # a packet without a clock (telephone-event) moves the arrival reference only
                self.seq_ts = ext_ts
        self.stop_seq = seq
        self.total += 1

    def _count_order(self, seq: int) -> None:
        """Duplicates (a sequence number seen before) and late packets (behind the highest seen)."""
        ext = unwrap(self._max_ext_seq, seq, 16)
        if ext in self._seen:
            self.duplicates += 1
        elif self._max_ext_seq is not None and ext < self._max_ext_seq:
            self.out_of_order += 1
        self._seen.add(ext)
        if self._max_ext_seq is None or ext > self._max_ext_seq:
            self._max_ext_seq = ext

    @property
    def expected(self) -> int:
        """Packets expected from the sequence numbers (Wireshark: last - first + 1, counting wraps)."""
        return self.stop_seq + self.seq_cycles * 65536 - self.start_seq + 1 if self.total else 0

    @property
    def lost(self) -> int:
        """Expected minus received: negative with duplicates or a sequence restart, as tshark shows it."""
        return self.expected - self.total
