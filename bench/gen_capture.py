"""Generate a pcap of concurrent SIP calls with G.711 RTP both ways (some loss and jitter), for benchmarks.

    python bench/gen_capture.py OUT.pcap [--calls 200] [--seconds 60] [--seed 1]

Addresses are in 127.0.0.0/8 so the file may also be replayed on loopback. Each call: INVITE with SDP,
200 OK with SDP, ACK, 20 ms PCMU packets both ways, BYE, 200 OK. 1% random loss on one direction of every
fifth call, and up to 15 ms of arrival jitter.
"""

from __future__ import annotations

import argparse
import heapq
import random
import struct
from collections.abc import Iterable
from pathlib import Path

ETH = b"\x00\x00\x00\x00\x00\x02" + b"\x00\x00\x00\x00\x00\x01" + b"\x08\x00"


def ip_udp(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    udp = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
    total = 20 + len(udp)
    header = struct.pack(">BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, 17, 0,
                         bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))  # fmt: skip
    return ETH + header + udp


def sip(lines: list[str], body: str = "") -> bytes:
    head = "\r\n".join(lines + [f"Content-Length: {len(body)}", "", ""])
    return (head + body).encode()


def sdp(addr: str, port: int) -> str:
    return (f"v=0\r\no=- 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\n")  # fmt: skip


def call_packets(i: int, start: float, seconds: float, rng: random.Random):  # type: ignore[no-untyped-def]
    a, b = f"127.1.{i // 250}.{i % 250 + 1}", f"127.2.{i // 250}.{i % 250 + 1}"
    pa, pb = 10000 + 2 * (i % 20000), 30000 + 2 * (i % 15000)
    cid = f"bench-{i}@{a}"
    common = [f"Call-ID: {cid}", f"From: <sip:agent{i}@{a}>;tag=a{i}", f"To: <sip:cust{i}@{b}>",
              "Via: SIP/2.0/UDP " + a + ":5060;branch=z9hG4bK" + str(i)]  # fmt: skip
    yield start, ip_udp(a, 5060, b, 5060, sip([f"INVITE sip:cust{i}@{b} SIP/2.0", *common, "CSeq: 1 INVITE",
                                                "Content-Type: application/sdp"], sdp(a, pa)))  # fmt: skip
    yield start + 0.05, ip_udp(b, 5060, a, 5060, sip(["SIP/2.0 200 OK", *common, "CSeq: 1 INVITE",
                                                       "Content-Type: application/sdp"], sdp(b, pb)))  # fmt: skip
    yield start + 0.06, ip_udp(a, 5060, b, 5060, sip([f"ACK sip:cust{i}@{b} SIP/2.0", *common, "CSeq: 1 ACK"]))
    lossy = i % 5 == 0

    def direction(d: int, src: str, sp: int, dst: str, dp: int):  # type: ignore[no-untyped-def]
        ssrc, seq0, ts0 = rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(32)
        payload = bytes(rng.getrandbits(8) for _ in range(160))
        t0 = start + 0.1
        for k in range(int(seconds * 50)):
            if lossy and d == 1 and rng.random() < 0.01:
                continue
            rtp = struct.pack(">BBHII", 0x80, 0, (seq0 + k) & 0xFFFF, (ts0 + 160 * k) & 0xFFFFFFFF, ssrc) + payload
            yield t0 + 0.02 * k + rng.random() * 0.015, ip_udp(src, sp, dst, dp, rtp)

    # both directions at once, in time order (jitter is under the 20 ms packet spacing, so each is ordered)
    yield from heapq.merge(direction(0, a, pa, b, pb), direction(1, b, pb, a, pa), key=lambda p: p[0])
    end = start + 0.2 + seconds
    yield end, ip_udp(a, 5060, b, 5060, sip([f"BYE sip:cust{i}@{b} SIP/2.0", *common, "CSeq: 2 BYE"]))
    yield end + 0.01, ip_udp(b, 5060, a, 5060, sip(["SIP/2.0 200 OK", *common, "CSeq: 2 BYE"]))


def write_pcap(path: Path, packets: Iterable[tuple[float, bytes]]) -> int:
    """A classic pcap (Ethernet, microsecond stamps) of (arrival time, frame) pairs in time order; returns the
    number of packets written."""
    n = 0
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for ts, frame in packets:
            sec = int(ts)
            usec = round((ts - sec) * 1e6)
            sec, usec = sec + usec // 1_000_000, usec % 1_000_000
            f.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)))
            f.write(frame)
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    base = 1_700_000_000.0
    gens = [call_packets(i, base + rng.random() * 2.0, args.seconds, rng) for i in range(args.calls)]
    n = write_pcap(args.out, heapq.merge(*gens, key=lambda p: p[0]))
    print(f"{args.out}: {n} packets, {args.calls} calls of {args.seconds:.0f} s")


if __name__ == "__main__":
    main()
