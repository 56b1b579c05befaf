"""Fast path for large pcap files: RTP over plain IPv4/UDP is parsed in bulk with NumPy, block by block,
instead of packet by packet; everything else (SIP, RTCP, IPv6, fragments, tunnels...) still goes through the
Tracker. Streams come out as ``PacketTable``s (columns, not objects), and their statistics are computed with
array operations where a stream is regular (in order, one clock), falling back to the exact per-packet
recurrences of ``StreamStats`` otherwise. Results are identical to the per-packet path (tests compare them).
"""

from __future__ import annotations

import os
import struct
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from callqa.errors import InputError
from callqa.protocol.packet import LINK_ETHERNET, LINK_RAW, LINK_SLL
from callqa.protocol.pcap import (
    MAX_RECORD,
    PCAP_MAGIC_NS,
    PCAP_MAGIC_US,
    PCAPNG_BYTE_ORDER,
    PCAPNG_EPB,
    PCAPNG_IDB,
    PCAPNG_PB,
    PCAPNG_SHB,
    PCAPNG_SPB,
    _tsresol,
)
from callqa.protocol.rtp import PT_CN, PT_CN_OLD, RtpPacket, StreamStats, unwrap

BLOCK = 2 * 1024 * 1024
Buffer = bytes | bytearray
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

    def extend(self, arrival: np.ndarray, seq: np.ndarray, ts: np.ndarray, pt: np.ndarray, marker: np.ndarray,
               payloads: list[bytes] | None, events: dict[int, bytes]) -> None:  # fmt: skip
        """Append packets given as columns (``payloads`` one per packet when this table keeps them; ``events``
        by row within these packets)."""
        if self._cols is None:
            raise TypeError("a bulk-built table cannot grow")
        row = len(self._cols[0])
        for col, values, dtype in zip(self._cols, (arrival, seq, ts, pt, marker),
                                      (np.float64, np.int32, np.int64, np.int16, np.int8), strict=True):  # fmt: skip
            col.frombytes(np.ascontiguousarray(values, dtype).view(np.uint8).data)
        if self.payloads is not None:
            self.payloads.extend(payloads if payloads is not None else [b""] * arrival.size)
        for r, payload in events.items():
            self.events[row + r] = payload

    def sort_by_arrival(self) -> None:
        """Put the packets in arrival order (stable), payloads and events with them."""
        order = np.argsort(self.arrival, kind="stable")
        if np.all(order[1:] > order[:-1]):
            return
        cols = [self._column(i)[order] for i in range(5)]
        if self._cols is None:
            self._np = tuple(cols)
        else:
            self._cols = tuple(array(c.typecode, cols[i].tobytes()) for i, c in enumerate(self._cols))  # type: ignore[assignment]
        if self.payloads is not None:
            reordered = [self.payloads[i] for i in order.tolist()]
            if isinstance(self.payloads, list):
                self.payloads = reordered
            else:  # a spool on disk stays one
                self.payloads = self.payloads.fresh()
                self.payloads.extend(reordered)
        where = np.empty(order.size, np.int64)
        where[order] = np.arange(order.size)
        self.events = {int(where[r]): p for r, p in self.events.items()}

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

    def last_arrival(self) -> float:
        """The arrival time of the last row (without making a NumPy view: live calls ask this often)."""
        return float(self._cols[0][-1] if self._cols is not None else self._np[0][-1])  # type: ignore[index]

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


