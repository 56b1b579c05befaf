"""Coverage-guided fuzzing of the parsers that read untrusted bytes, with atheris (libFuzzer for Python).

    python fuzz/targets.py sip -runs=100000            # one target; libFuzzer's options follow its name
    python fuzz/targets.py pcap -max_total_time=600 corpus/pcap/

Each target feeds the bytes to one parser. The contract is the one the analysis relies on: a parser returns a
value or raises ``callqa.errors.CallqaError`` (``ParseError``, ``InputError``, ``LimitError``); any other
exception is a crash that libFuzzer reports with the input that caused it. Every target starts from small valid
inputs (below), so that mutations begin inside the format rather than at its magic numbers.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["callqa"]):
    from callqa.audio.riff import read_wav
    from callqa.errors import CallqaError
    from callqa.protocol.hep import build_hep3, parse_hep3
    from callqa.protocol.packet import LINK_ETHERNET, LINK_SLL, PROTO_UDP, Decoder, Segment
    from callqa.protocol.pcap import CaptureFile
    from callqa.protocol.rtcp import parse_compound
    from callqa.protocol.rtp import RtpHeader
    from callqa.protocol.sdp import SessionDescription
    from callqa.protocol.sip import SipMessage
    from callqa.protocol.srtp import SrtpContext
    from callqa.protocol.tcp import TcpSipReassembler

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\na=sendrecv\r\n"
)
SIP = (
    b"INVITE sip:bob@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n"
    b'From: "Alice" <sip:alice@10.0.0.1>;tag=a1\r\nTo: <sip:bob@10.0.0.2>\r\nCall-ID: c1@10.0.0.1\r\n'
    b"CSeq: 1 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: %d\r\n\r\n" % len(SDP)
) + SDP
RTP = struct.pack(">BBHII", 0x80, 0, 1, 160, 0x1234) + b"\xff" * 160
RTCP = (
    struct.pack(">BBHI", 0x81, 200, 12, 0x1234)
    + b"\x00" * 20
    + struct.pack(">IIIIII", 0x5678, 0x01000002, 100, 5, 0, 0)
)  # SR with one report block
UDP = struct.pack(">HHHH", 4000, 4002, 8 + len(RTP), 0) + RTP
IP4 = (
    struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(UDP), 1, 0, 64, 17, 0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    + UDP
)
ETHERNET = b"\x00" * 12 + b"\x08\x00" + IP4
VLAN = b"\x00" * 12 + b"\x81\x00\x00\x05\x08\x00" + IP4
SLL = struct.pack(">HHH8sH", 0, 1, 6, b"\x00" * 8, 0x0800) + IP4
PCAP = (
    struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    + struct.pack("<IIII", 1, 0, len(ETHERNET), len(ETHERNET))
    + ETHERNET
)
PCAPNG = (
    struct.pack("<II", 0x0A0D0D0A, 28)
    + struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
    + struct.pack("<I", 28)
    + struct.pack("<IIHHI", 1, 20, 1, 0, 65535)
    + struct.pack("<I", 20)
    + struct.pack("<IIIIIII", 6, 32 + len(ETHERNET) + 2, 0, 0, 0, len(ETHERNET), len(ETHERNET))
    + ETHERNET
    + b"\x00\x00"
    + struct.pack("<I", 32 + len(ETHERNET) + 2)
)
WAV = (
    b"RIFF"
    + struct.pack("<I", 36 + 320)
    + b"WAVEfmt "
    + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
    + b"data"
    + struct.pack("<I", 320)
    + b"\x00\x01" * 160
)
HEP = build_hep3(Segment(1.5, PROTO_UDP, "10.0.0.1", 5060, "10.0.0.2", 5060, SIP))

_TMP = Path(tempfile.mkdtemp(prefix="callqa-fuzz-"))


def _file(data: bytes, suffix: str) -> Path:
    path = _TMP / f"input{suffix}"
    path.write_bytes(data)
    return path


def _pcap(data: bytes) -> None:
    capture = CaptureFile(_file(data, ".pcap"))
    decoder = Decoder()
    for frame in capture.frames():
        with contextlib.suppress(CallqaError):
            decoder.decode(frame.ts, frame.linktype, frame.data)


def _tcp(data: bytes) -> None:
    reassembler = TcpSipReassembler()
    flow = ("10.0.0.1", 5060, "10.0.0.2", 5060)
    half = len(data) // 2
    for seq, part in ((1000, data[:half]), (1000 + half, data[half:])):
        for message in reassembler.feed(flow, seq, part):  # type: ignore[arg-type]
            SipMessage.parse(message)


def _srtp(data: bytes) -> None:
    context = SrtpContext.from_sdes("AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz")
    context.decrypt(data)


def _frame(link: int) -> Callable[[bytes], None]:
    return lambda data: (Decoder().decode(0.0, link, data), None)[1]


# name -> (parser, seed inputs)
TARGETS: dict[str, tuple[Callable[[bytes], object], list[bytes]]] = {
    "sip": (SipMessage.parse, [SIP, SIP.replace(b"INVITE sip", b"SIP/2.0 200 OK\r\nX: sip", 1)]),
    "sdp": (SessionDescription.parse, [SDP]),
    "rtp": (RtpHeader.parse, [RTP, RTP[:1] + b"\x90" + RTP[2:12] + b"\xbe\xde\x00\x01abcd" + RTP[12:]]),
    "rtcp": (parse_compound, [RTCP]),
    "hep": (parse_hep3, [HEP]),
    "ethernet": (_frame(LINK_ETHERNET), [ETHERNET, VLAN]),
    "sll": (_frame(LINK_SLL), [SLL]),
    "tcp_sip": (_tcp, [SIP]),
    "srtp": (_srtp, [RTP]),
    "pcap": (_pcap, [PCAP, PCAPNG]),
    "wav": (lambda data: read_wav(_file(data, ".wav"), 60.0, 10_000_000), [WAV]),
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} TARGET [libFuzzer options] [corpus dirs]; targets: {', '.join(TARGETS)}")
    name = sys.argv.pop(1)
    parse, seeds = TARGETS[name]
    corpus = [a for a in sys.argv[1:] if not a.startswith("-")]
    if not corpus:  # a corpus of the seeds, so that a plain run starts from valid inputs
        seed_dir = _TMP / f"seeds-{name}"
        seed_dir.mkdir()
        for i, seed in enumerate(seeds):
            (seed_dir / f"seed{i}").write_bytes(seed)
        sys.argv.append(str(seed_dir))

    def one_input(data: bytes) -> None:
        with contextlib.suppress(CallqaError):  # a clear, typed refusal: what the contract asks for
            parse(data)

    atheris.Setup(sys.argv, one_input)
    os.environ.setdefault("CALLQA_FUZZ_TARGET", name)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
