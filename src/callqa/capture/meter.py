"""Everything measured on one RTP stream, fed piece by piece in arrival order.

A capture file is measured in one piece. A live call is measured as it goes: every minute or so the packets
that arrived are fed to the stream's meter and dropped, so a call that lasts hours costs the same memory as
one that lasts a minute. The figures are the same either way (tests compare them): Wireshark-compatible
statistics (``table_stats``), loss bursts, the jitter-buffer simulations behind the network MOS, the payload
types seen, the packet time, and the RFC 4733 event packets that DTMF detection needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from callqa.capture.emodel import AdaptiveBuffer, FixedBuffer
from callqa.capture.fastpath import PacketTable, table_stats, unwrap16
from callqa.capture.intervals import IntervalMeter
from callqa.protocol.rtp import RtpPacket, StreamStats, encoding_of

FIXED_DEPTHS_MS = (50.0, 200.0)  # reported beside the configured depth, as VoIPmonitor does
MAX_BURST = 3000  # a jump of thousands of sequence numbers is a restart, not a loss burst
MAX_STEP_KINDS = 64  # distinct timestamp steps counted per payload type (packet time); more are ignored
MAX_EVENTS = 20000  # 4-byte payloads kept for DTMF (a digit takes about ten): a stream of nothing else is capped


@dataclass
class PayloadMeter:
    """One payload type of a stream: packets, timestamp steps (for the packet time) and jitter buffers."""

    clock: int
    buffers: dict[float, FixedBuffer]
    adaptive: AdaptiveBuffer
    packets: int = 0
    steps: dict[int, int] = field(default_factory=dict)  # timestamp step -> how often
    last_ts: int | None = None  # extended timestamp of the last packet

    def feed(self, arrivals: np.ndarray, stamps: np.ndarray) -> None:
        ext = PacketTable.unwrap32(stamps, self.last_ts)
        steps = np.diff(ext) if self.last_ts is None else np.diff(ext, prepend=self.last_ts)
        for step, count in zip(*np.unique(steps, return_counts=True), strict=True):
            if int(step) in self.steps or len(self.steps) < MAX_STEP_KINDS:
                self.steps[int(step)] = self.steps.get(int(step), 0) + int(count)
        self.last_ts = int(ext[-1])
        self.packets += arrivals.size
        for buffer in self.buffers.values():
            buffer.feed(arrivals, ext)
        self.adaptive.feed(arrivals, ext)

    def ptime_ms(self) -> float:
        """Packet time: the median timestamp step (20 ms when unknown, at most 200 ms)."""
        n = sum(self.steps.values())
        if not n or not self.clock:
            return 20.0
        middle, seen, low = ((n - 1) // 2, n // 2), 0, None
        for step in sorted(self.steps):  # the median of the counted steps, as np.median gives it
            seen += self.steps[step]
            if low is None and seen > middle[0]:
                low = step
            if low is not None and seen > middle[1]:
                return min(1000.0 * (low + step) / 2 / self.clock, 200.0)
        return 20.0


def jitter_clocks(table: PacketTable, encodings: dict[int, tuple[str, int]]) -> np.ndarray:
    """The RTP clock of each packet for jitter: 0 for telephone-event and unknown payload types."""
    pt = table.pt
    clocks = np.zeros(len(table), np.int64)
    for kind in np.unique(pt).tolist():
        name, clock = encoding_of(kind, encodings)
        clocks[pt == kind] = 0 if name.lower() == "telephone-event" else clock
    return clocks


class StreamMeter:
    def __init__(self, capture_start: float, depths_ms: Iterable[float] = ()) -> None:
        self.capture_start = capture_start
        self.depths_ms = tuple(sorted({*depths_ms, *FIXED_DEPTHS_MS}))
        self.stats = StreamStats()
        self.first: RtpPacket | None = None
        self.last_arrival = 0.0
        self.types: dict[int, PayloadMeter] = {}  # in order of first appearance
        self.events: list[RtpPacket] = []  # 4-byte payloads: RFC 4733 event candidates
        self.bursts = 0
        self.longest_burst = 0
        self.timeline = IntervalMeter()  # loss and jitter per 5 s of arrival time
        self._last_seq: int | None = None  # extended sequence number of the last packet
        self._top_seq: int | None = None  # highest extended sequence number counted for loss bursts

    def feed(self, table: PacketTable, encodings: dict[int, tuple[str, int]]) -> None:
        """Measure these packets (the next ones of the stream, in arrival order)."""
        if not len(table):
            return
        if self.first is None:
            self.first = table[0]
        self.last_arrival = float(table.arrival[-1])
        pt = table.pt
        clocks = jitter_clocks(table, encodings)
        table_stats(table, clocks, self.capture_start, self.stats)
        self.timeline.feed(table, clocks)
        self._count_bursts(table.seq)
        arrival, ts = table.arrival, table.ts
        for kind in [int(k) for k in pt[np.sort(np.unique(pt, return_index=True)[1])]]:
            meter = self.types.get(kind)
            if meter is None:
                clock = encoding_of(kind, encodings)[1]
                meter = self.types[kind] = PayloadMeter(
                    clock, {d: FixedBuffer(clock, d) for d in self.depths_ms}, AdaptiveBuffer(clock)
                )
            rows = pt == kind
            meter.feed(arrival[rows], ts[rows])
        room = MAX_EVENTS - len(self.events)
        self.events += [table[i] for i in sorted(table.events)[: max(0, room)]]

    def _count_bursts(self, seq: np.ndarray) -> None:
        """Runs of missing sequence numbers between those received (a packet that arrives after the piece that
        passed its number was measured no longer fills its gap)."""
        ext = unwrap16(seq, self._last_seq)
        self._last_seq = int(ext[-1])
        seen = np.unique(ext)
        if self._top_seq is not None:
            seen = np.concatenate([[self._top_seq], seen[seen > self._top_seq]])
        gaps = np.diff(seen) - 1
        gaps = gaps[(gaps > 0) & (gaps < MAX_BURST)]
        self.bursts += int(gaps.size)
        self.longest_burst = max(self.longest_burst, int(gaps.max()) if gaps.size else 0)
        self._top_seq = int(seen[-1])

    @property
    def dominant(self) -> int:
        """The payload type with the most packets (the lowest number on a tie)."""
        return max(sorted(self.types), key=lambda k: self.types[k].packets)
