"""Benchmark: the cost of loss/jitter intervals in a stream's meter, on a generated one-hour stream.

    python bench/bench_intervals.py [--minutes 60]

Measures StreamMeter.feed on the same packets with the interval meter and with it replaced by a no-op, in the
same process (best of three each), and prints the ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import callqa.capture.meter as meter
from callqa.capture.fastpath import PacketTable
from callqa.capture.meter import StreamMeter


class _Off:
    def __init__(self, *args: object) -> None:
        pass

    def feed(self, *args: object) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=60.0)
    args = ap.parse_args()
    n = int(50 * 60 * args.minutes)  # 20 ms packets
    rng = np.random.default_rng(1)
    arrival = 1000.0 + 0.02 * np.arange(n) + rng.random(n) * 0.01
    table = PacketTable(keep_payloads=False)
    for i in np.flatnonzero(rng.random(n) > 0.01).tolist():  # 1% lost
        table.add(float(arrival[i]), i & 0xFFFF, (160 * i) & 0xFFFFFFFF, 0, False, b"")
    enc = {0: ("PCMU", 8000)}

    def run() -> tuple[float, StreamMeter]:
        t0 = time.perf_counter()
        m = StreamMeter(0.0, (50.0,))
        m.feed(table, enc)
        return time.perf_counter() - t0, m

    with_intervals = min(run()[0] for _ in range(3))
    real = meter.IntervalMeter
    meter.IntervalMeter = _Off  # type: ignore[assignment,misc]
    without = min(run()[0] for _ in range(3))
    meter.IntervalMeter = real  # type: ignore[misc]
    m = run()[1]
    got = m.timeline.intervals()
    print(f"{len(table)} packets ({args.minutes:.0f} min): meter {without:.3f} s without intervals, "
          f"{with_intervals:.3f} s with ({with_intervals / without:.2f}x); {len(got)} intervals, "
          f"lost {sum(i.lost for i in got)} (stream: {m.stats.lost})")  # fmt: skip


if __name__ == "__main__":
    main()
