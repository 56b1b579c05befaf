"""Call assembly: SIP dialogs by Call-ID, RTP streams by (source, destination, SSRC), and the association
of streams with dialogs through the SDP each side sent (address and port, or port alone behind NAT).

``read_capture`` makes one pass over a capture file and returns every call, including RTP streams that no
SIP dialog describes (reported as calls of their own).
"""

from __future__ import annotations

import copy
import itertools
import socket
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from callqa.capture.fastpath import KeyIndex, PacketTable, rtp_rows, scan_capture, table_stats
from callqa.capture.meter import StreamMeter, jitter_clocks
from callqa.capture.spool import PayloadSpool
from callqa.errors import ParseError
from callqa.protocol.packet import LINK_ETHERNET, PROTO_TCP, PROTO_UDP, Decoder, Segment
from callqa.protocol.pcap import CaptureFile
from callqa.protocol.rtcp import RtcpPacket, looks_like_rtcp, parse_compound
from callqa.protocol.rtp import RtpHeader, RtpPacket, StreamStats, looks_like_rtp
from callqa.protocol.sdp import Media, SessionDescription
from callqa.protocol.sip import SipMessage, looks_like_sip, uri_of
from callqa.protocol.srtp import SrtpContext
from callqa.protocol.tcp import TcpSipReassembler

Endpoint = tuple[str, int]
StreamKey = tuple[str, int, str, int, int]  # src, sport, dst, dport, ssrc
MAX_WARNINGS = 50
_PORTS = struct.Struct(">HH")
_PORTS_LEN = struct.Struct(">H")
_RTP = struct.Struct(">BHII")


MAX_PENDING = 500_000  # rows feed_frames holds at most before handing them to their streams


def _pack_ip(address: str) -> int:
    """A dotted IPv4 address as a number (0 for anything else: such keys never match a packed row)."""
    try:
        return int.from_bytes(socket.inet_aton(address), "big") if "." in address else 0
    except OSError:
        return 0


def _addr(data: bytes, pos: int) -> str:
    return f"{data[pos]}.{data[pos + 1]}.{data[pos + 2]}.{data[pos + 3]}"


MIN_UNSIGNALLED_PACKETS = 5
FOLD_AT = 1000  # live statistics: a stream's packets (20 s of G.711) are measured and dropped at this many ...
FOLD_KEEP = 50  # ... except the newest few (arrival times and sequence numbers the association looks at)
FOLD_BUDGET = 200  # streams folded at most per expire (a second), unless they hold twice FOLD_AT: a thousand
# calls that began together would otherwise all be measured in one pause of the capture (seconds)


@dataclass
class Stream:
    key: StreamKey
    packets: PacketTable = field(default_factory=PacketTable)
    srtp: SrtpContext | None = None  # the key whose authentication tags verify on this stream
    srtp_failures: int = 0  # packets whose tag did not verify with that key
    encrypted: bool = False  # SDP says SRTP and no key authenticated: measured from headers only
    meter: StreamMeter | None = None  # the packets measured and dropped already (long live calls)
    audio_until: float = float("inf")  # payloads arriving later are not kept (past the leg-length limit)
    junk: bool = False  # thousands of packets that no call claimed: not RTP, never reported as a call
    unsorted: bool = False  # packets were appended out of arrival order (bulk and per-packet paths mixed)
    slot: int = -1  # its number among the streams that Tracker.feed_frames appends to in bulk
    _first: RtpPacket | None = field(default=None, repr=False)  # the first packet, once asked for
    _match: tuple | None = field(default=None, repr=False)  # type: ignore[type-arg]  # see _associate
    _packed: tuple[int, int] | None = field(default=None, repr=False)

    @property
    def first(self) -> RtpPacket:
        if self.meter and self.meter.first:
            return self.meter.first
        if self._first is None:  # (association asks every second for thousands of live streams)
            self._first = self.packets[0]
        return self._first

    @property
    def last_arrival(self) -> float:
        return self.packets.last_arrival() if len(self.packets) else self.meter.last_arrival  # type: ignore[union-attr]

    def fold(self, encodings: dict[int, tuple[str, int]], capture_start: float, depths_ms: tuple[float, ...]) -> None:
        """Measure all but the newest ``FOLD_KEEP`` packets and drop them (statistics only: payloads go too)."""
        if self.meter is None:
            self.meter = StreamMeter(capture_start, depths_ms)
        self.meter.feed(self.packets.take_head(len(self.packets) - FOLD_KEEP), encodings)

    def measured(self, encodings: dict[int, tuple[str, int]], capture_start: float,
                 depth_ms: float = 50.0) -> StreamMeter:  # fmt: skip
        """The whole stream measured: what was folded already plus the packets held (the stream is unchanged)."""
        if self.meter is None:
            meter = StreamMeter(capture_start, (depth_ms,))
        elif depth_ms in self.meter.depths_ms:
            meter = copy.deepcopy(self.meter)
        else:
            raise ValueError(f"this stream was measured live without a {depth_ms} ms jitter buffer")
        meter.feed(self.packets, encodings)
        return meter

    @property
    def packed(self) -> tuple[int, int]:
        """The key as the bulk parser packs it: (source << 32 | destination, ports << 32 | SSRC)."""
        if self._packed is None:
            k = self.key
            self._packed = (_pack_ip(k[0]) << 32 | _pack_ip(k[2]), k[1] << 48 | k[3] << 32 | k[4])
        return self._packed

    @property
    def src(self) -> Endpoint:
        return self.key[0], self.key[1]

    @property
    def dst(self) -> Endpoint:
        return self.key[2], self.key[3]

    @property
    def ssrc(self) -> int:
        return self.key[4]


