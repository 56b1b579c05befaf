"""Benchmark: RTP statistics of every stream in a large capture, callqa vs ``tshark -q -z rtp,streams``.

    python bench/bench_capture.py [--calls 200] [--seconds 60]

Generates the capture with gen_capture.py (about 1.1 million packets at the defaults), then times
``callqa pcap --stats-only`` logic in-process and tshark on the same file, and prints wall time, peak RSS and
the ratios. Also checks that both count the same packets and losses.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROW = re.compile(r"0x[0-9A-Fa-f]+\s+.+?\s+(\d+)\s+(-?\d+) \(")

STATS_SCRIPT = """
import sys, time
from pathlib import Path
from callqa.capture.calls import read_capture, stream_stats
t = time.perf_counter()
cap = read_capture(Path(sys.argv[1]), keep_audio=False)
packets = lost = 0
for call in cap.calls:
    for streams in call.streams.values():
        for s in streams:
            st = stream_stats(s, call.encodings.get(s.key, {}), cap.start)
            packets += st.total; lost += st.lost
print(time.perf_counter() - t, 0, packets, lost)
"""


def measured(cmd: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (kB) of that process alone (wait4), and its standard output."""
    with tempfile.TemporaryFile() as out:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t
        if status:
            raise RuntimeError(f"{cmd[0]} failed with status {status}")
        out.seek(0)
        return seconds, usage.ru_maxrss, out.read().decode()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pcap = Path(tmp) / "bench.pcap"
        subprocess.run([sys.executable, str(HERE / "gen_capture.py"), str(pcap), "--calls", str(args.calls),
                        "--seconds", str(args.seconds)], check=True)  # fmt: skip
        ours_s, ours_kb, text = measured([sys.executable, "-c", STATS_SCRIPT, str(pcap)])
        out = text.split()
        packets, lost = int(out[2]), int(out[3])
        tshark_s, tshark_kb, tshark_out = measured(["tshark", "-q", "-r", str(pcap), "-z", "rtp,streams"])
        rows = [m.groups() for line in tshark_out.splitlines() if (m := ROW.search(line))]
        t_packets, t_lost = sum(int(r[0]) for r in rows), sum(int(r[1]) for r in rows)
        print(f"capture: {pcap.stat().st_size / 1e6:.0f} MB, {args.calls} calls x {args.seconds:.0f} s")
        print(f"{'':10} {'wall s':>8} {'peak RSS MB':>12}")
        print(f"{'callqa':10} {ours_s:8.2f} {ours_kb / 1024:12.0f}   packets {packets}, lost {lost}")
        print(f"{'tshark':10} {tshark_s:8.2f} {tshark_kb / 1024:12.0f}   "
              f"packets {t_packets}, lost {t_lost} in {len(rows)} streams")  # fmt: skip
        print(
            f"speed ratio tshark/callqa {tshark_s / ours_s:.2f} (target >= 1.5); "
            f"memory ratio callqa/tshark {ours_kb / tshark_kb:.2f} (target <= 0.5)"
        )


if __name__ == "__main__":
    main()