class _Sink:
    """The RTP rows found so far, compact (about 19 bytes a packet), each with the number of its stream."""

    def __init__(self) -> None:
        self.sid: list[np.ndarray] = []
        self.arrival: list[np.ndarray] = []
        self.seq: list[np.ndarray] = []
        self.ts: list[np.ndarray] = []
        self.ptm: list[np.ndarray] = []  # payload type | marker << 7
        self.events: list[tuple[int, bytes]] = []  # (row, payload) of 4-byte payloads
        self.keys: dict[tuple[int, int], int] = {}  # (src << 32 | dst, sport << 48 | dport << 32 | ssrc) -> stream
        self.rows = 0
        self._index = KeyIndex()  # the same keys, searched for a whole block at once

    def stream_ids(self, hosts: np.ndarray, rest: np.ndarray) -> np.ndarray:
        """Each row's stream number; new streams are numbered in order of first appearance."""
        uniq, first, inverse = np.unique(stream_hash(hosts, rest), return_index=True, return_inverse=True)
        u_hosts, u_rest = hosts[first], rest[first]
        ids = self._index.find(u_hosts, u_rest, uniq)
        if np.any(hosts != u_hosts[inverse]) or np.any(rest != u_rest[inverse]):
            pairs = np.stack([hosts, rest], axis=1)  # a hash collision (never seen in practice): exact grouping
            _, first, inverse = np.unique(pairs, axis=0, return_index=True, return_inverse=True)
            inverse, u_hosts, u_rest = inverse.reshape(-1), hosts[first], rest[first]
            ids = np.full(first.size, -1, np.int64)
        new = np.flatnonzero(ids < 0)
        if new.size:  # streams not seen before, or a collision: numbered through the dict, in order of appearance
            for i in new[np.argsort(first[new], kind="stable")].tolist():
                ids[i] = self.keys.setdefault((int(u_hosts[i]), int(u_rest[i])), len(self.keys))
            keys = np.array(list(self.keys), np.uint64).reshape(-1, 2)  # numbered in insertion order
            self._index = KeyIndex(keys[:, 0], keys[:, 1], np.arange(len(keys)))
        return ids[inverse]


_MIX = np.uint64(0x9E3779B97F4A7C15)  # spreads packed addresses over 64 bits


