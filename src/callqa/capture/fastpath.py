"""Fast path for large pcap files: RTP over plain IPv4/UDP is parsed in bulk with NumPy, block by block,
instead of packet by packet; everything else (SIP, RTCP, IPv6, fragments, tunnels...) still goes through the
Tracker. Streams come out as ``PacketTable``s (columns, not objects), and their statistics are computed with
array operations where a stream is regular (in order, one clock), falling back to the exact per-packet
recurrences of ``StreamStats`` otherwise. Results are identical to the per-packet path (tests compare them).
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from callqa.errors import InputError
from callqa.protocol.packet import LINK_ETHERNET, LINK_RAW, LINK_SLL
from callqa.protocol.pcap import MAX_RECORD
from callqa.protocol.rtp import PT_CN, PT_CN_OLD, RtpPacket, StreamStats, unwrap

BLOCK = 4 * 1024 * 1024
StreamKey = tuple[str, int, str, int, int]


class PacketTable:
    """A stream's packets as columns (about 16 bytes a packet instead of a Python object each).

    Filled either in bulk from NumPy arrays (``from_arrays``) or one packet at a time (``add``, growable
    ``array.array`` columns). The columns read as NumPy arrays; indexing and iteration give ``RtpPacket``
    objects for the code that wants them. Payloads are kept when ``keep_payloads`` (audio decoding), and
    4-byte payloads (RFC 4733 events) always."""

    def __init__(self, keep_payloads: bool = True) -> None:
        self._cols: tuple[array, array, array, array, array] | None = (
            array("d"), array("i"), array("q"), array("h"), array("b"))  # fmt: skip
        self._np: tuple[np.ndarray, ...] | None = None
        self.payloads: list[bytes] | None = [] if keep_payloads else None
        self.events: dict[int, bytes] = {}  # row -> payload, for 4-byte payloads (RFC 4733 events)

    @classmethod
    def from_arrays(cls, arrival: np.ndarray, seq: np.ndarray, ts: np.ndarray, pt: np.ndarray, marker: np.ndarray,
                    events: dict[int, bytes]) -> PacketTable:  # fmt: skip
        table = cls(keep_payloads=False)
        table._cols, table._np = None, (arrival, seq, ts, pt, marker)
        table.events = events
        return table

    def add(self, arrival: float, seq: int, ts: int, pt: int, marker: bool, payload: bytes) -> None:
        if self._cols is None:
            raise TypeError("a bulk-built table cannot grow")
        row = len(self._cols[0])
        a, s, t, p, m = self._cols
        a.append(arrival)
        s.append(seq)
        t.append(ts)
        p.append(pt)
        m.append(marker)
        if self.payloads is not None:
            self.payloads.append(payload)
        if len(payload) == 4:
            self.events[row] = payload

    def _column(self, i: int) -> np.ndarray:
        if self._np is not None:
            return self._np[i]
        assert self._cols is not None
        dtype = (np.float64, np.int32, np.int64, np.int16, np.int8)[i]
        return np.frombuffer(self._cols[i], dtype=dtype) if len(self._cols[i]) else np.empty(0, dtype)

    @property
    def arrival(self) -> np.ndarray:
        return self._column(0)

    @property
    def seq(self) -> np.ndarray:
        return self._column(1)

    @property
    def ts(self) -> np.ndarray:
        return self._column(2)

    @property
    def pt(self) -> np.ndarray:
        return self._column(3)

    @property
    def marker(self) -> np.ndarray:
        return self._column(4).astype(bool)

    def __len__(self) -> int:
        return len(self._cols[0]) if self._cols is not None else int(self._np[0].size)  # type: ignore[index]

    def __getitem__(self, i: int) -> RtpPacket:
        i = int(i) % len(self)
        if self._cols is not None:
            a, s, t, p, m = self._cols
            payload = self.payloads[i] if self.payloads is not None else self.events.get(i, b"")
            return RtpPacket(a[i], s[i], t[i], p[i], bool(m[i]), payload)
        return RtpPacket(float(self.arrival[i]), int(self.seq[i]), int(self.ts[i]), int(self.pt[i]),
                         bool(self._np[4][i]), self.events.get(i, b""))  # type: ignore[index]  # fmt: skip

    def __iter__(self) -> Iterator[RtpPacket]:
        for i in range(len(self)):
            yield self[i]

    def take_head(self, n: int) -> PacketTable:
        """Remove the first ``n`` packets and return them as a table of their own."""
        n = max(0, min(n, len(self)))
        if self._cols is None:
            cols = [np.asarray(c) for c in self._np]  # type: ignore[union-attr]
            head = PacketTable.from_arrays(cols[0][:n], cols[1][:n], cols[2][:n], cols[3][:n], cols[4][:n], {})
            self._np = tuple(c[n:].copy() for c in cols)
        else:
            head = PacketTable(keep_payloads=self.payloads is not None)
            head._cols = tuple(c[:n] for c in self._cols)  # type: ignore[assignment]
            for c in self._cols:
                del c[:n]  # (no NumPy view of a column may be alive here: the array is resized)
            if self.payloads is not None:
                head.payloads, self.payloads = self.payloads[:n], self.payloads[n:]
        head.events = {r: p for r, p in self.events.items() if r < n}
        self.events = {r - n: p for r, p in self.events.items() if r >= n}
        return head

    def merged(self, other: PacketTable) -> PacketTable:
        """Both tables' packets in arrival order (stable), as one bulk table (events kept, payloads dropped)."""
        order = np.argsort(np.concatenate([self.arrival, other.arrival]), kind="stable")
        arrival, seq, ts, pt, marker = (np.concatenate([getattr(self, c), getattr(other, c)])[order]
                                        for c in ("arrival", "seq", "ts", "pt", "marker"))  # fmt: skip
        where = np.empty(order.size, np.int64)
        where[order] = np.arange(order.size)
        events = {int(where[r]): p for r, p in self.events.items()}
        events |= {int(where[len(self) + r]): p for r, p in other.events.items()}
        return PacketTable.from_arrays(arrival, seq, ts, pt, marker, events)

    def extended_ts(self) -> np.ndarray:
        return self.unwrap32(self.ts)

    @staticmethod
    def unwrap32(ts: np.ndarray, previous: int | None = None) -> np.ndarray:
        """32-bit timestamps unwrapped (each step taken as the nearest, like ``rtp.unwrap``), continuing from
        ``previous`` when given."""
        return _unwrap(ts, 32, previous)