@dataclass(frozen=True, slots=True)
class RtcpDatagram:
    arrival: float
    src: Endpoint
    dst: Endpoint
    packets: tuple[RtcpPacket, ...]


_serials = itertools.count()


@dataclass(eq=False)
class Dialog:
    call_id: str
    from_uri: str = ""
    to_uri: str = ""
    caller: Endpoint | None = None  # where the first INVITE came from
    started_at: float = 0.0
    answered_at: float | None = None
    ended_at: float | None = None
    end_reason: str = ""
    media: dict[str, list[Media]] = field(default_factory=dict)  # party -> media it offered (where it receives)
    messages: int = 0
    ladder: list[tuple[float, Endpoint, Endpoint | None, str]] = field(default_factory=list)  # (t, src, dst, label)
    serial: int = field(default_factory=lambda: next(_serials))  # tells this dialog from an earlier one


@dataclass
class CapturedCall:
    """One call found in a capture: its dialog (None for RTP without SIP) and its streams per direction."""

    dialog: Dialog | None
    streams: dict[str, list[Stream]]  # leg role (caller/callee, or src->dst for unsignalled RTP) -> streams
    encodings: dict[StreamKey, dict[int, tuple[str, int]]]
    capture_start: float
    matched_by: str = "sdp"
    rtcp: list[RtcpDatagram] = field(default_factory=list)

    @property
    def id(self) -> str:
        if self.dialog:
            return self.dialog.call_id
        s = next(iter(self.streams.values()))[0]
        return f"rtp-{s.src[0]}:{s.src[1]}-{s.dst[0]}:{s.dst[1]}"


@dataclass
class Capture:
    path: Path
    calls: list[CapturedCall]
    warnings: list[str]
    packets: int
    start: float


def read_capture(
    path: Path, nat_aliases: dict[str, str] | None = None, keep_audio: bool = True, srtp_keys: list[str] | None = None
) -> Capture:
    """One pass over a capture. Without ``keep_audio`` only telephone-event sized payloads are kept (for
    DTMF), which is all that statistics need. SRTP streams are decrypted with the ``a=crypto`` keys of the
    dialogs or the given SDES keys (``AES_CM_128_HMAC_SHA1_80:BASE64``), whichever authenticates."""
    cf = CaptureFile(Path(path))
    tracker = Tracker(nat_aliases, keep_audio, srtp_keys)
    fast = None if keep_audio or srtp_keys else scan_capture(Path(path), tracker.feed_frame, cf.warnings.append)
    if fast is not None:  # statistics only, plain RTP: bulk parsing (identical results, much faster)
        tables, tracker.start, tracker.frames = fast
        for key, table in tables.items():
            slow = tracker.streams.get(key)
            if slow is None:
                tracker.streams[key] = Stream(key, table)
            else:  # a few packets (padding, header extension) took the exact path: merge them in time order
                slow.packets, slow._first = table.merged(slow.packets), None
    else:
        for frame in cf.frames():
            tracker.feed_frame(frame.ts, frame.linktype, frame.data)
    calls = tracker.finish()
    return Capture(Path(path), calls, cf.warnings + tracker.warnings, tracker.frames, tracker.start or 0.0)


