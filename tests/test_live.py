"""Live capture end to end: `callqa sniff` on the loopback interface and as a HEP v3 receiver, with a real
SIP call (UDP sockets on 127.0.0.0/8) and a replayed capture."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import captures
import pytest
from conftest import REPO
from sniffing import lines_until, wait_listening

from callqa.errors import ParseError
from callqa.protocol.hep import build_hep3, parse_hep3
from callqa.protocol.packet import PROTO_UDP, Decoder, Segment
from callqa.protocol.pcap import CaptureFile

CALLER, CALLEE = "127.5.0.1", "127.5.0.2"


def sniff(*args: str, db: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "CALLQA_DB": str(db)}
    return subprocess.Popen([sys.executable, "-m", "callqa.cli", "sniff", "--jsonl", "--stats-only", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)  # fmt: skip


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sip(first: str, cseq: str, body: str = "") -> bytes:
    headers = [first, f"Via: SIP/2.0/UDP {CALLER}:5060;branch=z9hG4bKlive", f"From: <sip:agent@{CALLER}>;tag=1",
               f"To: <sip:cust@{CALLEE}>", "Call-ID: live-test-1", f"CSeq: {cseq}"]  # fmt: skip
    if body:
        headers.append("Content-Type: application/sdp")
    return ("\r\n".join([*headers, f"Content-Length: {len(body)}", "", ""]) + body).encode()


def sdp(addr: str, port: int) -> str:
    return f"v=0\r\no=- 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n"


def place_call(rtp_a: int, rtp_b: int, drop: set[int]) -> None:
    a_sip, b_sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a_rtp, b_rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a_sip.bind((CALLER, 5060)), b_sip.bind((CALLEE, 5060)), a_rtp.bind((CALLER, rtp_a)), b_rtp.bind((CALLEE, rtp_b))
    try:
        a_sip.sendto(sip(f"INVITE sip:cust@{CALLEE} SIP/2.0", "1 INVITE", sdp(CALLER, rtp_a)), (CALLEE, 5060))
        b_sip.sendto(sip("SIP/2.0 200 OK", "1 INVITE", sdp(CALLEE, rtp_b)), (CALLER, 5060))
        a_sip.sendto(sip(f"ACK sip:cust@{CALLEE} SIP/2.0", "1 ACK"), (CALLEE, 5060))
        for k in range(100):
            packet = struct.pack(">BBHII", 0x80, 0, 1000 + k, 160 * k, 0x1111) + bytes([0xFF]) * 160
            if k not in drop:
                a_rtp.sendto(packet, (CALLEE, rtp_b))
            b_rtp.sendto(struct.pack(">BBHII", 0x80, 0, 5000 + k, 160 * k, 0x2222) + bytes(160), (CALLER, rtp_a))
            time.sleep(0.004)
        a_sip.sendto(sip(f"BYE sip:cust@{CALLEE} SIP/2.0", "2 BYE"), (CALLEE, 5060))
        b_sip.sendto(sip("SIP/2.0 200 OK", "2 BYE"), (CALLER, 5060))
    finally:
        for s in (a_sip, b_sip, a_rtp, b_rtp):
            s.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="raw capture needs root (CI runs as root)")
def test_sniff_loopback_reports_the_call_when_it_ends(tmp_path: Path) -> None:
    proc = sniff("-i", "lo", "--bpf", "udp", "--duration", "300", "--inactivity", "2", db=tmp_path / "s.db")
    wait_listening(proc, "packet")
    place_call(41000, 42000, drop={10, 11, 12, 50, 90})
    out, err = lines_until(proc, lambda lines: any('"live-test-1"' in line for line in lines))
    assert proc.returncode == 0, err
    reports = [json.loads(line) for line in out]
    (report,) = [r for r in reports if r["sip"] and r["sip"]["call_id"] == "live-test-1"]
    assert report["sip"]["end_reason"] == "caller hung up (BYE)"
    streams = {s["leg"]: s for s in report["streams"]}
    assert (streams["caller"]["packets"], streams["caller"]["lost"]) == (95, 5)
    assert (streams["callee"]["packets"], streams["callee"]["lost"]) == (100, 0)
    assert streams["caller"]["network_mos"] < streams["callee"]["network_mos"]


def test_hep3_round_trip_and_errors() -> None:
    seg = Segment(1700000000.25, PROTO_UDP, "2001:db8::1", 5060, "2001:db8::2", 5062, b"OPTIONS sip:x SIP/2.0\r\n")
    assert parse_hep3(build_hep3(seg)) == seg
    assert parse_hep3(build_hep3(replace(seg, src="10.0.0.1", dst="10.0.0.2"))).dst == "10.0.0.2"
    data = build_hep3(replace(seg, src="10.0.0.1", dst="10.0.0.2"))
    for cut in range(len(data)):
        with pytest.raises(ParseError):
            parse_hep3(data[:cut])
    with pytest.raises(ParseError, match="magic"):
        parse_hep3(b"HEP2" + data[4:])


def test_sniff_hep_receives_a_replayed_capture(tmp_path: Path) -> None:
    port = free_port()
    # the SDP names 10.2.0.1; aliased (setting) to another address only the port matches: the NAT path
    os.environ["CALLQA_NAT_ALIASES"] = '{"10.2.0.1": "203.0.113.9"}'
    try:
        proc = sniff("--hep", f"127.0.0.1:{port}", "--duration", "300", "--inactivity", "1.5", db=tmp_path / "s.db")
    finally:
        del os.environ["CALLQA_NAT_ALIASES"]
    call = captures.Call("hep-replay-1", caller_frames=captures.silence(201 * 0.02),
                         callee_frames=captures.silence(47 * 0.02), hangup="callee")  # fmt: skip
    capture = captures.write(tmp_path / "call.pcap", call.packets())
    wait_listening(proc, "udp", port)
    dec, segments = Decoder(), []
    for frame in CaptureFile(capture).frames():
        seg = dec.decode(frame.ts, frame.linktype, frame.data)
        if seg is not None:
            segments.append(seg)
    t0, now = segments[0].ts, time.time()  # an agent stamps packets with its own (current) clock
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for seg in segments:
            s.sendto(build_hep3(replace(seg, ts=now + (seg.ts - t0) / 10)), ("127.0.0.1", port))
            time.sleep(0.0005)
    out, err = lines_until(proc, lambda lines: len(lines) >= 1)
    assert proc.returncode == 0, err
    (report,) = [json.loads(line) for line in out]
    assert report["sip"]["call_id"] == "hep-replay-1"
    assert report["sip"]["matched_by"] == "sdp port (NAT)"
    assert sorted((s["leg"], s["packets"]) for s in report["streams"]) == [("callee", 47), ("caller", 201)]


def test_tracker_keeps_a_quiet_direction_of_a_call_still_in_progress() -> None:
    """A direction that stopped long before the call ends must stay with the call until the call is over."""
    from callqa.capture.calls import Tracker

    tracker = Tracker(inactivity_s=2, grace_s=2)
    t0 = 1000.0
    a, b = (CALLER, 5060), (CALLEE, 5060)

    def seg(ts: float, src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> Segment:
        return Segment(ts, PROTO_UDP, src[0], src[1], dst[0], dst[1], payload)

    feed = [seg(t0, a, b, sip(f"INVITE sip:cust@{CALLEE} SIP/2.0", "1 INVITE", sdp(CALLER, 41000))),
            seg(t0 + 0.1, b, a, sip("SIP/2.0 200 OK", "1 INVITE", sdp(CALLEE, 42000)))]  # fmt: skip
    for k in range(500):  # caller talks for 10 s; the callee's audio stops after 2 s
        ts = t0 + 0.2 + 0.02 * k
        feed.append(
            seg(ts, (CALLER, 41000), (CALLEE, 42000), struct.pack(">BBHII", 0x80, 0, k, 160 * k, 1) + bytes(160))
        )
        if k < 100:
            feed.append(
                seg(ts, (CALLEE, 42000), (CALLER, 41000), struct.pack(">BBHII", 0x80, 0, k, 160 * k, 2) + bytes(160))
            )
    feed.append(seg(t0 + 10.3, a, b, sip(f"BYE sip:cust@{CALLEE} SIP/2.0", "2 BYE")))
    done, next_tick = [], t0 + 1
    for s in feed:
        tracker.feed_segment(s)
        if s.ts >= next_tick:  # as the live loop does, once a second
            done += tracker.expire(s.ts)
            next_tick = s.ts + 1
    done += tracker.expire(float("inf"))
    (call,) = done
    assert {role: len(sts[0].packets) for role, sts in call.streams.items()} == {"caller": 500, "callee": 100}
