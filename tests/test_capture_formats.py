"""The bulk (NumPy) statistics path on every capture format it takes: classic pcap in either byte order and with
nanosecond times, pcapng (written by editcap), Ethernet with 802.1Q and 802.1ad tags, and Linux cooked (SLL)
captures. Each variant is made from one generated capture; on each, the RTP really goes through the bulk path,
its figures equal the per-packet path's, and packets and losses equal ``tshark -z rtp,streams`` on every stream."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import captures
import pytest
from captures import Call, stream_summary

from callqa.capture.calls import read_capture
from callqa.capture.fastpath import scan_capture

ROW = re.compile(r"^\s+\S+\s+\S+\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)\s+(0x[0-9A-Fa-f]+)\s+.+?\s+(\d+)\s+(-?\d+) \(")


def records(data: bytes) -> list[tuple[bytes, bytes]]:
    """(record header, frame) of a little-endian classic pcap."""
    out, pos = [], 24
    while pos < len(data):
        incl = struct.unpack_from("<I", data, pos + 8)[0]
        out.append((data[pos : pos + 16], data[pos + 16 : pos + 16 + incl]))
        pos += 16 + incl
    return out


def rewrite(data: bytes, frame: Callable[[bytes], bytes], linktype: int | None = None) -> bytes:
    head = bytearray(data[:24])
    if linktype is not None:
        head[20:24] = struct.pack("<I", linktype)
    out = [bytes(head)]
    for rec, f in records(data):
        new = frame(f)
        sec, frac, _, orig = struct.unpack("<IIII", rec)
        out.append(struct.pack("<IIII", sec, frac, len(new), orig + len(new) - len(f)) + new)
    return b"".join(out)


def big_endian(data: bytes) -> bytes:
    out = [struct.pack(">IHHiIII", *struct.unpack_from("<IHHiIII", data))]
    for rec, f in records(data):
        out.append(struct.pack(">IIII", *struct.unpack("<IIII", rec)) + f)
    return b"".join(out)


def vlan(tags: bytes) -> Callable[[bytes], bytes]:
    return lambda f: f[:12] + tags + f[12:]


def sll(f: bytes) -> bytes:
    """Linux cooked header: packet type (0 = to us), ARPHRD_ETHER, address length, address, protocol."""
    return struct.pack(">HHH8sH", 0, 1, 6, f[6:12] + b"\0\0", struct.unpack_from(">H", f, 12)[0]) + f[14:]


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    calls = [
        Call("fmt-1", caller_frames=captures.silence(6), callee_frames=captures.silence(6), seed=1,
             caller_options={"drop": {5, 6, 7, 40, 200}, "jitter_ms": 8.0},
             callee_options={"dtmf": [(50, "5", 8)], "jitter_ms": 3.0}),
        Call("fmt-2", caller="10.1.0.2", callee="10.2.0.2", caller_port=20002, callee_port=30002, codec="PCMA",
             start=captures.T0 + 1.0, caller_frames=captures.silence(4, "PCMA"),
             callee_frames=captures.silence(4, "PCMA"), seed=2, callee_options={"drop": {10, 11}}),
    ]  # fmt: skip
    return captures.write(tmp_path_factory.mktemp("formats") / "calls.pcap", [p for c in calls for p in c.packets()])


def variant(original: Path, name: str, tmp: Path) -> Path:
    data = original.read_bytes()
    out = tmp / f"{name}.{'pcapng' if name == 'pcapng' else 'pcap'}"
    if name in ("pcapng", "nanoseconds"):
        if shutil.which("editcap") is None:
            pytest.skip("editcap (Wireshark) is not installed")
        subprocess.run(["editcap", "-F", "pcapng" if name == "pcapng" else "nsecpcap", str(original), str(out)],
                       check=True, capture_output=True)  # fmt: skip
        return out
    made = {
        "classic": lambda: data,
        "big-endian": lambda: big_endian(data),
        "vlan": lambda: rewrite(data, vlan(b"\x81\x00\x00\x64")),
        "qinq": lambda: rewrite(data, vlan(b"\x88\xa8\x00\x0a\x81\x00\x00\x64")),
        "sll": lambda: rewrite(data, sll, linktype=113),
    }[name]()
    out.write_bytes(made)
    return out


FORMATS = ["classic", "big-endian", "nanoseconds", "pcapng", "vlan", "qinq", "sll"]


@pytest.mark.parametrize("name", FORMATS)
def test_bulk_path_takes_the_rtp_and_equals_the_per_packet_path(original: Path, name: str, tmp_path: Path) -> None:
    path = variant(original, name, tmp_path)
    others: list[tuple[float, int, bytes]] = []
    warnings: list[str] = []
    found = scan_capture(path, lambda ts, link, frame: others.append((ts, link, frame)), warnings.append)
    assert found is not None, f"{name} did not take the bulk path"
    tables, first, frames = found
    bulk_rtp = sum(len(t) for t in tables.values())
    assert not warnings and frames == len(records(original.read_bytes()))
    assert len(others) == 12  # the SIP messages of the two calls; every RTP packet was parsed in bulk
    assert bulk_rtp == frames - 12 and len(tables) == 4
    assert first == pytest.approx(captures.T0, abs=1e-6)
    bulk, per_packet = stream_summary(path, keep_audio=False), stream_summary(path, keep_audio=True)
    assert bulk == per_packet
    assert sum(r[5] for r in bulk) == 5 + 2  # the losses the generator made (r[5]: lost)


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark (Wireshark) is not installed")
@pytest.mark.parametrize("name", FORMATS)
def test_bulk_statistics_match_tshark_on_every_format(original: Path, name: str, tmp_path: Path) -> None:
    path = variant(original, name, tmp_path)
    proc = subprocess.run(["tshark", "-q", "-r", str(path), "-z", "rtp,streams"], capture_output=True, text=True,
                          check=True, timeout=120)  # fmt: skip
    theirs = {}
    for line in proc.stdout.splitlines():
        if m := ROW.match(line):
            src, sport, dst, dport, ssrc, packets, lost = m.groups()
            theirs[(src, int(sport), dst, int(dport), int(ssrc, 16))] = (int(packets), int(lost))
    ours = {r[2]: (r[3], r[5]) for r in stream_summary(path, keep_audio=False)}
    assert len(theirs) == 4
    assert ours == theirs


def test_bulk_pcapng_reader_warns_like_the_per_packet_reader(original: Path, tmp_path: Path) -> None:
    data = variant(original, "pcapng", tmp_path).read_bytes()
    path = tmp_path / "cut.pcapng"
    for cut in (len(data) - 100, len(data) - 3, len(data) // 2 + 7):
        path.write_bytes(data[:cut])
        per_packet = read_capture(path, keep_audio=True)
        bulk = read_capture(path, keep_audio=False)
        assert per_packet.warnings == bulk.warnings and "truncated" in bulk.warnings[0]
        assert stream_summary(path, keep_audio=False) == stream_summary(path, keep_audio=True)