class Tracker:
    """Calls under construction, fed frame by frame (from a file, a live interface or HEP).

    ``finish`` assembles everything; ``expire(now)`` hands over only the calls that are over (BYE or CANCEL
    plus a grace period, or no packet for ``inactivity_s``) and forgets them, so a long run keeps flat memory.
    """

    def __init__(
        self,
        nat_aliases: dict[str, str] | None = None,
        keep_audio: bool = True,
        srtp_keys: list[str] | None = None,
        inactivity_s: float = 30.0,
        grace_s: float = 2.0,
        jitter_buffer_ms: float = 50.0,
        max_audio_s: float = float("inf"),
        spool_dir: Path | None = None,
    ) -> None:
        self.aliases = nat_aliases or {}
        self.keep_audio = keep_audio
        self.keys = _contexts(srtp_keys or [], None)
        self.inactivity_s, self.grace_s = inactivity_s, grace_s
        self.depths_ms = (jitter_buffer_ms,)  # jitter buffers simulated on streams measured as they go
        self.max_audio_s = max_audio_s  # a stream's audio beyond this is never analysed: its payloads are not kept
        self.spool_dir = spool_dir  # payloads kept on disk there (live calls), not in memory
        self.decoder = Decoder()
        self.tcp = TcpSipReassembler()
        self.rtcp: list[RtcpDatagram] = []
        self.dialogs: dict[str, Dialog] = {}
        self.streams: dict[StreamKey, Stream] = {}
        self.last_seen: dict[str, float] = {}  # call id -> last SIP message
        self.warnings: list[str] = []
        self.start: float | None = None
        self.frames = 0
        self.kernel_drops = 0  # live capture: packets the kernel dropped because we read too slowly
        self.clock: float | None = None  # the newest packet time seen
        # feed_frames: rows held for flush, and the search arrays of the streams it appends to (by slot)
        self._pending: list[tuple] = []  # type: ignore[type-arg]
        self._pending_rows = 0
        self._crypto: set[str] = set()  # call ids of the dialogs whose SDP carries a=crypto keys
        self._registry_dirty = False
        self._next_slot = 0
        self._slot_stream: dict[int, Stream] = {}
        self._registry = KeyIndex()  # the bulk streams' keys -> their slots

    def warn(self, text: str) -> None:
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(text)

    def feed_frame(self, ts: float, linktype: int, data: bytes) -> None:
        self.frames += 1
        if linktype == LINK_ETHERNET and self._known_rtp(ts, data):
            return
        try:
            seg = self.decoder.decode(ts, linktype, data)
        except ParseError as exc:
            self.warn(f"frame {self.frames}: {exc}")
            return
        if seg is not None:
            self.feed_segment(seg)

    def feed_frames(self, buf: bytes, frame: np.ndarray, incl: np.ndarray, ts: np.ndarray,
                    linktype: int = LINK_ETHERNET) -> None:  # fmt: skip
        """Many frames at once (a live capture ring's block): the frames at offsets ``frame`` of ``buf``, ``incl``
        bytes long, that arrived at ``ts``. Plain RTP of the streams already known is parsed in bulk (NumPy), its
        streams found with one sorted-array search, and the rows held as columns until ``flush`` hands them to
        their streams (all at once, about once a second: a few rows a stream per block would cost a Python call
        each). Every other frame goes through ``feed_frame`` in arrival order."""
        if not frame.size:
            return
        rows = rtp_rows(buf, frame, incl, linktype)
        slow = ~rows.fast
        if self._registry_dirty:
            self._register()
        slots = known = None
        if rows.idx.size and len(self._registry):
            slots = self._registry.find(rows.hosts, rows.rest)
            known = slots >= 0
            slow[rows.idx[~known]] = True
        else:
            slow[rows.idx] = True
        if slow.any():
            for i in np.flatnonzero(slow).tolist():
                o = int(frame[i])
                self.feed_frame(float(ts[i]), linktype, buf[o : o + int(incl[i])])
        if slots is None or known is None or not known.any():
            return
        sel = np.flatnonzero(known)
        arrival = ts[rows.idx[sel]]
        start, size = rows.start[sel], rows.size[sel]
        four = np.flatnonzero(size == 4)
        events = [(self._pending_rows + r, buf[p : p + 4]) for r, p in zip(four.tolist(), start[four].tolist(),
                                                                           strict=True)]  # fmt: skip
        payloads = None
        if self.keep_audio:
            payloads = [buf[p : p + n] for p, n in zip(start.tolist(), size.tolist(), strict=True)]
        self._pending.append((slots[sel], arrival, rows.seq[sel], rows.stamp[sel], rows.ptm[sel], payloads, events))
        self._pending_rows += sel.size
        self.frames += sel.size
        newest = float(arrival.max())
        if self.clock is None or newest > self.clock:
            self.clock = newest
        if self._pending_rows >= MAX_PENDING:
            self.flush()

    def flush(self) -> None:
        """Hand the rows ``feed_frames`` holds to their streams (in arrival order within each stream)."""
        if not self._pending:
            return
        parts = list(zip(*self._pending, strict=True))
        self._pending, self._pending_rows = [], 0
        slot = np.concatenate(parts[0])
        arrival, seq, stamp, ptm = (np.concatenate(p) for p in parts[1:5])
        payloads = [p for batch in parts[5] for p in batch] if self.keep_audio else None
        events = dict(e for batch in parts[6] for e in batch)
        event_rows = np.array(sorted(events), np.int64)
        order = np.argsort(slot, kind="stable")
        slot, arrival, seq, stamp, ptm = slot[order], arrival[order], seq[order], stamp[order], ptm[order]
        pt, marker = ptm & 0x7F, ptm >= 0x80
        bounds = np.flatnonzero(np.diff(slot)) + 1
        for lo, hi in zip([0, *bounds.tolist()], [*bounds.tolist(), slot.size], strict=True):
            stream = self._slot_stream.get(int(slot[lo]))
            if stream is None or self.streams.get(stream.key) is not stream:
                continue  # forgotten meanwhile (expire flushes first, so this does not happen)
            mine = order[lo:hi]  # the rows' places among those held
            a = arrival[lo:hi]
            ev: dict[int, bytes] = {}
            if event_rows.size:
                where = np.minimum(np.searchsorted(mine, event_rows), mine.size - 1)
                hit = mine[where] == event_rows
                ev = {int(w): events[int(r)] for w, r in zip(where[hit], event_rows[hit], strict=True)}
            kept = None
            if payloads is not None and stream.packets.payloads is not None:
                late = (a > stream.audio_until).tolist()
                kept = [b"" if x and len(payloads[i]) != 4 else payloads[i]
                        for i, x in zip(mine.tolist(), late, strict=True)]  # fmt: skip
            table = stream.packets
            if len(table) and a[0] < table.last_arrival():
                stream.unsorted = True
            table.extend(a, seq[lo:hi], stamp[lo:hi], pt[lo:hi], marker[lo:hi], kept, ev)

    def _register(self) -> None:
        """The sorted search arrays of the streams that ``feed_frames`` appends to in bulk (plain RTP)."""
        streams = [s for s in self.streams.values() if s.srtp is None and ":" not in s.key[0] + s.key[2]]
        if not self._pending:  # no held row names a slot: number them afresh (the arrays stay small)
            self._next_slot = 0
            for s in self.streams.values():
                s.slot = -1
        for s in streams:
            if s.slot < 0:
                s.slot = self._next_slot
                self._next_slot += 1
        self._slot_stream = {s.slot: s for s in streams}
        self._registry = KeyIndex(np.array([s.packed[0] for s in streams], np.uint64),
                                  np.array([s.packed[1] for s in streams], np.uint64),
                                  np.array([s.slot for s in streams], np.int64))  # fmt: skip
        self._registry_dirty = False

    def _known_rtp(self, ts: float, data: bytes) -> bool:
        """Shortcut for the bulk of live traffic: a plain Ethernet/IPv4/UDP packet of a stream already seen
        (not SRTP, no padding or extension) is appended without building intermediate objects."""
        if len(data) < 54 or data[12:14] != b"\x08\x00" or data[14] != 0x45 or data[23] != 17:
            return False
        if data[20] & 0x3F or data[21]:  # fragment (MF or offset)
            return False
        b0 = data[42]
        if b0 & 0xF0 != 0x80 or 72 <= data[43] & 0x7F <= 79:  # version 2, no padding/extension, CSRC allowed
            return False
        sport, dport = _PORTS.unpack_from(data, 34)
        b1, seq, stamp, ssrc = _RTP.unpack_from(data, 43)
        key = (_addr(data, 26), sport, _addr(data, 30), dport, ssrc)
        stream = self.streams.get(key)
        if stream is None or stream.srtp is not None:
            return False
        end = 34 + _PORTS_LEN.unpack_from(data, 38)[0]
        start = 54 + 4 * (b0 & 0x0F)
        payload = data[start:end] if self.keep_audio and ts <= stream.audio_until or end - start == 4 else b""
        stream.packets.add(ts, seq, stamp, b1 & 0x7F, bool(b1 & 0x80), payload)
        if self.clock is None or ts > self.clock:
            self.clock = ts
        return True

    def feed_segment(self, seg: Segment) -> None:
        ts = seg.ts
        if self.start is None:
            self.start = ts
        if self.clock is None or ts > self.clock:
            self.clock = ts
        if not seg.payload:
            return
        if seg.proto == PROTO_TCP:
            for raw in self.tcp.feed((seg.src, seg.sport, seg.dst, seg.dport), seg.tcp_seq, seg.payload):
                try:
                    self._sip(SipMessage.parse(raw), (seg.src, seg.sport), ts, (seg.dst, seg.dport))
                except ParseError as exc:
                    self.warn(f"frame {self.frames}: malformed SIP over TCP: {exc}")
        elif looks_like_sip(seg.payload):
            try:
                msg = SipMessage.parse(seg.payload)
            except ParseError as exc:
                self.warn(f"frame {self.frames}: malformed SIP: {exc}")
                return
            self._sip(msg, (seg.src, seg.sport), ts, (seg.dst, seg.dport))
        elif seg.proto == PROTO_UDP and looks_like_rtcp(seg.payload):
            try:
                self.rtcp.append(RtcpDatagram(ts, (seg.src, seg.sport), (seg.dst, seg.dport),
                                              tuple(parse_compound(seg.payload))))  # fmt: skip
            except ParseError as exc:
                self.warn(f"frame {self.frames}: malformed RTCP: {exc}")
        elif seg.proto == PROTO_UDP and looks_like_rtp(seg.payload):
            self._rtp(seg)

    def _sip(self, msg: SipMessage, src: Endpoint, ts: float, dst: Endpoint | None = None) -> None:
        _on_sip(self.dialogs, msg, src, ts, self.warn, dst)
        if msg.call_id in self.dialogs:
            self.last_seen[msg.call_id] = ts
            if any(m.crypto for ms in self.dialogs[msg.call_id].media.values() for m in ms):
                self._crypto.add(msg.call_id)

    def _rtp(self, seg: Segment) -> None:
        try:
            h = RtpHeader.parse(seg.payload)
        except ParseError:
            return
        key = (seg.src, seg.sport, seg.dst, seg.dport, h.ssrc)
        stream = self.streams.get(key)
        if stream is None:
            self._registry_dirty = True
            table = PacketTable(keep_payloads=self.keep_audio)
            if self.keep_audio and self.spool_dir is not None:
                table.payloads = PayloadSpool(self.spool_dir)  # type: ignore[assignment]
            stream = self.streams[key] = Stream(key, table, audio_until=seg.ts + self.max_audio_s)
            self._crypto &= self.dialogs.keys()  # the dialogs whose SDP offers keys (not all: thousands live)
            candidates = self.keys + [k for c in self._crypto for ms in self.dialogs[c].media.values() for m in ms
                                      for k in _contexts(m.crypto, self.warn)]  # fmt: skip
            stream.srtp = next((k for k in candidates if k.decrypt(seg.payload) is not None), None)
        if stream.srtp is not None:
            plain = stream.srtp.decrypt(seg.payload)
            if plain is None:
                stream.srtp_failures += 1
                return
            h = RtpHeader.parse(plain)
        payload = h.payload if self.keep_audio and seg.ts <= stream.audio_until or len(h.payload) == 4 else b""
        stream.packets.add(seg.ts, h.seq, h.timestamp, h.payload_type, h.marker, payload)

    def finish(self) -> list[CapturedCall]:
        """Every call and stream seen so far (the state is left as it is)."""
        self.flush()
        for s in self.streams.values():
            if s.unsorted:
                s.packets.sort_by_arrival()
                s.unsorted, s._first = False, None
        calls = _associate(self.dialogs, self.streams, self.start or 0.0, self.aliases)
        _attach_rtcp(calls, self.rtcp)
        return calls

    def expire(self, now: float) -> list[CapturedCall]:
        """Calls that are over at ``now``; their dialogs, streams and RTCP are forgotten."""
        calls = self.finish()
        done = []
        for call in calls:
            last = max([s.last_arrival for sts in call.streams.values() for s in sts]
                       + ([self.last_seen.get(call.dialog.call_id, 0.0)] if call.dialog else []))  # fmt: skip
            ended = call.dialog is not None and call.dialog.ended_at is not None
            if (ended and now - last > self.grace_s) or now - last > self.inactivity_s:
                done.append(call)
        for call in done:
            if call.dialog:
                self.dialogs.pop(call.dialog.call_id, None)
                self.last_seen.pop(call.dialog.call_id, None)
            for sts in call.streams.values():
                for s in sts:
                    self.streams.pop(s.key, None)
                    self._slot_stream.pop(s.slot, None)
                    self._registry_dirty = True
            mine = {id(d) for d in call.rtcp}
            self.rtcp = [d for d in self.rtcp if id(d) not in mine]
        horizon = now - self.inactivity_s  # RTP and RTCP that no call claims
        self.rtcp = [d for d in self.rtcp if d.arrival > horizon]
        claimed = {s.key for call in calls for sts in call.streams.values() for s in sts}
        for key in [k for k, s in self.streams.items() if k not in claimed and s.last_arrival < horizon]:
            self._slot_stream.pop(self.streams.pop(key).slot, None)
            self._registry_dirty = True
        if not self.keep_audio:
            over = {id(c) for c in done}
            self._fold([c for c in calls if id(c) not in over], claimed)
        return done

    def _fold(self, active: list[CapturedCall], claimed: set[StreamKey]) -> None:
        """Statistics only: long streams of calls still in progress are measured so far and their packets
        dropped, so memory does not grow with a call's length. A long stream no call claims (not RTP after all)
        keeps only its newest packets."""
        due = [(s, call) for call in active for sts in call.streams.values() for s in sts if len(s.packets) >= FOLD_AT]
        if len(due) > FOLD_BUDGET:  # calls that began together: spread their folds over the next seconds
            due.sort(key=lambda sc: -len(sc[0].packets))
            due = due[: max(FOLD_BUDGET, sum(1 for s, _ in due if len(s.packets) >= 2 * FOLD_AT))]
        for s, call in due:
            s.fold(call.encodings.get(s.key, {}), self.start or 0.0, self.depths_ms)
        for key, s in self.streams.items():
            if key not in claimed and len(s.packets) >= FOLD_AT:
                s.packets.take_head(len(s.packets) - FOLD_KEEP)
                s.junk, s._first = True, None


