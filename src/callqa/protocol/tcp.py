"""SIP over TCP and over WebSocket (RFC 7118): per-flow reassembly in sequence order, retransmissions
dropped, messages cut by Content-Length. Buffers are bounded so a long-lived flow keeps flat memory."""

from __future__ import annotations

import re
from collections.abc import Iterator

from callqa.protocol.sip import METHODS

MAX_BUFFER = 256 * 1024
MAX_FLOWS = 4096
_START = re.compile(
    rb"(?:SIP/2\.0 \d{3}[^\r\n]*|(?:" + b"|".join(m.encode() for m in METHODS) + rb") \S+ SIP/2\.0)\r?\n"
)
_LENGTH = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*(\d+)", re.IGNORECASE)

FlowKey = tuple[str, int, str, int]


class TcpSipReassembler:
    def __init__(self) -> None:
        self._next: dict[FlowKey, int] = {}
        self._buf: dict[FlowKey, bytearray] = {}

    def feed(self, flow: FlowKey, seq: int, payload: bytes) -> Iterator[bytes]:
        """Add a segment; yield every SIP message it completes (as raw bytes)."""
        expected = self._next.get(flow)
        if expected is not None:
            offset = (seq - expected) % (1 << 32)
            if offset >= 1 << 31:  # entirely or partly a retransmission
                overlap = (expected - seq) % (1 << 32)
                if overlap >= len(payload):
                    return
                payload, seq = payload[overlap:], expected
            elif offset:  # a gap (lost segment): start over at this segment
                self._buf[flow] = bytearray()
        if flow not in self._buf and len(self._buf) >= MAX_FLOWS:
            oldest = next(iter(self._buf))
            del self._buf[oldest]
            self._next.pop(oldest, None)
        buf = self._buf.setdefault(flow, bytearray())
        buf += payload
        self._next[flow] = (seq + len(payload)) % (1 << 32)
        yield from _messages(buf)
        if len(buf) > MAX_BUFFER:
            del buf[:]


def _messages(buf: bytearray) -> Iterator[bytes]:
    while buf:
        if buf[0] in (0x81, 0x82, 0x01, 0x02) and not buf.startswith(b"SIP"):
            frame = _websocket_frame(buf)
            if frame is None:
                return
            payload, used = frame
            del buf[:used]
            if _START.match(payload):
                yield payload
            continue
        m = _START.search(buf)
        if m is None:
            if len(buf) > 4096:
                del buf[:-64]  # not SIP (TLS, HTTP upgrade...): keep only a tail that may start a message
            return
        if m.start():
            del buf[: m.start()]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buf[: end + 2])
        length = _LENGTH.search(head)
        total = end + 4 + (int(length.group(1)) if length else 0)
        if len(buf) < total:
            return
        yield bytes(buf[:total])
        del buf[:total]


def _websocket_frame(buf: bytearray) -> tuple[bytes, int] | None:
    """(payload, bytes used) of a complete RFC 6455 frame at the start of ``buf``, or None if incomplete."""
    if len(buf) < 2:
        return None
    masked, n = buf[1] & 0x80, buf[1] & 0x7F
    pos = 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, pos = int.from_bytes(buf[2:4], "big"), 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, pos = int.from_bytes(buf[2:10], "big"), 10
    key = b""
    if masked:
        key, pos = bytes(buf[pos : pos + 4]), pos + 4
    if len(buf) < pos + n:
        return None
    payload = bytes(buf[pos : pos + n])
    if masked:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return payload, pos + n
