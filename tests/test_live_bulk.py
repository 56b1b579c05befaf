"""The live tracker's bulk intake (``Tracker.feed_frames``, what the PACKET_MMAP ring feeds) against the per-packet
intake (``feed_frame``) on generated calls with loss, jitter, DTMF, a re-INVITE, SRTP and RTP with padding: the
same calls, streams, statistics, payloads and events; most RTP really goes the bulk way."""

from __future__ import annotations

import base64
import gc
import random
import struct
from pathlib import Path

import captures
import numpy as np
import pytest
from captures import Call, Srtp

from callqa.capture import spool as spool_module
from callqa.capture.calls import Tracker, stream_stats
from callqa.protocol.pcap import CaptureFile


def padded(frame: bytes) -> bytes:
    """The same RTP packet with the padding bit set and 4 bytes of padding (takes the per-packet path)."""
    udp_len = struct.unpack_from(">H", frame, 38)[0]
    body = bytearray(frame[42:])
    body[0] |= 0x20
    body += b"\0\0\0\x04"
    ip = bytearray(frame[14:34])
    ip[2:4] = struct.pack(">H", 20 + udp_len + 4)
    return (
        frame[:14]
        + bytes(ip)
        + struct.pack(">HHHH", *struct.unpack_from(">HH", frame, 34), udp_len + 4, 0)
        + bytes(body)
    )


def make(tmp: Path) -> Path:
    key = Srtp(base64.b64encode(random.Random(5).randbytes(30)).decode())
    calls = [
        Call("bulk-1", caller_frames=captures.silence(4), callee_frames=captures.silence(4), seed=1,
             caller_options={"drop": {3, 4, 50}, "jitter_ms": 12.0},
             callee_options={"dtmf": [(40, "7", 8)], "jitter_ms": 4.0}),
        Call("bulk-2", caller="10.1.0.2", callee="10.2.0.2", caller_port=20002, callee_port=30002,
             start=captures.T0 + 0.5, caller_frames=captures.silence(5), callee_frames=captures.silence(5), seed=2,
             reinvite=(2.0, "PCMA", captures.silence(3, "PCMA"), captures.silence(3, "PCMA"))),
        Call("bulk-3", caller="10.1.0.3", callee="10.2.0.3", caller_port=20004, callee_port=30004,
             start=captures.T0 + 1.0, caller_frames=captures.silence(3), callee_frames=captures.silence(3), seed=3,
             crypto={"caller": key, "callee": key}, caller_options={"srtp": key}, callee_options={"srtp": key}),
    ]  # fmt: skip
    packets = [p for c in calls for p in c.packets()]
    packets = [(t, padded(f) if i % 97 == 0 and len(f) == 214 else f) for i, (t, f) in enumerate(packets)]
    return captures.write(tmp / "bulk.pcap", packets)


def summary(tracker: Tracker) -> list[tuple]:  # type: ignore[type-arg]
    out = []
    for call in tracker.finish():
        for role, streams in call.streams.items():
            for s in streams:
                st = stream_stats(s, call.encodings.get(s.key, {}), tracker.start or 0.0)
                payloads = [p.payload for p in s.packets]
                out.append((call.id, role, s.key, st.total, st.lost, st.duplicates, st.max_delta, st.max_jitter,
                            st.mean_jitter, tuple(payloads), tuple(sorted(s.packets.events.items()))))  # fmt: skip
    return sorted(out)


@pytest.mark.parametrize("audio", ["stats-only", "memory", "spool"])
@pytest.mark.parametrize("block", [1, 7, 500])
def test_bulk_intake_equals_per_packet_intake(tmp_path: Path, audio: str, block: int,
                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(spool_module, "CHUNK", 2000)  # a few writes per stream
    frames = list(CaptureFile(make(tmp_path)).frames())
    keep_audio = audio != "stats-only"
    one = Tracker(keep_audio=keep_audio)
    for f in frames:
        one.feed_frame(f.ts, f.linktype, f.data)
    spool = tmp_path / "spool"
    spool.mkdir()
    bulk = Tracker(keep_audio=keep_audio, spool_dir=spool if audio == "spool" else None)
    slow = 0
    original = bulk.feed_frame

    def counting(ts: float, linktype: int, data: bytes) -> None:
        nonlocal slow
        slow += 1
        original(ts, linktype, data)

    bulk.feed_frame = counting  # type: ignore[method-assign]
    for a in range(0, len(frames), block):
        part = frames[a : a + block]
        buf = b"".join(f.data for f in part)
        sizes = np.array([len(f.data) for f in part], np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        bulk.feed_frames(buf, offsets, sizes, np.array([f.ts for f in part]))
        if a % (block * 40) == 0:
            bulk.expire(part[-1].ts)  # as the sniffer does once a second (nothing is over yet)
    assert bulk.frames == one.frames == len(frames)
    assert summary(bulk) == summary(one)
    assert len(summary(one)) == 8  # 2 + 4 (re-INVITE) + 2 SRTP streams
    if audio == "spool":  # the payloads were on disk, one file per stream, and go with their streams
        assert len(list(spool.iterdir())) == 8
        for call in bulk.expire(float("inf")):
            call.streams.clear()
        del call
        gc.collect()
        assert not list(spool.iterdir())
    if block == 7:  # SIP, padded packets, SRTP (300 packets) and the first packets of each stream's block only
        assert slow < 0.4 * len(frames)


def test_ring_block_packet_offsets_follow_the_headers() -> None:
    """A TPACKET_V3 block's packets are found by each header's distance to the next (runs of equal distances in
    bulk): on random blocks of mixed sizes, exactly the offsets a walk from header to header finds."""
    from callqa.capture.live import _packet_offsets

    rng = random.Random(3)
    for _ in range(300):
        sizes = [rng.choice([64, 272, 272, 272, 512]) if rng.random() < 0.9 else 16 * rng.randrange(3, 40)
                 for _ in range(rng.randrange(1, 80))]  # fmt: skip
        block, offsets, o = bytearray(48 + sum(sizes) + 64), [], 48
        for k, size in enumerate(sizes):
            offsets.append(o)
            block[o : o + 4] = (size if k < len(sizes) - 1 else 0).to_bytes(4, "little")  # the last says 0
            o += size
        data = bytes(block[: len(block) // 4 * 4])
        assert _packet_offsets(data, np.frombuffer(data, np.uint32), 48, len(sizes)).tolist() == offsets


def test_payload_spool_reads_back_what_was_appended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Payloads appended one by one and in groups, read back at random moments (a live reader) and at the end:
    always what was appended, whether still in memory or already in the file."""
    monkeypatch.setattr(spool_module, "CHUNK", 500)
    spool, expected = spool_module.PayloadSpool(tmp_path), []
    rng = random.Random(1)
    for _ in range(2000):
        payload = rng.randbytes(rng.choice([4, 20, 160]))
        if rng.random() < 0.5:
            spool.append(payload)
            expected.append(payload)
        else:
            spool.extend([payload, payload[::-1]])
            expected += [payload, payload[::-1]]
        if rng.random() < 0.05:
            k = rng.randrange(len(expected))
            assert spool[k] == expected[k]
    assert list(spool) == expected and spool[-1] == expected[-1] and spool[3:9] == expected[3:9]
    assert spool.path is not None and Path(spool.path).stat().st_size > 0.9 * sum(map(len, expected))