def _contexts(keys: list[str] | tuple[str, ...], warn) -> list[SrtpContext]:  # type: ignore[no-untyped-def]
    out = []
    for k in keys:
        try:
            out.append(SrtpContext.from_sdes(k))
        except ParseError as exc:
            if warn is None:
                raise
            warn(f"SRTP key ignored: {exc}")
    return out


def _attach_rtcp(calls: list[CapturedCall], datagrams: list[RtcpDatagram]) -> None:
    """RTCP goes with the call whose RTP uses the same hosts, on port + 1 or the same port (rtcp-mux)."""
    if not datagrams:
        return
    owners: dict[Endpoint, CapturedCall] = {}
    for call in calls:
        for streams in call.streams.values():
            for s in streams:
                for host, port in (s.src, s.dst):
                    owners[(host, port + 1)] = owners[(host, port)] = call
    for d in datagrams:
        owner = owners.get(d.src) or owners.get(d.dst)
        if owner is not None:
            owner.rtcp.append(d)


MAX_LADDER = 200  # SIP messages of a dialog kept for its ladder


def _on_sip(dialogs: dict[str, Dialog], msg: SipMessage, src: Endpoint, ts: float, warn,  # type: ignore[no-untyped-def]
            dst: Endpoint | None = None) -> None:  # fmt: skip
    d = dialogs.get(msg.call_id)
    if d is None:
        if not (msg.is_request and msg.method == "INVITE"):
            return  # REGISTER, OPTIONS, or a dialog whose INVITE was not captured
        d = dialogs[msg.call_id] = Dialog(msg.call_id, uri_of(msg.header("from")), uri_of(msg.header("to")),
                                          src, ts)  # fmt: skip
    d.messages += 1
    if len(d.ladder) < MAX_LADDER:
        label = msg.method if msg.is_request else f"{msg.status} {msg.reason}".strip() + f" ({msg.method})"
        d.ladder.append((ts, src, dst, label))
    party = "caller" if src == d.caller else "callee"
    if msg.body and "sdp" in msg.header("content-type").lower():
        try:
            sdp = SessionDescription.parse(msg.body)
        except ParseError as exc:
            warn(f"call {msg.call_id}: malformed SDP: {exc}")
        else:
            d.media.setdefault(party, []).extend(m for m in sdp.media if m.kind == "audio" and m.port)
    if msg.is_request and msg.method == "BYE" and d.ended_at is None:
        d.ended_at, d.end_reason = ts, f"{party} hung up (BYE)"
    elif msg.is_request and msg.method == "CANCEL" and d.ended_at is None:
        d.ended_at, d.end_reason = ts, "cancelled by the caller before answer"
    elif not msg.is_request and msg.method == "INVITE" and d.answered_at is None:
        if 200 <= msg.status < 300:
            d.answered_at = ts
        elif msg.status >= 300 and d.ended_at is None:
            d.ended_at, d.end_reason = ts, f"not answered: {msg.status} {msg.reason}".strip()


