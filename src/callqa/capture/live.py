"""Live capture: a raw AF_PACKET socket on an interface (optionally with a BPF filter compiled by tcpdump)
and/or a HEP3 UDP listener, feeding a Tracker; each call is reported when it ends."""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import select
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Callable

import numpy as np

from callqa.capture.calls import CapturedCall, Tracker
from callqa.capture.spool import spool_directory
from callqa.errors import InputError, ParseError
from callqa.protocol.hep import parse_hep3
from callqa.protocol.packet import LINK_ETHERNET

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
SO_TIMESTAMPNS = 35  # its control message type is SCM_TIMESTAMPNS, the same number
RCVBUF = 256 * 1024 * 1024
PACKET_OUTGOING = 4
SNAPLEN = 65535
BATCH = 2000


def open_interface(iface: str, bpf: str | None = None) -> socket.socket:
    """A raw socket on ``iface``. It takes no packet until it is bound, and it is bound last (as libpcap does):
    every packet it queues is from that interface, passed the filter, and carries the kernel's arrival time."""
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing yet
    except PermissionError as exc:
        raise InputError(f"capturing on {iface} needs root or CAP_NET_RAW") from exc
    try:  # a large buffer absorbs the pauses while finished calls are analysed (root may exceed rmem_max)
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)  # the kernel's arrival time, not our reading time
    sock.setblocking(False)
    try:
        if bpf:
            attach_bpf(sock, bpf)
        sock.bind((iface, ETH_P_ALL))  # Python puts the protocol in network order itself
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot capture on interface {iface!r}: {exc}") from exc
    except InputError:
        sock.close()
        raise
    return sock


PACKET_RX_RING = 5
PACKET_VERSION = 10
PACKET_IGNORE_OUTGOING = 23
TPACKET_V3 = 2
TP_STATUS_USER = 1
RING_BLOCK = 1 << 20  # bytes per ring block (the kernel hands over whole blocks)
RING_BLOCKS = 128  # 128 MiB: over four seconds of 100,000 packets/s of G.711 while the reader pauses ...
RING_RETIRE_MS = 100  # ... as a block that is not full is handed over only after this long (a block retired
# early holds less: with 20 ms, 128 blocks would hold 2.6 s of any rate, whatever their size)
RING_FRAME = 2048  # only checked by the kernel for TPACKET_V3 (blocks hold packets of any size)
TPACKET3_HDRLEN = 48  # TPACKET_ALIGN(sizeof(struct tpacket3_hdr)): where the sockaddr_ll follows


