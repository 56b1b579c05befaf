"""Benchmark: live capture on loopback. Replays a generated capture (127.0.0.0/8 addresses only) with
tcpreplay at a given packet rate while ``callqa sniff -i lo --stats-only`` listens, then prints the rate,
the RTP packets sent and those that reached the reports, the kernel's drops, the sniffer's CPU time per packet
(user + system, which load from other processes disturbs less than wall time; in all, and while the replay ran,
without start-up and the reports of the calls that end with it), its peak RSS, tcpreplay's CPU time and the load
average (1, 5, 15 minutes, as the replay ended). Needs root and tcpreplay.

    python bench/bench_live.py [--calls 100] [--seconds 20] [--pps 10000 20000 50000] [--sample-s 60] [--audio]

``--audio`` keeps every payload, as ``callqa sniff`` without ``--stats-only`` does, in a small capture-only
process (``capture.live.run`` with a payload-keeping tracker) that checks each ended call's packets carry their
160 payload bytes instead of analysing the audio (a thousand calls ending at once would measure the analysis, not
the capture). ``--socket`` reads with a raw socket, one ``recvmsg`` per packet (CALLQA_LIVE_SOCKET=1), instead
of the PACKET_MMAP ring, for comparison.

``--loop N`` replays the capture N times in a row (a longer run without a larger file; the calls of one pass
end as those of the next begin with the same Call-IDs and addresses, so calls may be split differently in the
reports, but every packet still counts once, and the kernel's drops are exact).

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
SIP_PER_CALL = 5  # INVITE, 200, ACK, BYE, 200 (gen_capture.py)

AUDIO_SCRIPT = """
import json, signal, sys, time
from concurrent.futures import ThreadPoolExecutor
from callqa.capture import live
from callqa.capture.calls import Tracker
stop = {"flag": False}
signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
tracker = Tracker(keep_audio=True, inactivity_s=2.0)
totals = {"calls": 0, "packets": 0, "with_payload": 0, "payload_bytes": 0}
def count(call):
    totals["calls"] += 1
    for streams in call.streams.values():
        for s in streams:
            payloads = [s.packets[i].payload for i in range(len(s.packets))]
            totals["packets"] += len(payloads)
            totals["with_payload"] += sum(1 for p in payloads if len(p) == 160)
            totals["payload_bytes"] += sum(map(len, payloads))
with ThreadPoolExecutor(max_workers=1) as worker:  # as the sniffer: ended calls are handled off the capture loop
    live.run(tracker, lambda call: worker.submit(count, call), "lo", should_stop=lambda: stop["flag"],
             use_ring=sys.argv[1] == "ring")