def _associate(dialogs: dict[str, Dialog], streams: dict[StreamKey, Stream], start: float,
               aliases: dict[str, str]) -> list[CapturedCall]:  # fmt: skip
    """Streams to dialogs and directions. A party's SDP says where it receives (and, with symmetric RTP,
    sends from): a stream from the caller goes to the callee's endpoint and comes from the caller's. Address
    and port must agree; behind NAT (SDP names a private address) the port alone does, within the dialog's
    time. Ties go to the party whose signalling came from the stream's source host."""
    by_port: dict[int, list[Dialog]] = {}
    for d in dialogs.values():
        for medias in d.media.values():
            for m in medias:
                if d not in by_port.setdefault(m.port, []):
                    by_port[m.port].append(d)
    calls: dict[str, CapturedCall] = {}
    loose: list[Stream] = []
    for key, stream in sorted(streams.items(), key=lambda kv: kv[1].first.arrival):
        candidates = by_port.get(stream.dst[1], []) + by_port.get(stream.src[1], [])
        # a live tracker associates every second: a stream is scored again only when something its match
        # depends on changed (a SIP message of a candidate dialog, its first arrival, a dialog it now overlaps)
        last = stream.last_arrival
        state = (id(aliases), stream.first.arrival,
                 [(d.serial, d.messages, d.started_at - 1.0 <= last) for d in candidates])  # fmt: skip
        if stream._match is not None and stream._match[0] == state:
            best, encodings = stream._match[1:]
        else:
            best, encodings = _best_dialog(stream, candidates, aliases), None
            if best is not None:
                encodings = _encodings(best[2], best[3])
            stream._match = (state, best, encodings)
        if best is None:
            loose.append(stream)
            continue
        _, sender, d, media, nat = best
        stream.encrypted = "SAVP" in media.proto.upper() and stream.srtp is None
        call = calls.setdefault(d.call_id, CapturedCall(d, {}, {}, start))
        call.streams.setdefault(sender, []).append(stream)
        call.encodings[key] = dict(encodings)  # type: ignore[arg-type]
        if nat:
            call.matched_by = "sdp port (NAT)"
    for d in dialogs.values():
        calls.setdefault(d.call_id, CapturedCall(d, {}, {}, start))
    out = sorted(calls.values(), key=lambda c: c.dialog.started_at if c.dialog else 0.0)
    return out + _unsignalled(loose, start)


