"""HEP v3 (Homer Encapsulation Protocol), as Kamailio, FreeSWITCH, Asterisk and heplify send it: each
datagram carries one captured packet's addresses, ports, time and payload as typed chunks."""

from __future__ import annotations

import ipaddress
import struct

from callqa.errors import ParseError
from callqa.protocol.packet import PROTO_TCP, PROTO_UDP, Segment

MAGIC = b"HEP3"
CHUNK_FAMILY, CHUNK_PROTO, CHUNK_SRC4, CHUNK_DST4, CHUNK_SRC6, CHUNK_DST6 = 1, 2, 3, 4, 5, 6
CHUNK_SPORT, CHUNK_DPORT, CHUNK_SECONDS, CHUNK_MICROS, CHUNK_PAYLOAD = 7, 8, 9, 10, 15


def parse_hep3(data: bytes) -> Segment:
    """One HEP3 datagram as a Segment (UDP or TCP payload with its endpoints and capture time)."""
    if len(data) < 6 or data[:4] != MAGIC:
        raise ParseError("not a HEP3 packet (magic)")
    total = struct.unpack_from(">H", data, 4)[0]
    if total > len(data) or total < 6:
        raise ParseError(f"HEP3 packet is truncated ({len(data)} of {total} bytes)")
    chunks: dict[int, bytes] = {}
    pos = 6
    while pos + 6 <= total:
        _vendor, ctype, length = struct.unpack_from(">HHH", data, pos)
        if length < 6 or pos + length > total:
            raise ParseError(f"HEP3 chunk {ctype} is truncated")
        chunks[ctype] = data[pos + 6 : pos + length]
        pos += length
    try:
        if CHUNK_SRC4 in chunks:
            src = str(ipaddress.IPv4Address(chunks[CHUNK_SRC4]))
            dst = str(ipaddress.IPv4Address(chunks[CHUNK_DST4]))
        else:
            src = str(ipaddress.IPv6Address(chunks[CHUNK_SRC6]))
            dst = str(ipaddress.IPv6Address(chunks[CHUNK_DST6]))
        sport = struct.unpack(">H", chunks[CHUNK_SPORT])[0]
        dport = struct.unpack(">H", chunks[CHUNK_DPORT])[0]
        ts = struct.unpack(">I", chunks[CHUNK_SECONDS])[0] + struct.unpack(">I", chunks[CHUNK_MICROS])[0] / 1e6
        proto = chunks[CHUNK_PROTO][0]
        payload = chunks[CHUNK_PAYLOAD]
    except (KeyError, ValueError, struct.error, IndexError) as exc:
        raise ParseError(f"HEP3 packet lacks a required chunk or has a malformed one ({exc})") from exc
    if proto not in (PROTO_UDP, PROTO_TCP):
        raise ParseError(f"HEP3 carries IP protocol {proto}, not UDP or TCP")
    return Segment(ts, proto, src, sport, dst, dport, payload)


def build_hep3(seg: Segment, capture_id: int = 1) -> bytes:
    """Encode a Segment as HEP3 (used by tests and to forward captured packets to a HEP server)."""
    v6 = ":" in seg.src

    def chunk(ctype: int, value: bytes) -> bytes:
        return struct.pack(">HHH", 0, ctype, 6 + len(value)) + value

    body = b"".join([
        chunk(CHUNK_FAMILY, bytes([10 if v6 else 2])),
        chunk(CHUNK_PROTO, bytes([seg.proto])),
        chunk(CHUNK_SRC6 if v6 else CHUNK_SRC4, ipaddress.ip_address(seg.src).packed),
        chunk(CHUNK_DST6 if v6 else CHUNK_DST4, ipaddress.ip_address(seg.dst).packed),
        chunk(CHUNK_SPORT, struct.pack(">H", seg.sport)),
        chunk(CHUNK_DPORT, struct.pack(">H", seg.dport)),
        chunk(CHUNK_SECONDS, struct.pack(">I", int(seg.ts))),
        chunk(CHUNK_MICROS, struct.pack(">I", int(round((seg.ts % 1) * 1e6)) % 1000000)),
        chunk(11, bytes([1])),
        chunk(12, struct.pack(">I", capture_id)),
        chunk(CHUNK_PAYLOAD, seg.payload),
    ])  # fmt: skip
    return MAGIC + struct.pack(">H", 6 + len(body)) + body