@dataclass
class _Columns:
    arrival: list[np.ndarray]
    fields: list[np.ndarray]  # structured rows: src, sport, dst, dport, ssrc, seq, ts, pt, marker, plen, order
    events: list[tuple[int, bytes]]


ROW = np.dtype([
    ("src", ">u4"), ("sport", ">u2"), ("dst", ">u4"), ("dport", ">u2"), ("ssrc", ">u4"), ("seq", ">u2"),
    ("ts", ">u4"), ("pt", "u1"), ("marker", "?"), ("plen", "<i4"), ("order", "<i8"),
])  # fmt: skip


def scan_pcap(path: Path, on_other, warn) -> tuple[dict[StreamKey, PacketTable], float | None, int] | None:  # type: ignore[no-untyped-def]
    """Bulk-parse RTP in a classic pcap; ``on_other(ts, linktype, frame)`` gets every other frame, in order, and
    ``warn(text)`` what the per-packet reader would warn about (a truncated or corrupt tail).
    Returns (streams, first timestamp, frames), or None when the file is not a classic pcap this path handles."""
    try:
        f = open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    with f:
        head = f.read(24)
        if len(head) < 24:
            return None
        magic = struct.unpack("<I", head[:4])[0]
        if magic not in (0xA1B2C3D4, 0xA1B23C4D):
            return None  # big-endian pcap or pcapng: the per-packet reader handles them
        divisor = 1e9 if magic == 0xA1B23C4D else 1e6
        linktype = struct.unpack("<I", head[20:24])[0] & 0xFFFF
        if linktype not in (LINK_ETHERNET, LINK_SLL, LINK_RAW):
            return None
        cols = _Columns([], [], [])
        first: float | None = None
        carry, order, base = b"", 0, 24  # base: file offset of buf[0]
        unpack = struct.Struct("<IIII").unpack_from
        while True:
            block = f.read(BLOCK)
            buf = carry + block
            if not buf:
                break
            offsets, pos = [], 0
            n = len(buf)
            corrupt = False
            while pos + 16 <= n:
                sec, frac, incl, _ = unpack(buf, pos)
                if incl > MAX_RECORD:
                    warn(f"implausible record length {incl} at byte {base + pos}: stopped reading")
                    corrupt = True
                    break
                if pos + 16 + incl > n:
                    break
                offsets.append(pos)
                pos += 16 + incl
            if not block and pos < n and not corrupt:
                part = "partial record header" if n - pos < 16 else "partial packet"
                warn(f"capture truncated at byte {base + pos + (0 if n - pos < 16 else 16)} ({part})")
            carry = buf[pos:]
            base += pos
            if offsets:
                if first is None:
                    sec, frac = struct.unpack_from("<II", buf, offsets[0])
                    first = sec + frac / divisor
                order = _block(buf, np.array(offsets, np.int64), linktype, divisor, order, cols, on_other)
            if not block or corrupt:
                break
    if not cols.fields:
        return {}, first, order
    return _tables(cols), first, order