def _best_dialog(stream: Stream, candidates: list[Dialog], aliases: dict[str, str],
                 ) -> tuple[tuple[int, bool], str, Dialog, Media, bool] | None:  # fmt: skip
    """The dialog, sending party and media that fit a stream best (see ``_associate``), or None."""
    best: tuple[tuple[int, bool], str, Dialog, Media, bool] | None = None
    for d in candidates:
        if not _during(d, stream):
            continue
        # a stream that began while the dialog was up beats one in the grace after its end (a next call on
        # the same ports)
        began_inside = d.ended_at is None or stream.first.arrival <= d.ended_at
        for sender, receiver in (("caller", "callee"), ("callee", "caller")):
            score, media, nat = _score(stream, d.media.get(sender, []), d.media.get(receiver, []), aliases)
            if media is None:
                continue
            if d.caller and d.caller[0] == stream.src[0]:
                score += 1 if sender == "caller" else 0
            elif d.caller:
                score += 1 if sender == "callee" else 0
            if best is None or (score, began_inside) > best[0]:
                best = ((score, began_inside), sender, d, media, nat)
    return best


def _unsignalled(streams: list[Stream], start: float) -> list[CapturedCall]:
    """RTP that no SIP describes, when it looks like a real stream: the two directions between the same
    endpoints form one call; the side heard first is called the caller."""
    pairs: dict[frozenset[Endpoint], CapturedCall] = {}
    for s in streams:
        if not plausible_unsignalled(s):
            continue
        call = pairs.get(frozenset((s.src, s.dst)))
        if call is None:
            call = pairs[frozenset((s.src, s.dst))] = CapturedCall(None, {}, {}, start, "rtp heuristic")
            role = "caller"
        else:
            first = call.streams["caller"][0]
            role = "caller" if s.src == first.src else "callee"
        call.streams.setdefault(role, []).append(s)
        call.encodings[s.key] = {}
    return list(pairs.values())


