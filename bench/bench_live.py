"""Benchmark: live capture on loopback. Replays a generated capture (127.0.0.0/8 addresses only) with
tcpreplay at a given packet rate while ``callqa sniff -i lo --stats-only`` listens, then prints the rate,
the kernel's drops, the packets that reached the reports, and the sniffer's peak RSS. Needs root and tcpreplay.

    python bench/bench_live.py [--calls 100] [--seconds 20] [--pps 10000 20000 50000] [--sample-s 60]

With ``--sample-s`` the sniffer's resident memory is printed every so many seconds while the replay runs (a
soak: e.g. ``--calls 100 --seconds 900 --pps 10000`` replays 100 calls of 15 minutes in real time).
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


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--pps", type=int, nargs="+", default=[10000, 20000, 50000])
    ap.add_argument("--sample-s", type=float, default=0, help="print the sniffer's RSS this often (0 = never)")
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
            replay = subprocess.Popen(["tcpreplay", "-i", "lo", f"--pps={pps}", str(pcap)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)  # fmt: skip
            started = time.time()
            next_sample = started + args.sample_s
            while replay.poll() is None:
                time.sleep(0.5)
                if args.sample_s and time.time() >= next_sample:
                    print(f"  {time.time() - started:>6.0f} s  sniffer RSS {rss_mb(sniffer.pid):>6.1f} MB", flush=True)
                    next_sample += args.sample_s
            stdout, _ = replay.communicate()
            if replay.returncode:
                raise SystemExit(f"tcpreplay failed ({replay.returncode})")
            sent = int(re.search(r"Actual: (\d+) packets", stdout).group(1))  # type: ignore[union-attr]
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
