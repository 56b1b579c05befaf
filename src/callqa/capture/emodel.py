"""Network MOS from the ITU-T G.107 E-model, after a jitter-buffer simulation (as VoIPmonitor reports it).

The jitter buffer plays packet i at ``first_arrival + (ts_i - ts_0) / clock + depth``; a packet that arrives
after its playout time is discarded like a lost one; an offset of more than a second is a timestamp
discontinuity (a restart) and resynchronises the buffer. Effective loss feeds the equipment impairment
Ie,eff = Ie + (95 - Ie) * Ppl / (Ppl + Bpl) (G.107 7.2, random loss), the delay impairment Id uses the
simplified form of Cole & Rosenbluth (2001) for the one-way delay, and R = 93.2 - Id - Ie,eff.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# codec -> (Ie, Bpl) from ITU-T G.113 Appendix I (Bpl with packet loss concealment)
CODEC_IMPAIRMENT = {"PCMU": (0.0, 25.1), "PCMA": (0.0, 25.1), "G722": (0.0, 25.1), "G729": (11.0, 19.0),
                    "G723": (15.0, 16.1), "GSM": (20.0, 10.0), "OPUS": (0.0, 25.1), "ILBC": (11.0, 32.0)}  # fmt: skip
R0 = 93.2
RESYNC_S = 1.0  # an offset beyond this is a timestamp discontinuity, not jitter


class _Playout:
    """A packet's playout time: the first packet's arrival plus its RTP timestamp's distance from the first one,
    resynchronised on a timestamp jump. ``offset_s`` is how late a packet arrives against that schedule.
    Packets are fed in arrival order, in as many pieces as wanted (the state carries over)."""

    def __init__(self, clock: int) -> None:
        self.clock = clock
        self.t0: float | None = None
        self.ts0 = 0

    def offset_s(self, arrival: float, ts: int) -> float:
        """``ts`` is an extended (unwrapped) RTP timestamp."""
        if self.t0 is None:
            self.t0, self.ts0 = arrival, ts
        offset = arrival - (self.t0 + (ts - self.ts0) / self.clock)
        if abs(offset) > RESYNC_S:  # a timestamp jump (new talk spurt base, sequence restart): resynchronise
            self.t0, self.ts0, offset = arrival, ts, 0.0
        return offset

    def offsets(self, arrivals_s: Sequence[float] | np.ndarray, timestamps: Sequence[int] | np.ndarray) -> np.ndarray:
        """``offset_s`` of each packet, in bulk: the same arithmetic on whole arrays between resynchronisations
        (the same float64 operations in the same order, so the same values); packet by packet after many."""
        a, t = np.asarray(arrivals_s, np.float64), np.asarray(timestamps, np.int64)
        out = np.empty(a.size)
        i, resyncs = 0, 0
        while i < a.size:
            if resyncs > MAX_BULK_RESYNCS:  # timestamps all over the place: one at a time
                out[i:] = [self.offset_s(x, y) for x, y in zip(a[i:].tolist(), t[i:].tolist(), strict=True)]
                break
            if self.t0 is None:
                self.t0, self.ts0 = float(a[i]), int(t[i])
            off = a[i:] - (self.t0 + (t[i:] - self.ts0) / self.clock)
            bad = np.flatnonzero(np.abs(off) > RESYNC_S)
            if not bad.size:
                out[i:] = off
                break
            j = int(bad[0])
            out[i : i + j] = off[:j]
            self.t0, self.ts0, out[i + j] = float(a[i + j]), int(t[i + j]), 0.0
            i, resyncs = i + j + 1, resyncs + 1
        return out


MAX_BULK_RESYNCS = 32


class FixedBuffer(_Playout):
    """A fixed jitter buffer of ``depth_ms``: ``late`` counts the packets it would discard."""

    def __init__(self, clock: int, depth_ms: float) -> None:
        super().__init__(clock)
        self.depth_s = depth_ms / 1000.0
        self.late = 0

    def feed(self, arrivals_s: Sequence[float] | np.ndarray, timestamps: Sequence[int] | np.ndarray) -> None:
        if not self.clock:
            return
        self.late += int(np.count_nonzero(self.offsets(arrivals_s, timestamps) > self.depth_s))


class AdaptiveBuffer(_Playout):
    """An adaptive buffer: a packet later than the depth in force is discarded and the depth grows to what it
    needed (up to ``max_ms``); otherwise the depth decays slowly (0.2% per packet) towards what packets need.
    ``late`` is the discarded packets, ``mean_depth_ms`` the delay the buffer adds."""

    def __init__(self, clock: int, max_ms: float = 500.0, start_ms: float = 50.0) -> None:
        super().__init__(clock)
        self.max_ms, self.depth = max_ms, start_ms
        self.late, self.total, self.count = 0, 0.0, 0

    def feed(self, arrivals_s: Sequence[float] | np.ndarray, timestamps: Sequence[int] | np.ndarray) -> None:
        if not self.clock:
            return
        needs = (1000.0 * self.offsets(arrivals_s, timestamps)).tolist()
        depth, late, total, top = self.depth, self.late, self.total, self.max_ms
        for needed in needs:
            if needed > depth:
                late += 1
                depth = min(top, needed)
            else:
                depth = max(needed, depth * 0.998, 0.0)
            total += depth
        self.depth, self.late, self.total = depth, late, total
        self.count += len(needs)

    @property
    def mean_depth_ms(self) -> float:
        return self.total / self.count if self.count else self.depth


def jitter_buffer_loss(arrivals_s: Sequence[float], timestamps: Sequence[int], clock: int, depth_ms: float) -> int:
    """Packets a fixed jitter buffer of ``depth_ms`` would discard as late (ordered by arrival)."""
    buffer = FixedBuffer(clock, depth_ms)
    buffer.feed(arrivals_s, timestamps)
    return buffer.late


def adaptive_jitter_buffer(
    arrivals_s: Sequence[float], timestamps: Sequence[int], clock: int, max_ms: float = 500.0, start_ms: float = 50.0
) -> tuple[int, float]:
    """(discarded packets, mean depth in ms) of an ``AdaptiveBuffer`` over these packets."""
    buffer = AdaptiveBuffer(clock, max_ms, start_ms)
    buffer.feed(arrivals_s, timestamps)
    return buffer.late, buffer.mean_depth_ms


def r_factor(codec: str, loss_ratio: float, delay_ms: float) -> float:
    ie, bpl = CODEC_IMPAIRMENT.get(codec.upper(), (0.0, 25.1))
    ppl = 100.0 * max(0.0, min(1.0, loss_ratio))
    ie_eff = ie + (95.0 - ie) * ppl / (ppl + bpl)
    idd = 0.024 * delay_ms + (0.11 * (delay_ms - 177.3) if delay_ms > 177.3 else 0.0)
    return R0 - idd - ie_eff


def mos_from_r(r: float) -> float:
    """G.107 Annex B: R to the estimated conversational MOS."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6


def network_mos(codec: str, expected: int, lost: int, late: int, ptime_ms: float, depth_ms: float) -> float:
    """MOS for a direction: loss and jitter-buffer discards, and one-way delay = packetisation + buffer."""
    loss = (max(lost, 0) + late) / expected if expected > 0 else 0.0
    return round(mos_from_r(r_factor(codec, loss, ptime_ms + depth_ms)), 2)
