"""Benchmark: RTP statistics of every stream in a large capture, callqa vs ``tshark -q -z rtp,streams``.

    python bench/bench_capture.py [--calls 200] [--seconds 60] [--formats pcap pcapng vlan sll]

Generates the capture with gen_capture.py (about 1.2 million packets at the defaults), makes the other formats
from it (pcapng with editcap; 802.1Q-tagged Ethernet and Linux cooked (SLL) by rewriting each record), then for
each format times ``callqa pcap --stats-only``'s reading and statistics in a process of its own and tshark on the
same file, one after the other: wall time, CPU time (user + system, less disturbed by other load), peak RSS
(each process alone, from wait4) and the ratios, with the load average. Checks that both count the same packets
and losses on every stream.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROW = re.compile(r"^\s+\S+\s+\S+\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)\s+(0x[0-9A-Fa-f]+)\s+.+?\s+(\d+)\s+(-?\d+) \(")

STATS_SCRIPT = """
import json, sys
from pathlib import Path
from callqa.capture.calls import read_capture, stream_stats
cap = read_capture(Path(sys.argv[1]), keep_audio=False)
rows = []
for call in cap.calls:
    for streams in call.streams.values():
        for s in streams:
            st = stream_stats(s, call.encodings.get(s.key, {}), cap.start)
            rows.append([*s.key, st.total, st.lost])
print(json.dumps(rows))
"""


def measured(cmd: list[str]) -> tuple[float, float, int, str]:
    """Wall seconds, CPU seconds, peak RSS (kB) of that process alone (wait4), and its standard output."""
    with tempfile.TemporaryFile() as out:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t
        if status:
            raise RuntimeError(f"{cmd[0]} failed with status {status}")
        out.seek(0)
        return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, out.read().decode()


def rewrite(src: Path, dst: Path, frame, linktype: int | None = None) -> None:  # type: ignore[no-untyped-def]
    """A classic little-endian pcap with every frame rewritten (and the link type changed)."""
    with open(src, "rb") as f, open(dst, "wb") as out:
        head = bytearray(f.read(24))
        if linktype is not None:
            head[20:24] = struct.pack("<I", linktype)
        out.write(head)
        while rec := f.read(16):
            sec, frac, incl, orig = struct.unpack("<IIII", rec)
            new = frame(f.read(incl))
            out.write(struct.pack("<IIII", sec, frac, len(new), orig + len(new) - incl) + new)


def variant(pcap: Path, name: str) -> Path:
    out = pcap.with_name(f"bench-{name}.{'pcapng' if name == 'pcapng' else 'pcap'}")
    if name == "pcapng":
        subprocess.run(["editcap", "-F", "pcapng", str(pcap), str(out)], check=True)
    elif name == "vlan":
        rewrite(pcap, out, lambda f: f[:12] + b"\x81\x00\x00\x64" + f[12:])
    elif name == "sll":
        rewrite(pcap, out, lambda f: struct.pack(">HHH8sH", 0, 1, 6, f[6:12] + b"\0\0", 0x0800) + f[14:], 113)
    else:
        return pcap
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--formats", nargs="+", default=["pcap", "pcapng", "vlan", "sll"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pcap = Path(tmp) / "bench.pcap"
        subprocess.run([sys.executable, str(HERE / "gen_capture.py"), str(pcap), "--calls", str(args.calls),
                        "--seconds", str(args.seconds)], check=True)  # fmt: skip
        print(f"{args.calls} calls x {args.seconds:.0f} s")
        print(f"{'format':8} {'MB':>5} {'':8} {'wall s':>7} {'CPU s':>6} {'peak RSS MB':>11}  "
              f"{'speed (wall, CPU)':>17} {'memory':>6}  same counts   load")  # fmt: skip
        for name in args.formats:
            path = variant(pcap, name)
            ours_s, ours_cpu, ours_kb, text = measured([sys.executable, "-c", STATS_SCRIPT, str(path)])
            ours = {(r[0], r[1], r[2], r[3], r[4]): (r[5], r[6]) for r in json.loads(text)}
            t_s, t_cpu, t_kb, t_out = measured(["tshark", "-q", "-r", str(path), "-z", "rtp,streams"])
            theirs = {}
            for line in t_out.splitlines():
                if m := ROW.match(line):
                    src, sport, dst, dport, ssrc, packets, lost = m.groups()
                    theirs[(src, int(sport), dst, int(dport), int(ssrc, 16))] = (int(packets), int(lost))
            same = ours == theirs
            load = " ".join(f"{x:.2f}" for x in os.getloadavg())
            size = path.stat().st_size / 1e6
            print(f"{name:8} {size:>5.0f} {'callqa':8} {ours_s:>7.2f} {ours_cpu:>6.2f} {ours_kb / 1024:>11.0f}")
            print(f"{'':8} {'':>5} {'tshark':8} {t_s:>7.2f} {t_cpu:>6.2f} {t_kb / 1024:>11.0f}  "
                  f"{t_s / ours_s:>7.2f}x {t_cpu / ours_cpu:>7.2f}x {ours_kb / t_kb:>6.2f}  "
                  f"{'yes' if same else 'NO'} ({len(theirs)} streams, {sum(p for p, _ in theirs.values())} packets, "
                  f"{sum(x for _, x in theirs.values())} lost)  {load}")  # fmt: skip
            if not same:
                diff = sorted(set(ours.items()) ^ set(theirs.items()))[:5]
                print(f"  differences (first 5): {diff}")
            if path != pcap:
                path.unlink()
        print("targets: speed >= 5x tshark's, memory <= 0.25 of tshark's peak RSS")


if __name__ == "__main__":
    main()
