"""Loss and jitter of one RTP stream over time, per fixed interval of arrival time (5 s by default).

Intervals start at the stream's first packet. Fed piece by piece in arrival order like the stream's meter (a
live call is measured as it goes). Per
interval: packets received; packets expected, as RTCP receiver reports count them (RFC 3550 A.3: the highest
extended sequence number at the interval's end minus that at the previous interval's end); lost = expected -
received (negative with duplicates); and the largest RFC 3550 interarrival jitter (A.8, J += (|D| - J) / 16)
reached in the interval, over the voice packets (telephone-event and unknown payload types are left out).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from callqa.capture.fastpath import PacketTable, rfc3550_jitter, unwrap16

INTERVAL_S = 5.0


@dataclass(frozen=True)
class Interval:
    start: float  # epoch seconds (arrival clock): the interval's start, or the stream's first packet in its first
    packets: int
    expected: int
    lost: int
    max_jitter_ms: float


class IntervalMeter:
    def __init__(self, origin: float | None = None, step_s: float = INTERVAL_S) -> None:
        # intervals are [origin + k step, origin + (k + 1) step); the origin is the first packet unless given
        self.origin, self.step_s = origin, step_s
        self._last_seq: int | None = None  # extended sequence number of the last packet (for unwrapping)
        self._first_seq: int | None = None
        self._first_arrival = 0.0
        self._received: dict[int, int] = {}  # interval index -> packets
        self._top: dict[int, int] = {}  # interval index -> highest extended sequence number by its end
        self._jitter: dict[int, float] = {}  # interval index -> largest jitter reached, ms
        self._max_seq: int | None = None
        self._prev: tuple[float, int, int] | None = None  # last voice packet: arrival ms, extended ts, clock
        self._j = 0.0

    def feed(self, table: PacketTable, clocks: np.ndarray) -> None:
        """The next packets of the stream, with each one's RTP clock (0: not voice)."""
        if not len(table):
            return
        ext = unwrap16(table.seq, self._last_seq)
        self._last_seq = int(ext[-1])
        if self._first_seq is None:
            self._first_seq, self._first_arrival = int(ext[0]), float(table.arrival[0])
        if self.origin is None:
            self.origin = self._first_arrival
        index = np.floor((table.arrival - self.origin) / self.step_s).astype(np.int64)
        top = np.maximum.accumulate(ext) if self._max_seq is None else np.maximum.accumulate(
            np.maximum(ext, self._max_seq))  # fmt: skip
        self._max_seq = int(top[-1])
        for k, n in zip(*np.unique(index, return_counts=True), strict=True):
            self._received[int(k)] = self._received.get(int(k), 0) + int(n)
        last_of = np.r_[np.flatnonzero(np.diff(index)), index.size - 1]  # last packet of each interval run
        for i in last_of.tolist():
            self._top[int(index[i])] = int(top[i])
        self._feed_jitter(table, clocks, index)

    def _feed_jitter(self, table: PacketTable, clocks: np.ndarray, index: np.ndarray) -> None:
        voice = clocks > 0
        if not voice.any():
            return
        arrival_ms = table.arrival[voice] * 1000.0
        clock = clocks[voice].astype(np.float64)
        stamps = PacketTable.unwrap32(table.ts[voice], self._prev[1] if self._prev else None)
        if self._prev is not None:
            arrival_ms = np.r_[self._prev[0], arrival_ms]
            stamps = np.r_[self._prev[1], stamps]
            clock = np.r_[self._prev[2], clock]
            where = index[voice]
        else:
            where = index[voice][1:]
        self._prev = (float(arrival_ms[-1]), int(stamps[-1]), int(clock[-1]))
        if arrival_ms.size < 2:
            return
        same = clock[1:] == clock[:-1]  # a clock change (codec switch) restarts the difference
        d = np.abs(np.diff(arrival_ms) - np.diff(stamps) * 1000.0 / clock[1:])
        d = np.where(same, d, 0.0)
        j = rfc3550_jitter(d, self._j)
        self._j = float(j[-1])
        starts = np.r_[0, np.flatnonzero(np.diff(where)) + 1]  # arrival order: each interval is one run
        for k, top in zip(where[starts].tolist(), np.maximum.reduceat(j, starts).tolist(), strict=True):
            self._jitter[k] = max(self._jitter.get(k, 0.0), top)

    def intervals(self, max_count: int = 360) -> list[Interval]:
        """Every interval from the first packet's to the last's, in order (empty ones included); neighbours are
        merged (2, 3, ... at a time) when there would be more than ``max_count``. Only intervals that hold packets
        are visited, so a forged arrival time years away costs nothing: it only widens the merged intervals."""
        if not self._received or self._first_seq is None:
            return []
        first, last = min(self._received), max(self._received)
        factor = -(-(last - first + 1) // max_count)
        groups: dict[int, list[int]] = {}
        for k in sorted(self._received):
            groups.setdefault((k - first) // factor, []).append(k)
        out: list[Interval] = []
        before = self._first_seq - 1  # the highest extended sequence number by the end of the previous interval
        for g in range((last - first) // factor + 1):
            keys = groups.get(g, [])
            received = sum(self._received[k] for k in keys)
            top = self._top.get(keys[-1], before) if keys else before
            expected = top - before
            start = self._first_arrival if g == 0 else (self.origin or 0.0) + (first + g * factor) * self.step_s
            jitter = max((self._jitter.get(k, 0.0) for k in keys), default=0.0)
            out.append(Interval(start, received, expected, expected - received, round(jitter, 3)))
            before = top
        return out
