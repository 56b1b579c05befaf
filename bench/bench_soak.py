"""Soak: a statistics-only live tracker fed hours of simulated traffic, to see whether its memory stays flat.

    python bench/bench_soak.py [--hours 2] [--concurrent 1000] [--mean-minutes 10] [--no-fold] [--print-min 15]

Frames are built in memory and fed to the tracker with simulated arrival times (no network, so hours pass in
less time): RTP the way the live capture's ring hands it over, a block of frames at a time
(``Tracker.feed_frames``, 0.2 s of traffic per block), SIP frame by frame, and ``expire`` runs once a simulated
second, as ``callqa sniff --stats-only`` does. A constant number of calls is in progress: each lasts an
exponential time (mean ``--mean-minutes``, at least 5 s, at most two hours), sends 20 ms PCMU both ways (up to
4 ms of arrival jitter), and ends with a BYE (one call in ten just stops: the inactivity timeout ends it). Every
ended call is turned into a report, as the sniffer does. Printed every ``--print-min`` simulated minutes: calls
reported, RTP packets in those reports, packets sent, packets held by the tracker (columns not yet measured), and
the process's RSS; at the end the CPU time per packet. ``--no-fold`` turns off the measuring-as-it-goes of long
streams, for comparison.
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import time

import numpy as np

from callqa.capture import calls as calls_module
from callqa.capture.calls import Tracker
from callqa.config import Settings
from callqa.service.captures import report_call

ETH = b"\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x01\x08\x00"


def frame(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    udp = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                     bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))  # fmt: skip
    return ETH + ip + udp


def sip(first: str, cid: str, a: str, b: str, cseq: str, sdp: str = "") -> bytes:
    lines = [first, f"Via: SIP/2.0/UDP {a}:5060;branch=z9hG4bK{cid}", f"From: <sip:agent@{a}>;tag=a",
             f"To: <sip:cust@{b}>", f"Call-ID: {cid}", f"CSeq: {cseq}"]  # fmt: skip
    if sdp:
        lines.append("Content-Type: application/sdp")
    return ("\r\n".join([*lines, f"Content-Length: {len(sdp)}", "", ""]) + sdp).encode()


def sdp(addr: str, port: int) -> str:
    return f"v=0\r\no=- 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n"


class Call:
    def __init__(self, n: int, start: float, seconds: float, bye: bool) -> None:
        self.n, self.end, self.bye = n, start + seconds, bye
        self.a, self.b = f"10.1.{n // 250 % 250}.{n % 250 + 1}", f"10.2.{n // 250 % 250}.{n % 250 + 1}"
        self.pa, self.pb = 10000 + 2 * (n % 20000), 40000 + 2 * (n % 10000)
        self.cid = f"soak-{n}"
        self.k = 0
        ends = ((self.a, self.pa, self.b, self.pb), (self.b, self.pb, self.a, self.pa))
        self.rtp = [bytearray(frame(s, sp, d, dp, bytes(12) + b"\xff" * 160)) for s, sp, d, dp in ends]
        for i, template in enumerate(self.rtp):
            struct.pack_into(">BBHII", template, 42, 0x80, 0, 0, 0, 0x1000 + 2 * n + i)

    def signalling_start(self) -> list[bytes]:
        return [frame(self.a, 5060, self.b, 5060, sip(f"INVITE sip:cust@{self.b} SIP/2.0", self.cid, self.a, self.b,
                                                      "1 INVITE", sdp(self.a, self.pa))),
                frame(self.b, 5060, self.a, 5060, sip("SIP/2.0 200 OK", self.cid, self.a, self.b, "1 INVITE",
                                                      sdp(self.b, self.pb)))]  # fmt: skip

    def packets(self) -> list[bytes]:
        out = []
        for template in self.rtp:
            struct.pack_into(">HI", template, 44, self.k & 0xFFFF, (160 * self.k) & 0xFFFFFFFF)
            out.append(bytes(template))
        self.k += 1
        return out

    def signalling_end(self) -> list[bytes]:
        if not self.bye:
            return []
        return [frame(self.a, 5060, self.b, 5060, sip(f"BYE sip:cust@{self.b} SIP/2.0", self.cid, self.a, self.b,
                                                      "2 BYE"))]  # fmt: skip


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--concurrent", type=int, default=1000)
    ap.add_argument("--mean-minutes", type=float, default=10.0)
    ap.add_argument("--no-fold", action="store_true")
    ap.add_argument("--print-min", type=float, default=15.0)
    args = ap.parse_args()
    if args.no_fold:
        calls_module.FOLD_AT = 1 << 62
    rng = random.Random(1)
    jitter = np.random.default_rng(1)
    settings = Settings()
    tracker = Tracker(keep_audio=False)
    t0 = 1_700_000_000.0
    t, end = t0, t0 + args.hours * 3600
    made, reported, reported_packets, sent = 0, 0, 0, 0
    size = len(Call(0, 0, 1, True).rtp[0])
    slots = args.concurrent
    templates = np.zeros((2 * slots, size), np.uint8)  # row 2i, 2i + 1: the two directions of the call in slot i
    counters = np.zeros(2 * slots, np.int64)
    active: list[Call] = []

    def new_call(slot: int, now: float) -> Call:
        nonlocal made
        made += 1
        seconds = min(rng.expovariate(1 / (60 * args.mean_minutes)) + 5, 7200)
        call = Call(made, now, seconds, rng.random() > 0.1)
        for f in call.signalling_start():
            tracker.feed_frame(now, 1, f)
        for d in range(2):
            templates[2 * slot + d] = np.frombuffer(bytes(call.rtp[d]), np.uint8)
        counters[2 * slot : 2 * slot + 2] = 0
        return call

    for i in range(slots):
        active.append(new_call(i, t + rng.random()))
    next_expiry, next_print, wall, cpu = t + 1, t, time.time(), time.process_time()
    print(f"{'sim min':>7} {'active':>6} {'reported':>8} {'pkts reported':>13} {'pkts sent':>11} {'held':>8} "
          f"{'RSS MB':>7}")  # fmt: skip
    tick, per_block = 0.02, 10  # ten 20 ms ticks (0.2 s) of RTP per block
    while True:
        blocks, stamps = [], []
        for _ in range(per_block):
            t += tick
            for i, call in enumerate(active):
                if t >= call.end:
                    for f in call.signalling_end():
                        tracker.feed_frame(t, 1, f)
                    active[i] = new_call(i, t)
            frames = templates.copy()
            seq, stamp = counters & 0xFFFF, (counters * 160) & 0xFFFFFFFF
            frames[:, 44], frames[:, 45] = seq >> 8, seq & 0xFF
            for k in range(4):
                frames[:, 46 + k] = (stamp >> (24 - 8 * k)) & 0xFF
            counters += 1
            blocks.append(frames)
            stamps.append(t + jitter.random(2 * slots) * 0.004)
        data = np.concatenate(blocks)
        arrival = np.concatenate(stamps)
        order = np.argsort(arrival, kind="stable")  # the ring hands frames over in arrival order
        offsets = (order * size).astype(np.int64)
        tracker.feed_frames(data.tobytes(), offsets, np.full(order.size, size, np.int64), arrival[order])
        sent += order.size
        if t >= next_expiry:
            for done in tracker.expire(t):
                report = report_call(done, settings, done.id, done.id, "soak", stats_only=True)
                reported += 1
                reported_packets += sum(s.packets for s in report.streams)
            next_expiry = t + 1
        if t >= next_print or t >= end:
            tracker.flush()
            held = sum(len(s.packets) for s in tracker.streams.values())
            print(f"{(t - t0) / 60:>7.0f} {len(active):>6} {reported:>8} {reported_packets:>13} {sent:>11} "
                  f"{held:>8} {rss_mb():>7.1f}", flush=True)  # fmt: skip
            next_print = t + 60 * args.print_min
            if t >= end:
                break
    used = time.process_time() - cpu
    print(
        f"{sent} packets in {time.time() - wall:.0f} s of wall time, {used:.0f} s CPU "
        f"({used / sent * 1e6:.2f} us a packet); fold {'off' if args.no_fold else 'on'}; load average "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )


if __name__ == "__main__":
    main()