def _block(buf: bytes, offs: np.ndarray, linktype: int, divisor: float, order: int, cols: _Columns,
           on_other) -> int:  # type: ignore[no-untyped-def]  # fmt: skip
    a = np.frombuffer(buf, np.uint8)

    def u32(p: np.ndarray) -> np.ndarray:  # little-endian, the pcap record header
        return (
            a[p].astype(np.uint32)
            | a[p + 1].astype(np.uint32) << 8
            | a[p + 2].astype(np.uint32) << 16
            | (a[p + 3].astype(np.uint32) << 24)
        )

    def be16(p: np.ndarray) -> np.ndarray:
        return a[p].astype(np.int64) << 8 | a[p + 1]

    def be32(p: np.ndarray) -> np.ndarray:
        return be16(p) << 16 | be16(p + 2)

    ts = u32(offs) + u32(offs + 4) / divisor
    incl = u32(offs + 8).astype(np.int64)
    frame = offs + 16
    end = frame + incl
    if linktype == LINK_ETHERNET:
        ok = incl >= 14 + 20 + 8 + 12
        etype = np.where(ok, be16(np.minimum(frame + 12, a.size - 2)), 0)
        vlan = etype == 0x8100
        l3 = frame + 14 + 4 * vlan
        etype = np.where(vlan & (incl >= 18 + 40), be16(np.minimum(frame + 16, a.size - 2)), etype)
    elif linktype == LINK_SLL:
        ok = incl >= 16 + 20 + 8 + 12
        etype = np.where(ok, be16(np.minimum(frame + 14, a.size - 2)), 0)
        l3 = frame + 16
    else:
        ok = incl >= 20 + 8 + 12
        l3 = frame
        etype = np.where(ok & ((a[np.minimum(frame, a.size - 1)] >> 4) == 4), 0x0800, 0)
    l3c = np.minimum(l3, a.size - 40)
    ihl = (a[l3c] & 0x0F).astype(np.int64) * 4
    fast = ok & (etype == 0x0800) & ((a[l3c] >> 4) == 4) & (ihl >= 20) & (a[l3c + 9] == 17)
    fast &= (be16(l3c + 6) & 0x3FFF) == 0  # not a fragment
    udp = l3 + ihl
    udpc = np.minimum(udp, a.size - 20)
    ulen = be16(udpc + 4)
    rtp = udp + 8
    plen = np.minimum(ulen - 8, end - rtp)
    fast &= (ulen >= 20) & (rtp + 12 <= end)
    rtpc = np.minimum(rtp, a.size - 12)
    b0, b1 = a[rtpc], a[rtpc + 1]
    fast &= ((b0 >> 6) == 2) & (((b1 & 0x7F) < 72) | ((b1 & 0x7F) > 79))
    header = 12 + 4 * (b0 & 0x0F).astype(np.int64)
    fast &= rtp + header <= end
    fast &= (b0 & 0x30) == 0  # no padding or header extension: other packets take the exact path
    for i in np.flatnonzero(~fast):
        o = int(offs[i])
        on_other(float(ts[i]), linktype, buf[o + 16 : o + 16 + int(incl[i])])
    idx = np.flatnonzero(fast)
    if idx.size:
        r, l3f, u = rtpc[idx], l3c[idx], udpc[idx]
        rows = np.empty(idx.size, ROW)
        rows["src"], rows["dst"] = be32(l3f + 12), be32(l3f + 16)
        rows["sport"], rows["dport"] = be16(u), be16(u + 2)
        rows["seq"], rows["ts"], rows["ssrc"] = be16(r + 2), be32(r + 4), be32(r + 8)
        rows["pt"], rows["marker"] = b1[idx] & 0x7F, (b1[idx] & 0x80) > 0
        rows["plen"] = plen[idx] - header[idx]
        rows["order"] = order + idx
        cols.arrival.append(ts[idx])
        cols.fields.append(rows)
        for j in np.flatnonzero(rows["plen"] == 4):
            p = int(r[j] + header[idx][j])
            cols.events.append((int(rows["order"][j]), bytes(buf[p : p + 4])))
    return order + offs.size