class Ring:
    """A PACKET_MMAP receive ring (TPACKET_V3) on an interface: the kernel fills blocks of packets in memory
    shared with us, and ``read`` takes one filled block, copies it out, hands it back and returns its frames as
    arrays (offsets, lengths, kernel arrival times), for ``Tracker.feed_frames`` to parse in bulk. No system call
    and no object per packet, which a raw socket's ``recvmsg`` costs. Loopback's outgoing copy of each packet is
    left out (PACKET_IGNORE_OUTGOING, and by the packet type where the kernel lacks that option)."""

    def __init__(self, iface: str, bpf: str | None = None, block_size: int = RING_BLOCK, blocks: int = RING_BLOCKS,
                 retire_ms: int = RING_RETIRE_MS) -> None:  # fmt: skip
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing yet
        except PermissionError as exc:
            raise InputError(f"capturing on {iface} needs root or CAP_NET_RAW") from exc
        self.block_size, self.blocks, self.current = block_size, blocks, 0
        try:
            self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            req = struct.pack("7I", block_size, blocks, RING_FRAME, block_size * blocks // RING_FRAME, retire_ms, 0, 0)
            self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            with contextlib.suppress(OSError):  # Linux 4.20 and later
                self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            self.map = mmap.mmap(self.sock.fileno(), block_size * blocks, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)  # fmt: skip
            if bpf:
                attach_bpf(self.sock, bpf)
            self.sock.bind((iface, ETH_P_ALL))  # bound last, as open_interface explains
        except OSError as exc:
            self.sock.close()
            raise InputError(f"cannot capture on interface {iface!r}: {exc}") from exc
        except InputError:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> tuple[bytes, np.ndarray, np.ndarray, np.ndarray] | None:
        """The next filled block's frames as (buffer, frame offsets, lengths, arrival times), or None."""
        base = self.current * self.block_size
        if not struct.unpack_from("I", self.map, base + 8)[0] & TP_STATUS_USER:
            return None
        count, first, used = struct.unpack_from("III", self.map, base + 12)
        buf = self.map[base : base + min(self.block_size, (used + 3) // 4 * 4)]
        struct.pack_into("I", self.map, base + 8, 0)  # TP_STATUS_KERNEL: the block is the kernel's again
        self.current = (self.current + 1) % self.blocks
        words = np.frombuffer(buf, np.uint32)
        offs = _packet_offsets(buf, words, first, count)
        w = offs >> 2
        seconds = words[w + 1] + words[w + 2] / 1e9
        snaplen = words[w + 3].astype(np.int64)
        mac = np.frombuffer(buf, np.uint16)[(offs + 24) >> 1].astype(np.int64)
        incoming = np.frombuffer(buf, np.uint8)[offs + TPACKET3_HDRLEN + 10] != PACKET_OUTGOING
        if incoming.all():
            return buf, offs + mac, snaplen, seconds
        return buf, (offs + mac)[incoming], snaplen[incoming], seconds[incoming]

    def statistics(self) -> tuple[int, int]:
        """(packets, drops) since the last call (tpacket_stats_v3 starts like tpacket_stats)."""
        received, dropped = struct.unpack("II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)[:8])
        return received, dropped

    def close(self) -> None:
        self.map.close()
        self.sock.close()


def _packet_offsets(buf: bytes, words: np.ndarray, first: int, count: int) -> np.ndarray:
    """Where the ``count`` packets of a ring block start: each tpacket3_hdr gives the distance to the next. Runs of
    equal distances (packets of one size, most of RTP) are checked with one array operation each."""
    pieces: list[np.ndarray] = []
    offsets: list[int] = []
    o, found, previous = first, 0, -1
    with memoryview(buf).cast("I") as view:
        while found < count:
            step = view[o >> 2]
            offsets.append(o)
            found += 1
            if step == previous and step and found < count:  # speculate: the next ones are as far apart
                run = o + step * np.arange(1, min(count - found, (len(buf) - o) // step - 1) + 1, dtype=np.int64)
                same = words[run >> 2] == step
                m = run.size if same.all() else int(np.argmin(same))
                if m:
                    pieces += [np.array(offsets, np.int64), run[:m]]
                    offsets = []
                    o, found = int(run[m - 1]), found + m
                    if found >= count:
                        break
                    step = view[o >> 2]  # the last of the run says where the next packet is
            previous = step
            o += step
    return np.concatenate([*pieces, np.array(offsets, np.int64)]) if pieces else np.array(offsets, np.int64)


def attach_bpf(sock: socket.socket, expression: str) -> None:
    """Compile a tcpdump filter expression (``tcpdump -ddd``) and attach it to the socket."""
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        raise InputError("--bpf needs tcpdump to compile the filter (apt-get install tcpdump)")
    proc = subprocess.run([tcpdump, "-ddd", expression], capture_output=True, text=True, timeout=10)
    if proc.returncode:
        raise InputError(f"bad BPF filter {expression!r}: {proc.stderr.strip()}")
    lines = proc.stdout.split("\n")
    insns = [tuple(int(v) for v in line.split()) for line in lines[1 : 1 + int(lines[0])]]
    program = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in insns))
    # the kernel copies the program during setsockopt, so the buffer may go away afterwards
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("HL", len(insns), ctypes.addressof(program)))


def _kernel_time(ancillary: list[tuple[int, int, bytes]]) -> float:
    """Arrival time from the SCM_TIMESTAMPNS control message (a struct timespec), else now."""
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
            sec, nsec = struct.unpack("qq", value[:16])
            return sec + nsec / 1e9
    return time.time()


def open_hep(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((host or "0.0.0.0", int(port)))
        try:  # a large buffer absorbs the pauses of the analysis and transcription threads
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot listen for HEP on {address!r}: {exc}") from exc
    return sock


def run(
    tracker: Tracker,
    on_call: Callable[[CapturedCall], object],
    iface: str | None = None,
    bpf: str | None = None,
    hep: str | None = None,
    duration_s: float | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_tick: Callable[[], object] | None = None,
    tick_s: float = 0.25,
    use_ring: bool | None = None,
) -> int:
    """Capture until ``duration_s`` passes or ``should_stop()``; report calls as they end and the rest at the
    end. An interface is read through a PACKET_MMAP ring unless ``use_ring`` is False. Returns the number of
    frames read."""
    if not iface and not hep:
        raise InputError("give an interface (-i) or a HEP address (--hep), or both")
    if tracker.keep_audio and tracker.spool_dir is None:  # calls in progress keep their payloads on disk
        tracker.spool_dir = spool_directory()
    if use_ring is None:  # CALLQA_LIVE_SOCKET=1: a raw socket, one recvmsg a packet (for comparison)
        use_ring = os.environ.get("CALLQA_LIVE_SOCKET") != "1"
    sockets: list[socket.socket | Ring] = []
    ring = Ring(iface, bpf) if iface and use_ring else None
    raw = open_interface(iface, bpf) if iface and not use_ring else None
    if ring:
        sockets.append(ring)
    if raw:
        sockets.append(raw)
    udp = open_hep(hep) if hep else None
    if udp:
        sockets.append(udp)
    loopback = iface == "lo"
    deadline = time.time() + duration_s if duration_s else None
    next_expiry = time.time() + 1.0
    next_tick = time.time() + tick_s

    def read_raw(limit: int) -> int:
        n = 0
        while n < limit:
            try:
                data, ancillary, _, addr = raw.recvmsg(SNAPLEN, 64)  # type: ignore[union-attr]
            except BlockingIOError:
                break
            n += 1
            if loopback and addr[2] == PACKET_OUTGOING:
                continue  # loopback delivers every packet twice
            tracker.feed_frame(_kernel_time(ancillary), LINK_ETHERNET, data)
        return n

    def read_ring(limit: int) -> int:
        n = 0
        while n < limit and (block := ring.read()) is not None:  # type: ignore[union-attr]
            n += 1
            tracker.feed_frames(*block)
        return n

    try:
        while not should_stop() and (deadline is None or time.time() < deadline):
            ready, _, _ = select.select(sockets, [], [], min(0.2, tick_s))
            for sock in ready:
                if sock is ring:
                    read_ring(RING_BLOCKS)  # the blocks filled so far
                elif sock is raw:
                    read_raw(BATCH)  # drain what is queued: one select per batch, not per packet
                elif udp is not None:
                    data, addr = udp.recvfrom(SNAPLEN)
                    try:
                        tracker.feed_segment(parse_hep3(data))
                    except ParseError as exc:
                        tracker.warn(f"HEP from {addr[0]}: {exc}")
            if on_tick is not None and time.time() >= next_tick:
                on_tick()  # e.g. feed the newly arrived audio to the live transcriber
                next_tick = time.time() + tick_s
            if time.time() >= next_expiry:
                # while packets are queued, time is the capture's (the newest packet read): a backlog must not
                # make calls look inactive; once the sockets are idle, the wall clock moves it on
                now = time.time() if not ready else min(time.time(), tracker.clock or time.time())
                for call in tracker.expire(now):
                    on_call(call)
                next_expiry = time.time() + 1.0
        if raw is not None:
            while read_raw(BATCH):  # stopping: what the kernel already queued is still read, not lost
                pass
        if ring is not None:  # stopping: the block being filled is handed over within its retire time
            time.sleep(2 * RING_RETIRE_MS / 1000)
            while read_ring(RING_BLOCKS):
                pass
    finally:
        if raw is not None:
            received, dropped = struct.unpack("II", raw.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
            tracker.kernel_drops = dropped  # tpacket_stats: what the kernel had to drop since the last read
        if ring is not None:
            tracker.kernel_drops = ring.statistics()[1]
            ring.close()
            sockets.remove(ring)
        for sock in sockets:
            sock.close()
    for call in tracker.expire(float("inf")):
        on_call(call)
    return tracker.frames