def plausible_unsignalled(stream: Stream) -> bool:
    """RTP found by heuristics only: enough packets, with sequence numbers that mostly step forward a little
    (repeats allowed: RFC 4733 sends an event's last packet three times)."""
    if stream.meter is not None:
        return True  # judged plausible before its older packets were measured and dropped
    if stream.junk:
        return False  # its newest packets alone must not make it look like a call
    p = stream.packets
    if len(p) < MIN_UNSIGNALLED_PACKETS:
        return False
    steps = np.remainder(np.diff(p.seq.astype(np.int64)), 65536)
    forward = int(np.count_nonzero((steps > 0) & (steps <= 10)))
    small = int(np.count_nonzero(steps <= 10))
    return forward >= 0.6 * steps.size and small >= 0.9 * steps.size


def _score(stream: Stream, sender: list[Media], receiver: list[Media],
           aliases: dict[str, str]) -> tuple[int, Media | None, bool]:  # fmt: skip
    """How well a stream fits 'sent by sender to receiver': 2 per endpoint matching address and port, 1 per
    endpoint matching the port only (the destination counts double); the receiver's media (for its payload
    map) when the destination fits; and whether that fit was by port alone (NAT)."""

    def fit(endpoint: Endpoint, medias: list[Media]) -> tuple[int, Media | None]:
        found: tuple[int, Media | None] = (0, None)
        for m in medias:
            if m.port == endpoint[1]:
                exact = aliases.get(m.address, m.address) == endpoint[0]
                found = max(found, (2 if exact else 1, m), key=lambda f: f[0])
        return found

    dst_score, media = fit(stream.dst, receiver)
    src_score, _ = fit(stream.src, sender)
    return dst_score * 2 + src_score, media, dst_score == 1


def _during(d: Dialog, s: Stream) -> bool:
    first, last = s.first.arrival, s.last_arrival
    return d.started_at - 1.0 <= last and (d.ended_at is None or first <= d.ended_at + 5.0)


def _encodings(d: Dialog, media: Media) -> dict[int, tuple[str, int]]:
    """Payload type map for a stream: the receiving side's rtpmap, completed by the other side's."""
    out: dict[int, tuple[str, int]] = {}
    for medias in d.media.values():
        for m in medias:
            for pt in m.payload_types:
                out.setdefault(pt, m.encoding(pt))
    for pt in media.payload_types:
        out[pt] = media.encoding(pt)
    return out


def stream_stats(stream: Stream, encodings: dict[int, tuple[str, int]], capture_start: float) -> StreamStats:
    """Wireshark-compatible statistics of a whole stream (only those: no jitter-buffer simulation)."""
    stats = copy.deepcopy(stream.meter.stats) if stream.meter else StreamStats()
    return table_stats(stream.packets, jitter_clocks(stream.packets, encodings), capture_start, stats)


def iso(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)