def _tables(cols: _Columns) -> dict[StreamKey, PacketTable]:
    rows = np.concatenate(cols.fields)
    arrival = np.concatenate(cols.arrival)
    cols.fields.clear()  # the per-block pieces are no longer needed: keep the peak down
    cols.arrival.clear()
    hosts = rows["src"].astype(np.uint64) << np.uint64(32) | rows["dst"].astype(np.uint64)
    rest = (rows["sport"].astype(np.uint64) << np.uint64(48) | rows["dport"].astype(np.uint64) << np.uint64(32)
            | rows["ssrc"].astype(np.uint64))  # fmt: skip
    order = np.lexsort((rest, hosts))  # stable: capture order within a stream
    h, r_ = hosts[order], rest[order]
    bounds = np.flatnonzero((np.diff(h) != 0) | (np.diff(r_) != 0)) + 1
    events = dict(cols.events)
    out: dict[StreamKey, PacketTable] = {}
    for part in np.split(order, bounds):
        k = rows[part[0]]
        key = (_ip(int(k["src"])), int(k["sport"]), _ip(int(k["dst"])), int(k["dport"]), int(k["ssrc"]))
        r = rows[part]
        ev = {i: events[int(o)] for i, o in enumerate(r["order"]) if int(o) in events} if events else {}
        out[key] = PacketTable.from_arrays(arrival[part], r["seq"].astype(np.int32), r["ts"].astype(np.int64),
                                           r["pt"].astype(np.int16), r["marker"], ev)  # fmt: skip
    return out


def _ip(v: int) -> str:
    return f"{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}"


SEEN_WINDOW = 1024  # sequence numbers remembered for duplicate detection once a piece of a stream is measured


