"""Benchmark: live capture on loopback. Replays a generated capture (127.0.0.0/8 addresses only) with
tcpreplay at a given packet rate while ``callqa sniff -i lo --stats-only`` listens, then prints the rate,
the kernel's drops, the packets that reached the reports, and the sniffer's peak RSS. Needs root and tcpreplay.

    python bench/bench_live.py [--calls 100] [--seconds 20] [--pps 10000 20000 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--pps", type=int, nargs="+", default=[10000, 20000, 50000])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pcap = Path(tmp) / "live.pcap"
        subprocess.run([sys.executable, str(HERE / "gen_capture.py"), str(pcap), "--calls", str(args.calls),
                        "--seconds", str(args.seconds)], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        print(f"{'target pps':>10} {'sent':>9} {'in reports':>10} {'kernel drops':>12} {'peak RSS MB':>11}")
        for pps in args.pps:
            env = {**os.environ, "CALLQA_DB": str(Path(tmp) / f"s{pps}.db")}
            out_file, err_file = open(Path(tmp) / "out", "w+"), open(Path(tmp) / "err", "w+")  # noqa: SIM115
            sniffer = subprocess.Popen([sys.executable, "-m", "callqa.cli", "sniff", "-i", "lo", "--stats-only",
                                        "--json", "--inactivity", "2", "--no-nisqa"],
                                       stdout=out_file, stderr=err_file, text=True, env=env)  # fmt: skip
            time.sleep(3)
            replay = subprocess.run(["tcpreplay", "-i", "lo", f"--pps={pps}", str(pcap)], capture_output=True,
                                    text=True, check=True)  # fmt: skip
            sent = int(re.search(r"Actual: (\d+) packets", replay.stdout).group(1))  # type: ignore[union-attr]
            time.sleep(5)
            sniffer.terminate()
            _, status, usage = os.wait4(sniffer.pid, 0)
            out_file.seek(0)
            err_file.seek(0)
            out, err = out_file.read(), err_file.read()
            out_file.close()
            err_file.close()
            reports = [json.loads(line) for line in out.splitlines() if line.strip()]
            in_reports = sum(s["packets"] for r in reports for s in r["streams"])
            drops = re.search(r"(\d+) dropped by the kernel", err)
            print(f"{pps:>10} {sent:>9} {in_reports:>10} {drops.group(1) if drops else '?':>12} "
                  f"{usage.ru_maxrss / 1024:>11.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
