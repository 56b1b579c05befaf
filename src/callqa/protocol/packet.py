"""Link, network and transport decoding: a captured frame to a UDP or TCP segment with its addresses.

Handles Ethernet (with 802.1Q/QinQ tags), Linux cooked capture v1/v2, BSD loopback (DLT_NULL), raw IP,
IPv4 and IPv6 (with extension headers), IP fragments (reassembled), IP-in-IP and IPv6-in-IPv4 tunnels, and
GRE carrying ERSPAN type II/III. Frames that are none of these return None; malformed ones raise ParseError.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from callqa.errors import ParseError

LINK_NULL = 0
LINK_ETHERNET = 1
LINK_RAW = 101
LINK_RAW_OLD = 12
LINK_SLL = 113
LINK_SLL2 = 276
LINK_IPV4 = 228
LINK_IPV6 = 229
ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_VLAN = (0x8100, 0x88A8, 0x9100)
PROTO_IPIP = 4
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_IPV6 = 41
PROTO_GRE = 47
IPV6_EXT = (0, 43, 60)  # hop-by-hop, routing, destination options
IPV6_FRAG = 44
GRE_ERSPAN2 = 0x88BE
GRE_ERSPAN3 = 0x22EB
GRE_TEB = 0x6558  # transparent Ethernet bridging
MAX_FRAGMENT_SETS = 1024


@dataclass(frozen=True, slots=True)
class Segment:
    """A UDP datagram or TCP segment payload with its endpoints."""

    ts: float
    proto: int  # PROTO_UDP or PROTO_TCP
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes
    tcp_seq: int = 0
    tcp_flags: int = 0


class Decoder:
    """Stateful only for IP fragment reassembly (bounded: old sets are dropped)."""

    def __init__(self) -> None:
        self._fragments: dict[tuple[object, ...], dict[int, tuple[bytes, bool]]] = {}

    def decode(self, ts: float, linktype: int, frame: bytes) -> Segment | None:
        if linktype == LINK_ETHERNET:
            return self._ethernet(ts, frame)
        if linktype in (LINK_RAW, LINK_RAW_OLD, LINK_IPV4, LINK_IPV6):
            return self._ip(ts, frame)
        if linktype == LINK_SLL:
            _need(frame, 16, "Linux cooked header")
            return self._ethertype(ts, struct.unpack_from(">H", frame, 14)[0], frame[16:])
        if linktype == LINK_SLL2:
            _need(frame, 20, "Linux cooked v2 header")
            return self._ethertype(ts, struct.unpack_from(">H", frame, 0)[0], frame[20:])
        if linktype == LINK_NULL:
            _need(frame, 4, "loopback header")
            return self._ip(ts, frame[4:])
        return None

    def _ethernet(self, ts: float, frame: bytes) -> Segment | None:
        _need(frame, 14, "Ethernet header")
        etype = struct.unpack_from(">H", frame, 12)[0]
        pos = 14
        while etype in ETH_VLAN:
            _need(frame, pos + 4, "VLAN tag")
            etype = struct.unpack_from(">H", frame, pos + 2)[0]
            pos += 4
        return self._ethertype(ts, etype, frame[pos:])

    def _ethertype(self, ts: float, etype: int, payload: bytes) -> Segment | None:
        if etype in (ETH_IPV4, ETH_IPV6):
            return self._ip(ts, payload)
        return None

    def _ip(self, ts: float, data: bytes) -> Segment | None:
        if not data:
            raise ParseError("IP packet is empty")
        version = data[0] >> 4
        if version == 4:
            return self._ipv4(ts, data)
        if version == 6:
            return self._ipv6(ts, data)
        return None

    def _ipv4(self, ts: float, data: bytes) -> Segment | None:
        _need(data, 20, "IPv4 header")
        ihl = (data[0] & 0x0F) * 4
        total = struct.unpack_from(">H", data, 2)[0]
        if ihl < 20 or total < ihl:
            raise ParseError(f"IPv4 header is malformed (ihl {ihl}, total length {total})")
        _need(data, total, "IPv4 packet")
        ident, frag = struct.unpack_from(">HH", data, 4)
        proto = data[9]
        src, dst = data[12:16], data[16:20]
        payload = data[ihl:total]
        more, offset = bool(frag & 0x2000), (frag & 0x1FFF) * 8
        if more or offset:
            whole = self._reassemble((4, src, dst, ident, proto), offset, payload, more)
            if whole is None:
                return None
            payload = whole
        return self._transport(ts, proto, _addr4(src), _addr4(dst), payload)

    def _ipv6(self, ts: float, data: bytes) -> Segment | None:
        _need(data, 40, "IPv6 header")
        plen = struct.unpack_from(">H", data, 4)[0]
        _need(data, 40 + plen, "IPv6 packet")
        nxt = data[6]
        src, dst = data[8:24], data[24:40]
        payload = data[40 : 40 + plen]
        while True:
            if nxt in IPV6_EXT:
                _need(payload, 2, "IPv6 extension header")
                nxt, payload = payload[0], payload[(payload[1] + 1) * 8 :]
            elif nxt == IPV6_FRAG:
                _need(payload, 8, "IPv6 fragment header")
                frag, ident = struct.unpack_from(">HI", payload, 2)
                inner_next = payload[0]
                whole = self._reassemble((6, src, dst, ident), frag & 0xFFF8, payload[8:], bool(frag & 1))
                if whole is None:
                    return None
                nxt, payload = inner_next, whole
            else:
                break
        return self._transport(ts, nxt, _addr6(src), _addr6(dst), payload)

    def _transport(self, ts: float, proto: int, src: str, dst: str, payload: bytes) -> Segment | None:
        if proto == PROTO_UDP:
            _need(payload, 8, "UDP header")
            sport, dport, length = struct.unpack_from(">HHH", payload)
            end = length if 8 <= length <= len(payload) else len(payload)
            return Segment(ts, PROTO_UDP, src, sport, dst, dport, payload[8:end])
        if proto == PROTO_TCP:
            _need(payload, 20, "TCP header")
            sport, dport, seq = struct.unpack_from(">HHI", payload)
            offset = (payload[12] >> 4) * 4
            if offset < 20:
                raise ParseError(f"TCP data offset {offset} is too small")
            return Segment(ts, PROTO_TCP, src, sport, dst, dport, payload[offset:], seq, payload[13])
        if proto in (PROTO_IPIP, PROTO_IPV6):
            return self._ip(ts, payload)
        if proto == PROTO_GRE:
            return self._gre(ts, payload)
        return None

    def _gre(self, ts: float, data: bytes) -> Segment | None:
        _need(data, 4, "GRE header")
        flags, ptype = struct.unpack_from(">HH", data)
        pos = 4 + (4 if flags & 0x8000 else 0) + (4 if flags & 0x2000 else 0) + (4 if flags & 0x1000 else 0)
        if ptype == GRE_ERSPAN2:
            return self._ethernet(ts, data[pos + 8 :]) if flags & 0x1000 else self._ethernet(ts, data[pos:])
        if ptype == GRE_ERSPAN3:
            _need(data, pos + 12, "ERSPAN III header")
            extra = 8 if data[pos + 11] & 0x01 else 0  # optional platform-specific subheader
            return self._ethernet(ts, data[pos + 12 + extra :])
        if ptype == GRE_TEB:
            return self._ethernet(ts, data[pos:])
        if ptype in (ETH_IPV4, ETH_IPV6):
            return self._ip(ts, data[pos:])
        return None

    def _reassemble(self, key: tuple[object, ...], offset: int, part: bytes, more: bool) -> bytes | None:
        """Collect fragments; return the whole payload once every piece up to the last has arrived."""
        pieces = self._fragments.setdefault(key, {})
        pieces[offset] = (part, more)
        if len(self._fragments) > MAX_FRAGMENT_SETS:
            self._fragments.pop(next(iter(self._fragments)))
        if not any(not m for _, m in pieces.values()):
            return None
        out, pos = bytearray(), 0
        for off in sorted(pieces):
            if off != pos:  # a gap (piece still missing) or an overlap: wait for more
                return None
            chunk, _ = pieces[off]
            out += chunk
            pos += len(chunk)
        del self._fragments[key]
        return bytes(out)


def _need(data: bytes, n: int, what: str) -> None:
    if len(data) < n:
        raise ParseError(f"{what} is truncated ({len(data)} of {n} bytes)")


def _addr4(b: bytes) -> str:
    return f"{b[0]}.{b[1]}.{b[2]}.{b[3]}"


def _addr6(b: bytes) -> str:
    return str(ipaddress.IPv6Address(b))