sys.stderr.write(f"{tracker.kernel_drops} dropped by the kernel\\n")
print(json.dumps(totals))
"""


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--pps", type=int, nargs="+", default=[10000, 20000, 50000])
    ap.add_argument("--loop", type=int, default=1, help="replay the capture this many times (tcpreplay --loop)")
    ap.add_argument("--keep", type=Path, help="reuse this generated capture (made there if missing)")
    ap.add_argument("--sample-s", type=float, default=0, help="print the sniffer's RSS this often (0 = never)")
    ap.add_argument("--audio", action="store_true", help="keep payloads (no --stats-only)")
    ap.add_argument("--socket", action="store_true", help="raw socket instead of the PACKET_MMAP ring")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pcap = args.keep or Path(tmp) / "live.pcap"
        if not pcap.exists():
            subprocess.run([sys.executable, str(HERE / "gen_capture.py"), str(pcap), "--calls", str(args.calls),
                            "--seconds", str(args.seconds)], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        mode = ("audio kept" if args.audio else "stats only") + (", raw socket" if args.socket else ", ring")
        print(f"{args.calls} calls x {args.seconds:.0f} s, {mode}")
        print(f"{'target pps':>10} {'real pps':>8} {'RTP sent':>9} {'in reports':>10} {'drops':>6} "
              f"{'CPU us/pkt':>10} {'(capture)':>9} {'peak RSS MB':>11} {'replay CPU s':>12}  load")  # fmt: skip
        for pps in args.pps:
            env = {**os.environ, "CALLQA_DB": str(Path(tmp) / f"s{pps}.db")}
            out_file, err_file = open(Path(tmp) / "out", "w+"), open(Path(tmp) / "err", "w+")  # noqa: SIM115
            if args.audio:
                cmd = [sys.executable, "-c", AUDIO_SCRIPT, "socket" if args.socket else "ring"]
            else:
                cmd = [sys.executable, "-m", "callqa.cli", "sniff", "-i", "lo", "--stats-only", "--json",
                       "--inactivity", "2", "--no-nisqa"]  # fmt: skip
                if args.socket:
                    env["CALLQA_LIVE_SOCKET"] = "1"
            sniffer = subprocess.Popen(cmd, stdout=out_file, stderr=err_file, text=True, env=env)
            time.sleep(3)
            started, cpu_before = time.time(), cpu_s(sniffer.pid)
            replay = subprocess.Popen(["tcpreplay", "-i", "lo", f"--pps={pps}", "--pps-multi=50",
                                       f"--loop={args.loop}", str(pcap)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
            next_sample = started + args.sample_s
            while True:  # wait4, not poll: it gives tcpreplay's CPU time
                done, replay_status, replay_usage = os.wait4(replay.pid, os.WNOHANG)
                if done:
                    break
                time.sleep(0.5)
                if args.sample_s and time.time() >= next_sample:
                    print(f"  {time.time() - started:>6.0f} s  sniffer RSS {rss_mb(sniffer.pid):>6.1f} MB", flush=True)
                    next_sample += args.sample_s
            time.sleep(1)  # the last ring blocks are handed over and read
            capture_cpu = cpu_s(sniffer.pid) - cpu_before
            stdout = replay.stdout.read()  # type: ignore[union-attr]
            if replay_status:
                raise SystemExit(f"tcpreplay failed ({replay_status}): {replay.stderr.read()}")  # type: ignore[union-attr]
            sent = int(re.search(r"Actual: (\d+) packets", stdout).group(1))  # type: ignore[union-attr]
            rate = re.search(r"Rated: [\d.]+ Bps, [\d.]+ Mbps, ([\d.]+) pps", stdout)
            load = os.getloadavg()
            time.sleep(5)
            sniffer.terminate()
            _, status, usage = os.wait4(sniffer.pid, 0)
            out_file.seek(0)
            err_file.seek(0)
            out, err = out_file.read(), err_file.read()
            out_file.close()
            err_file.close()
            if args.audio:
                totals = json.loads(out.strip().splitlines()[-1])
                in_reports = totals["packets"]
                if totals["with_payload"] != in_reports or totals["payload_bytes"] != 160 * in_reports:
                    print(f"  payloads missing: {totals}")
            else:
                try:  # --json prints one list (indented or not)
                    reports = json.loads(out) if out.strip() else []
                except json.JSONDecodeError:
                    reports = [json.loads(line) for line in out.splitlines() if line.strip()]
                in_reports = sum(s["packets"] for r in reports for s in r["streams"])
            drops = re.search(r"(\d+) dropped by the kernel", err)
            rtp = sent - SIP_PER_CALL * args.calls * args.loop
            cpu = usage.ru_utime + usage.ru_stime
            replay_cpu = replay_usage.ru_utime + replay_usage.ru_stime
            print(
                f"{pps:>10} {float(rate.group(1)) if rate else 0:>8.0f} {rtp:>9} {in_reports:>10} "
                f"{drops.group(1) if drops else '?':>6} {cpu / max(rtp, 1) * 1e6:>10.2f} "
                f"{capture_cpu / max(rtp, 1) * 1e6:>9.2f} "
                f"{usage.ru_maxrss / 1024:>11.0f} {replay_cpu:>12.1f}  {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
            )
            if status:
                print(f"  sniffer exit status {status}: {err[-2000:]}")


if __name__ == "__main__":
    main()