def table_stats(
    t: PacketTable, clocks: np.ndarray, capture_start: float, stats: StreamStats | None = None
) -> StreamStats:
    """StreamStats for a table, continuing ``stats`` when given (a stream measured piece by piece): array
    operations while the stream is regular, else the per-packet recurrences. Either way the result is what
    ``StreamStats.add`` gives packet by packet (tests compare them).

    ``clocks`` is the RTP clock of each packet (0 for telephone-event and unknown types)."""
    stats = stats if stats is not None else StreamStats()
    if len(t) == 0:
        return stats
    ext_ts = PacketTable.unwrap32(t.ts, stats.last_ext_ts)
    ext_seq = unwrap16(t.seq, stats._max_ext_seq)
    arrival_ms = (t.arrival - capture_start) * 1000.0
    fresh = stats.first
    steps = np.diff(ext_seq) if stats._max_ext_seq is None else np.diff(ext_seq, prepend=stats._max_ext_seq)
    regular = (
        (len(t) >= 2 if fresh else stats.regular and int(clocks[0]) == stats.clock)
        and bool(np.all(ext_ts >= (ext_ts[0] if fresh else stats.first_ts)))
        and bool(np.all(steps >= 1))
        and bool(np.all(clocks == clocks[0]))
        and clocks[0] > 0
    )
    if not regular:
        for i in range(len(t)):
            stats.add(float(arrival_ms[i]), int(t.seq[i]), int(t.ts[i]), int(t.pt[i]), bool(t.marker[i]),
                      int(clocks[i]))  # fmt: skip
        stats.regular = False
        oldest = (stats._max_ext_seq or 0) - SEEN_WINDOW
        stats._seen = {s for s in stats._seen if s > oldest}
        return stats
    clock = float(clocks[0])
    # each packet is measured against the one before it (a new stream's first packet is only a reference)
    if fresh:
        ref_ms, ref_ts, ref_pt, total = arrival_ms[:-1], ext_ts[:-1], t.pt[:-1], 1
        stats.first, stats.start_seq, stats.first_ts = False, int(t.seq[0]), int(ext_ts[0])
        stats.start_time_ms = float(arrival_ms[0])
        new_ms, new_ts, pt, marker = arrival_ms[1:], ext_ts[1:], t.pt[1:], t.marker[1:]
    else:
        ref_ms = np.concatenate([[stats.time_ms], arrival_ms[:-1]])
        ref_ts = np.concatenate([[stats.seq_ts], ext_ts[:-1]])
        ref_pt = np.concatenate([[stats.pt], t.pt[:-1]])
        total, new_ms, new_ts, pt, marker = stats.total, arrival_ms, ext_ts, t.pt, t.marker
    delta = new_ms - ref_ms
    diff = np.abs(delta - (new_ts - ref_ts) / (clock / 1000.0))
    values, j = [], stats.jitter
    for d in diff.tolist():  # J = (15 J + |D|) / 16, RFC 3550 A.8: the same arithmetic as StreamStats
        j = (15 * j + d) / 16
        values.append(j)
    jitter = np.array(values)
    cn = (pt == PT_CN) | (pt == PT_CN_OLD)
    follows_cn = (ref_pt == PT_CN) | (ref_pt == PT_CN_OLD)
    ok = ~(marker | cn | follows_cn)
    if ok.any():
        stats.max_delta = max(stats.max_delta, float(delta[ok].max()))
        stats.max_jitter = max(stats.max_jitter, float(jitter[ok].max()))
        mean = stats.mean_jitter
        for k, jk in zip((np.flatnonzero(ok) + total).tolist(), jitter[ok].tolist(), strict=True):
            mean = (mean * (k - 1) + jk) / k  # Wireshark's running mean over all packets so far
        stats.mean_jitter = mean
    last_seq = int(t.seq[-1])
    stats.sequence_errors += int(np.count_nonzero(steps > 1))
    stats.seq_num = stats.stop_seq = last_seq
    stats.seq_cycles = (int(ext_seq[-1]) - last_seq) >> 16
    stats.under = stats.seq_cycles > 0 and last_seq <= stats.start_seq
    stats.time_ms = stats.end_time_ms = float(arrival_ms[-1])
    stats.seq_ts = stats.last_ext_ts = int(ext_ts[-1])
    stats.jitter, stats.pt, stats.delta = j, int(t.pt[-1]), float(delta[-1])
    stats.total += len(t)
    stats._max_ext_seq = int(ext_seq[-1])
    stats._seen = set(ext_seq[-SEEN_WINDOW:].tolist())
    stats.regular, stats.clock = True, int(clock)
    return stats


def unwrap16(seq: np.ndarray, previous: int | None = None) -> np.ndarray:
    """16-bit sequence numbers unwrapped, continuing from ``previous`` (an extended number) when given."""
    return _unwrap(seq, 16, previous)


def _unwrap(values: np.ndarray, bits: int, previous: int | None) -> np.ndarray:
    """Each step taken as the nearest (like ``rtp.unwrap``); the first value placed nearest to ``previous``."""
    if values.size == 0:
        return values.astype(np.int64)
    half = 1 << (bits - 1)
    first = int(values[0]) if previous is None else unwrap(previous, int(values[0]), bits)
    steps = np.remainder(np.diff(values.astype(np.int64)) + half, 1 << bits) - half
    return np.concatenate([[first], first + np.cumsum(steps)])