def stream_hash(hosts: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """Packed stream keys (``RtpRows.hosts``, ``RtpRows.rest``) mixed into one 64-bit number each."""
    return (hosts * _MIX ^ rest).view(np.int64)


class KeyIndex:
    """Packed stream keys and their numbers as sorted arrays: the rows of a whole block looked up with one search
    (the hash, then the exact key checked) instead of a dict look-up per row. Of keys that share a hash (never
    seen in practice) only one is found; callers treat the others as not found and take their exact path."""

    def __init__(self, hosts: np.ndarray | None = None, rest: np.ndarray | None = None,
                 ids: np.ndarray | None = None) -> None:  # fmt: skip
        hosts = np.empty(0, np.uint64) if hosts is None else np.asarray(hosts, np.uint64)
        rest = np.empty(0, np.uint64) if rest is None else np.asarray(rest, np.uint64)
        mixed = stream_hash(hosts, rest)
        order = np.argsort(mixed, kind="stable")
        self._hash, self._hosts, self._rest = mixed[order], hosts[order], rest[order]
        self._ids = np.empty(0, np.int64) if ids is None else np.asarray(ids, np.int64)[order]

    def __len__(self) -> int:
        return int(self._hash.size)

    def find(self, hosts: np.ndarray, rest: np.ndarray, mixed: np.ndarray | None = None) -> np.ndarray:
        """Each row's number, -1 where its key is not in the index (``mixed``: the rows' ``stream_hash``)."""
        mixed = stream_hash(hosts, rest) if mixed is None else mixed
        if not self._hash.size:
            return np.full(mixed.size, -1, np.int64)
        pos = np.minimum(np.searchsorted(self._hash, mixed), self._hash.size - 1)
        hit = (self._hash[pos] == mixed) & (self._hosts[pos] == hosts) & (self._rest[pos] == rest)
        return np.where(hit, self._ids[pos], -1)


def scan_capture(path: Path, on_other, warn) -> tuple[dict[StreamKey, PacketTable], float | None, int] | None:  # type: ignore[no-untyped-def]
    """Bulk-parse RTP in a pcap (either byte order) or pcapng file; ``on_other(ts, linktype, frame)`` gets every
    other frame, in order, and ``warn(text)`` what the per-packet reader would warn about (a truncated or corrupt
    tail). Returns (streams, first timestamp, frames), or None when the file is not one this path handles."""
    try:
        f = open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    with f:
        head = f.read(24)
        if len(head) < 24:
            return None
        magic_le, magic_be = struct.unpack("<I", head[:4])[0], struct.unpack(">I", head[:4])[0]
        if magic_le == PCAPNG_SHB:
            chunks = _pcapng_chunks(f, head, os.fstat(f.fileno()).st_size, warn)
        elif PCAP_MAGIC_US in (magic_le, magic_be) or PCAP_MAGIC_NS in (magic_le, magic_be):
            endian = "<" if magic_le in (PCAP_MAGIC_US, PCAP_MAGIC_NS) else ">"
            linktype = struct.unpack(endian + "I", head[20:24])[0] & 0xFFFF
            if linktype not in (LINK_ETHERNET, LINK_SLL, LINK_RAW):
                return None  # the per-packet reader handles the other link types as fast
            divisor = 1e9 if PCAP_MAGIC_NS in (magic_le, magic_be) else 1e6
            chunks = _pcap_chunks(f, endian, divisor, linktype, warn)
        else:
            return None
        sink, first, order = _Sink(), None, 0
        for buf, frame, incl, ts, linktype in chunks:
            if first is None and ts.size:
                first = float(ts[0])
            order = _frames(buf, frame, incl, ts, linktype, order, sink, on_other)
    return _tables(sink), first, order


Chunk = tuple[bytearray, np.ndarray, np.ndarray, np.ndarray, int]  # buffer, frame offsets, lengths, times, link


class _Blocks:
    """A file read ``BLOCK`` bytes at a time into one buffer, reused, after what the previous block left
    unparsed (a new bytes object for each block, and another to join it to that rest, cost more than parsing
    the block). A chunk made of the buffer is used up before the next read overwrites it."""

    def __init__(self, f, head: bytes) -> None:  # type: ignore[no-untyped-def]
        self.f, self.buf, self.n = f, bytearray(head), len(head)

    def next(self, used: int) -> int:
        """Drop the first ``used`` bytes and read the next block after the rest: ``buf[:n]`` then holds the data
        (the buffer itself may be longer). Returns the number of bytes read, 0 at the end of the file."""
        rest = self.n - used
        if len(self.buf) < rest + BLOCK:
            bigger = bytearray(rest + BLOCK)
            bigger[:rest] = self.buf[used : self.n]
            self.buf = bigger
        else:
            self.buf[:rest] = self.buf[used : self.n]
        got = self.f.readinto(memoryview(self.buf)[rest : rest + BLOCK])
        self.n = rest + got
        return got


def _pcap_chunks(f, endian: str, divisor: float, linktype: int, warn) -> Iterator[Chunk]:  # type: ignore[no-untyped-def]
    """Classic pcap records, a few megabytes at a time."""
    blocks, base, used = _Blocks(f, b""), 24, 0  # base: file offset of buf[0]
    unpack = struct.Struct(endian + "IIII").unpack_from
    native = struct.pack("=I", 1) == struct.pack(endian + "I", 1)
    while True:
        got = blocks.next(used)
        buf, n = blocks.buf, blocks.n
        if not n:
            return
        offsets: list[int] = []
        append = offsets.append
        pos, corrupt = 0, False
        runs: list[np.ndarray] = []  # offsets found by runs of records of one length (see _same_length)
        if native:  # the record lengths read as 32-bit words from four views (one per alignment): no tuples
            views = [memoryview(buf)[k : k + (n - k) // 4 * 4].cast("I") for k in range(4)]
            previous, cooldown = -1, 0
            while pos + 16 <= n:
                q = pos + 8
                incl = views[q & 3][q >> 2]
                if incl > MAX_RECORD or pos + 16 + incl > n:
                    break
                append(pos)
                pos += 16 + incl
                if incl == previous and not cooldown:
                    found = _same_length(buf, pos, incl, n)
                    if found.size:
                        runs += [np.array(offsets, np.int64), found]
                        offsets.clear()
                        pos = int(found[-1]) + 16 + incl
                    cooldown = 0 if found.size >= 8 else 64  # records of many lengths: speculate less often
                else:
                    cooldown = max(0, cooldown - 1)
                previous = incl
            views.clear()
        while pos + 16 <= n:
            _, _, incl, _ = unpack(buf, pos)
            if incl > MAX_RECORD:
                warn(f"implausible record length {incl} at byte {base + pos}: stopped reading")
                corrupt = True
                break
            if pos + 16 + incl > n:
                break
            append(pos)
            pos += 16 + incl
        if not got and pos < n and not corrupt:
            part = "partial record header" if n - pos < 16 else "partial packet"
            warn(f"capture truncated at byte {base + pos + (0 if n - pos < 16 else 16)} ({part})")
        used = pos
        base += pos
        if offsets or runs:
            offs = np.concatenate([*runs, np.array(offsets, np.int64)]) if runs else np.array(offsets, np.int64)
            fields = _u32(buf, offs, endian, 3)
            yield buf, offs + 16, fields[2].astype(np.int64), fields[0] + fields[1] / divisor, linktype
        if not got or corrupt:
            return


def _same_length(buf: Buffer, pos: int, incl: int, n: int, most: int = 8192) -> np.ndarray:
    """Offsets of the records from ``pos`` on while they have length ``incl`` too (most captures are long runs of
    equal RTP packets): each is checked, so the result is what reading them one by one gives."""
    step = 16 + incl
    k = min(most, (n - pos) // step)
    if k < 2:
        return np.empty(0, np.int64)
    offs = pos + step * np.arange(k, dtype=np.int64)
    lengths = np.ndarray((k,), "=u4", buf, offset=pos + 8, strides=(step,))  # each record's length, in place
    same = lengths == incl
    return offs if same.all() else offs[: int(np.argmin(same))]


def _same_epb(buf: Buffer, pos: int, blen: int, ifid: int, n: int, endian: str, most: int = 8192,
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:  # fmt: skip
    """The enhanced packet blocks from ``pos`` on while they have length ``blen`` and interface ``ifid`` too, and
    their packets fit: (block offsets, captured lengths, raw timestamps), or None when not even one does. Each
    block is checked, so the result is what reading them one by one gives (the last is left for the caller's
    loop to step past)."""
    k = min(most, (n - pos) // blen)
    if k < 2:
        return None
    offs = pos + blen * np.arange(k, dtype=np.int64)
    btype, length, iface, hi, lo, caplen = _u32(buf, offs, endian, 6)
    same = (btype == PCAPNG_EPB) & (length == blen) & (iface == ifid) & (caplen.astype(np.int64) + 32 <= blen)
    m = k if same.all() else int(np.argmin(same))
    if m == 0 or int(hi[:m].max()) >= 1 << 31:  # (times past 2^63 ticks: left to the exact loop)
        return None
    stamps = (hi[:m].astype(np.int64) << 32 | lo[:m]).astype(np.float64)
    return offs[:m], caplen[:m].astype(np.int64), stamps


def _pcapng_chunks(f, shb: bytes, size: int, warn) -> Iterator[Chunk]:  # type: ignore[no-untyped-def]
    """pcapng enhanced (and simple, and obsolete) packet blocks, a few megabytes at a time; a chunk holds the
    frames of one link type. Warnings as the per-packet reader words them."""
    blocks, base, used, endian = _Blocks(f, shb), 0, 0, "<"
    interfaces: list[tuple[int, float]] = []  # (link type, seconds per tick)
    while True:
        got = blocks.next(used)
        buf, n = blocks.buf, blocks.n
        if not n:
            return
        pos, stop = 0, False
        offs: list[int] = []
        lens: list[int] = []
        stamps: list[float] = []
        links: list[int] = []
        pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # frames found so far, in order
        previous = -1  # length of the previous block when it was an enhanced packet block
        while pos + 12 <= n or (not got and pos < n):
            if pos + 12 > n:
                warn(f"capture truncated at byte {base + pos} (partial block header)")
                stop = True
                break
            btype = struct.unpack_from(endian + "I", buf, pos)[0]
            if btype == PCAPNG_SHB:
                order = struct.unpack_from("<I", buf, pos + 8)[0]
                endian = "<" if order == PCAPNG_BYTE_ORDER else ">"
            blen = struct.unpack_from(endian + "I", buf, pos + 4)[0]
            if blen < 12 or blen % 4 or base + pos + blen > size:
                warn(f"capture truncated or corrupt at byte {base + pos} (block length {blen})")
                stop = True
                break
            if pos + blen > n:
                break  # the rest of this block comes with the next read
            body = pos + 8
            if btype == PCAPNG_SHB:
                interfaces = []  # a new section has its own interfaces
            elif btype == PCAPNG_IDB and blen - 12 >= 8:
                linktype = struct.unpack_from(endian + "H", buf, body)[0]
                interfaces.append((linktype, _tsresol(bytes(buf[body + 8 : pos + blen - 4]), endian)))
            elif btype in (PCAPNG_EPB, PCAPNG_PB) and blen - 12 >= 20:
                if btype == PCAPNG_EPB:
                    ifid, hi, lo, caplen, _ = struct.unpack_from(endian + "IIIII", buf, body)
                else:
                    ifid, _, hi, lo, caplen, _ = struct.unpack_from(endian + "HHIIII", buf, body)
                if ifid >= len(interfaces) or 20 + caplen > blen - 12:
                    warn(f"packet block at byte {base + pos} names no interface or is truncated")
                else:
                    linktype, tick = interfaces[ifid]
                    offs.append(body + 20)
                    lens.append(caplen)
                    stamps.append(((hi << 32) | lo) * tick)
                    links.append(linktype)
                    if btype == PCAPNG_EPB and blen == previous:  # a run of equal blocks: checked in bulk
                        run = _same_epb(buf, pos + blen, blen, ifid, n, endian)
                        if run is not None:
                            pieces.append((np.array(offs, np.int64), np.array(lens, np.int64), np.array(stamps),
                                           np.array(links, np.int64)))  # fmt: skip
                            offs, lens, stamps, links = [], [], [], []
                            starts, caplens, ticks = run
                            pieces.append((starts + 28, caplens, ticks * tick, np.full(starts.size, linktype)))
                            pos = int(starts[-1])
                    previous = blen if btype == PCAPNG_EPB else -1
            elif btype == PCAPNG_SPB and blen - 12 >= 4 and interfaces:
                orig = struct.unpack_from(endian + "I", buf, body)[0]
                offs.append(body + 4)
                lens.append(min(orig, blen - 16))
                stamps.append(0.0)
                links.append(interfaces[0][0])
            pos += blen
        used = pos
        base += pos
        if offs:
            pieces.append((np.array(offs, np.int64), np.array(lens, np.int64), np.array(stamps),
                           np.array(links, np.int64)))  # fmt: skip
        if pieces:
            o, ln, t, lk = (np.concatenate(c) for c in zip(*pieces, strict=True))
            cuts = [0, *(np.flatnonzero(np.diff(lk)) + 1).tolist(), lk.size]
            for a, b in zip(cuts, cuts[1:], strict=False):  # runs of one link type, in order
                yield buf, o[a:b], ln[a:b], t[a:b], int(lk[a])
        if stop or not got:
            return


def _u32(buf: Buffer, offs: np.ndarray, endian: str, count: int) -> list[np.ndarray]:
    """``count`` consecutive 32-bit fields at each offset."""
    words = _rows(np.frombuffer(buf, np.uint8), offs, 4 * count).view(endian + "u4")
    return [words[:, k].astype(np.uint32) for k in range(count)]


@dataclass
class RtpRows:
    """Plain IPv4/UDP RTP found among a run of frames: ``fast`` marks those frames, the other fields are one per
    such frame (in frame order). ``start``/``size``: where each payload lies in the buffer."""

    fast: np.ndarray
    idx: np.ndarray
    hosts: np.ndarray  # src << 32 | dst
    rest: np.ndarray  # sport << 48 | dport << 32 | ssrc
    seq: np.ndarray
    stamp: np.ndarray
    ptm: np.ndarray  # payload type | marker << 7
    start: np.ndarray
    size: np.ndarray


HEADERS = 40  # IPv4 header without options (20), UDP header (8), RTP fixed header (12)
TAGS = (0x8100, 0x88A8, 0x9100)  # 802.1Q / 802.1ad VLAN tags


def rtp_rows(buf: Buffer, frame: np.ndarray, incl: np.ndarray, linktype: int) -> RtpRows:
    """The frames (at offsets ``frame``, ``incl`` bytes long) that are plain RTP over IPv4/UDP (Ethernet with up to
    two VLAN tags, Linux cooked, raw IP; no IP options, no fragment, no padding or header extension), parsed in
    bulk: the link header and then the 40 bytes of IP, UDP and RTP headers of every frame are copied into a
    table (one row a frame) whose columns are read as big-endian 16- and 32-bit words. Other frames take the
    exact path."""
    a = np.frombuffer(buf, np.uint8)
    n, top = frame.size, a.size
    end = frame + incl
    if linktype not in (LINK_ETHERNET, LINK_SLL, LINK_RAW) or top < 64:
        return _no_rows(n)
    if linktype == LINK_ETHERNET:
        etype, l3 = _be16(a, frame + 12), frame + 14
        for _ in range(2):  # up to two VLAN tags
            tagged = np.flatnonzero(np.isin(etype, TAGS))
            etype[tagged], l3[tagged] = _be16(a, l3[tagged] + 2), l3[tagged] + 4
        ok = etype == 0x0800  # (not a third tag)
    elif linktype == LINK_SLL:
        ok, l3 = _be16(a, frame + 14) == 0x0800, frame + 16
    else:
        ok, l3 = np.ones(n, bool), frame
    ok &= l3 + HEADERS <= end
    h = _rows(a, l3, HEADERS)
    w16, w32 = h.view(">u2"), h.view(">u4")
    fast = ok & (h[:, 0] == 0x45) & (h[:, 9] == 17) & ((w16[:, 3] & 0x3FFF) == 0)  # IPv4/UDP, no fragment
    ulen = w16[:, 12].astype(np.int64)
    rtp = l3 + 28
    b0, b1 = h[:, 28], h[:, 29]
    header = 12 + 4 * (b0 & 0x0F).astype(np.int64)
    fast &= (ulen >= 20) & ((b0 >> 6) == 2) & (((b1 & 0x7F) < 72) | ((b1 & 0x7F) > 79)) & (rtp + header <= end)
    fast &= (b0 & 0x30) == 0  # no padding or header extension: other packets take the exact path
    idx = np.flatnonzero(fast)
    w16, w32 = w16[idx], w32[idx]
    hosts = w32[:, 3].astype(np.uint64) << np.uint64(32) | w32[:, 4]
    rest = w16[:, 10].astype(np.uint64) << np.uint64(48) | w16[:, 11].astype(np.uint64) << np.uint64(32) | w32[:, 9]
    start = rtp[idx] + header[idx]
    size = np.minimum(ulen[idx] + l3[idx] + 20, end[idx]) - start
    return RtpRows(fast, idx, hosts, rest, w16[:, 15].astype(np.uint16), w32[:, 8].astype(np.uint32), b1[idx],
                   start, size)  # fmt: skip


def _rows(a: np.ndarray, at: np.ndarray, width: int) -> np.ndarray:
    """The ``width`` bytes from each offset ``at`` as the rows of a table (offsets too near the end are moved
    back: such rows are never valid and are left out by the caller's length checks). The buffer is seen as
    overlapping ``width``-byte items, one starting at each byte, so that each row is copied whole."""
    items = np.ndarray((a.size - width + 1,), f"V{width}", a, strides=(1,))
    return items[np.minimum(at, a.size - width)].view(np.uint8).reshape(-1, width)


def _be16(a: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The big-endian 16-bit word at each offset (offsets past the end give any value, as in ``_rows``)."""
    words = np.ndarray((a.size - 1,), ">u2", a, strides=(1,))
    return words[np.minimum(at, a.size - 2)].astype(np.int64)


def _no_rows(n: int) -> RtpRows:
    none = np.empty(0, np.int64)
    return RtpRows(np.zeros(n, bool), none, none.astype(np.uint64), none.astype(np.uint64), none.astype(np.uint16),
                   none.astype(np.uint32), none.astype(np.uint8), none, none)  # fmt: skip


def _frames(buf: Buffer, frame: np.ndarray, incl: np.ndarray, ts: np.ndarray, linktype: int, order: int,
            sink: _Sink, on_other) -> int:  # type: ignore[no-untyped-def]  # fmt: skip
    """RTP among these frames into ``sink`` (``rtp_rows``); every other frame, in order, to ``on_other``.
    Returns the running frame count."""
    rows = rtp_rows(buf, frame, incl, linktype)
    if rows.idx.size < frame.size:
        for i in np.flatnonzero(~rows.fast).tolist():
            o = int(frame[i])
            on_other(float(ts[i]), linktype, bytes(buf[o : o + int(incl[i])]))
    if rows.idx.size:
        sink.sid.append(sink.stream_ids(rows.hosts, rows.rest))
        sink.arrival.append(ts[rows.idx])
        sink.seq.append(rows.seq)
        sink.ts.append(rows.stamp)
        sink.ptm.append(rows.ptm)
        for j in np.flatnonzero(rows.size == 4).tolist():
            p = int(rows.start[j])
            sink.events.append((sink.rows + j, bytes(buf[p : p + 4])))
        sink.rows += rows.idx.size
    return order + frame.size


def _tables(sink: _Sink) -> dict[StreamKey, PacketTable]:
    """The rows split by stream, in capture order within each (one column at a time: a low peak)."""
    if not sink.rows:
        return {}
    sid = np.concatenate(sink.sid)
    sink.sid.clear()
    order = np.argsort(sid.astype(np.int16) if len(sink.keys) < 32768 else sid, kind="stable")  # int16: radix
    counts = np.bincount(sid, minlength=len(sink.keys))
    bounds = np.concatenate([[0], np.cumsum(counts)])
    del sid

    def column(pieces: list[np.ndarray], dtype: type) -> np.ndarray:
        whole = np.concatenate(pieces)
        pieces.clear()
        return whole[order].astype(dtype, copy=False)

    arrival = column(sink.arrival, np.float64)
    seq = column(sink.seq, np.int32)
    stamps = column(sink.ts, np.int64)
    ptm = column(sink.ptm, np.uint8)
    pt, marker = (ptm & 0x7F).astype(np.int16), ptm >= 0x80
    del ptm
    events: dict[int, dict[int, bytes]] = {}
    if sink.events:
        rows = np.array([r for r, _ in sink.events], np.int64)
        for_rows = np.argsort(order, kind="stable")  # row -> position in stream order
        where = for_rows[rows]
        del for_rows
        stream_of = np.searchsorted(bounds, where, side="right") - 1
        for (_, payload), w, k in zip(sink.events, where.tolist(), stream_of.tolist(), strict=True):
            events.setdefault(k, {})[w - int(bounds[k])] = payload
    out: dict[StreamKey, PacketTable] = {}
    for (hosts, rest), k in sink.keys.items():
        a, b = int(bounds[k]), int(bounds[k + 1])
        key = (_ip(hosts >> 32), rest >> 48, _ip(hosts & 0xFFFFFFFF), (rest >> 32) & 0xFFFF, rest & 0xFFFFFFFF)
        out[key] = PacketTable.from_arrays(arrival[a:b], seq[a:b], stamps[a:b], pt[a:b], marker[a:b],
                                           events.get(k, {}))  # fmt: skip
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
        (len(t) >= 2 if fresh else (stats.regular and int(clocks[0]) == stats.clock) or settled(stats))
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
    jitter = rfc3550_jitter(diff, stats.jitter)
    j = float(jitter[-1])
    cn = (pt == PT_CN) | (pt == PT_CN_OLD)
    follows_cn = (ref_pt == PT_CN) | (ref_pt == PT_CN_OLD)
    ok = ~(marker | cn | follows_cn)
    if ok.any():
        stats.max_delta = max(stats.max_delta, float(delta[ok].max()))
        stats.max_jitter = max(stats.max_jitter, float(jitter[ok].max()))
        stats.mean_jitter = running_mean(stats.mean_jitter, np.flatnonzero(ok) + total, jitter[ok])
    last_seq, before_top, before_seq = int(t.seq[-1]), stats._max_ext_seq or 0, stats.seq_num
    stats.sequence_errors += int(np.count_nonzero(steps > 1))
    stats.seq_num = stats.stop_seq = last_seq
    wraps = (int(ext_seq[-1]) - last_seq) >> 16  # of the extended numbers since the stream's first packet
    if fresh:
        stats.seq_cycles = wraps
    else:  # those of this piece (the count may include restarts from a packet-by-packet past: kept)
        stats.seq_cycles += wraps - ((before_top - before_seq) >> 16)
    stats.under = stats.seq_cycles > 0 and last_seq <= stats.start_seq
    stats.time_ms = stats.end_time_ms = float(arrival_ms[-1])
    stats.seq_ts = stats.last_ext_ts = int(ext_ts[-1])
    stats.jitter, stats.pt, stats.delta = j, int(t.pt[-1]), float(delta[-1])
    stats.total += len(t)
    stats._max_ext_seq = int(ext_seq[-1])
    stats._seen = set(ext_seq[-SEEN_WINDOW:].tolist())
    stats.regular, stats.clock = True, int(clock)
    return stats


def settled(stats: StreamStats) -> bool:
    """Whether a stream measured packet by packet so far (reordered, duplicated or restarted packets) is now in
    the state that the array operations continue from: its newest packet has the highest sequence number and
    was in order, and the wrap state agrees with the cycles counted. Its next regular piece then takes the array
    operations again instead of the per-packet recurrences."""
    top = stats._max_ext_seq
    return (
        not stats.first
        and not stats.regular
        and top is not None
        and stats.seq_num == top & 0xFFFF
        and stats.stop_seq == stats.seq_num
        and stats.under == (stats.seq_cycles > 0 and stats.seq_num <= stats.start_seq)
        and stats.last_ext_ts == stats.seq_ts
    )


def rfc3550_jitter(diff: np.ndarray, previous: float = 0.0) -> np.ndarray:
    """The interarrival jitter after each packet, J = (15 J + |D|) / 16 (RFC 3550 A.8), from ``previous``.

    The recurrence is a first-order IIR filter, J_n = a J_(n-1) + |D_n| / 16 with a = 15/16, run here in blocks
    of ``JITTER_BLOCK`` packets: each block from a zero state with one matrix product, then the state carried
    into each block (itself the same recurrence from block to block, with a^JITTER_BLOCK, summed over the last
    ``JITTER_CARRY`` blocks: anything older has decayed below 1e-30 of the largest |D|). The values agree with
    the per-packet recurrence of ``StreamStats.add`` to the last few bits (tests compare them)."""
    n = diff.size
    if n == 0:
        return np.empty(0)
    blocks = -(-n // JITTER_BLOCK)
    padded = np.zeros(blocks * JITTER_BLOCK)
    padded[:n] = diff
    local = padded.reshape(blocks, JITTER_BLOCK) @ _IN_BLOCK  # each block's response from a zero state
    ends = np.convolve(local[:, -1], _ACROSS)[:blocks] + previous * _DECAY[-1] ** np.arange(1, blocks + 1)
    entering = np.concatenate([[previous], ends[:-1]])  # the jitter before each block's first packet
    return (local + entering[:, None] * _DECAY).reshape(-1)[:n]


JITTER_BLOCK, JITTER_CARRY = 32, 40  # (15/16)^(32 * 40) < 1e-35
_DECAY = (15 / 16) ** np.arange(1, JITTER_BLOCK + 1)  # a^1 .. a^JITTER_BLOCK
_IN_BLOCK = np.triu((15 / 16) ** np.subtract.outer(np.arange(JITTER_BLOCK), np.arange(JITTER_BLOCK)).T) / 16
_ACROSS = _DECAY[-1] ** np.arange(JITTER_CARRY)


def running_mean(mean: float, ks: np.ndarray, values: np.ndarray) -> float:
    """Wireshark's running mean jitter after the packets numbered ``ks`` (increasing) with these ``values``:
    mean = (mean (k - 1) + J) / k at each. Over a run of consecutive numbers a..b that is
    (mean (a - 1) + sum of the run's J) / b, so only the runs (broken by marker and comfort-noise packets,
    a few a stream) take a Python step; the sums may differ from the recurrence in the last bits."""
    if not ks.size:
        return mean
    starts = np.flatnonzero(np.diff(ks, prepend=ks[0] - 2) != 1)
    sums = np.add.reduceat(values, starts).tolist()
    firsts, lasts = ks[starts].tolist(), ks[np.append(starts[1:] - 1, ks.size - 1)].tolist()
    for a, b, total in zip(firsts, lasts, sums, strict=True):
        mean = (mean * (a - 1) + total) / b
    return mean


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
