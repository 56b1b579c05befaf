"""Streams measured piece by piece (as a live capture does, to keep memory flat over long calls) give the same
figures as the whole stream measured at once: on every shared capture and on generated streams."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callqa.capture.calls import CapturedCall, Stream, read_capture
from callqa.capture.fastpath import PacketTable
from callqa.capture.meter import StreamMeter
from callqa.capture.stats import measure_stream
from callqa.config import Settings
from callqa.protocol.rtp import StreamStats

PCMU = {0: ("PCMU", 8000), 101: ("telephone-event", 8000)}


def _copy(table: PacketTable) -> PacketTable:
    out = PacketTable(keep_payloads=False)
    for p in table:
        out.add(p.arrival, p.seq, p.timestamp, p.pt, p.marker, p.payload)
    return out


def _pieces(stream: Stream, encodings: dict, start: float, sizes: list[int]) -> Stream:
    """The same stream, its packets folded into a meter in pieces of the given sizes (the last piece held)."""
    folded = Stream(stream.key, _copy(stream.packets))
    folded.meter = StreamMeter(start, (50.0,))
    for size in sizes:
        if len(folded.packets) > size:
            folded.meter.feed(folded.packets.take_head(size), encodings)
    return folded


def _report_fields(call: CapturedCall, stream: Stream, settings_: Settings) -> dict:
    r = measure_stream(call, stream, "caller", settings_.analysis.jitter_buffer_ms).model_dump()
    for k in ("max_delta_ms", "max_jitter_ms", "mean_jitter_ms"):
        r[k] = pytest.approx(r[k], abs=0.002)  # the same recurrences, float sums in another order
    return r


def test_every_shared_capture_measures_the_same_in_pieces(testdata: Path) -> None:
    s = Settings()
    rng = random.Random(7)
    captures = [p for p in (testdata / "pcap").rglob("*") if p.suffix in (".pcap", ".rtp", ".cap")]
    compared = 0
    for path in captures:
        cap = read_capture(path, keep_audio=False)
        for call in cap.calls:
            for sts in call.streams.values():
                for stream in sts:
                    enc = call.encodings.get(stream.key, {})
                    sizes = [rng.randint(1, 400) for _ in range(len(stream.packets) // 50 + 1)]
                    folded = _pieces(stream, enc, cap.start, sizes)
                    whole, parts = _report_fields(call, stream, s), _report_fields(call, folded, s)
                    if stream.packets.seq.size > 1 and np.any(np.diff(stream.packets.seq.astype(int)) % 65536 > 32768):
                        # reordered packets: a late packet whose gap was measured in an earlier piece no longer
                        # fills it, so loss bursts may count more; every other figure is the same
                        parts["loss_bursts"] = whole["loss_bursts"]
                        parts["max_loss_burst"] = whole["max_loss_burst"]
                    assert parts == whole, (path.name, stream.key)
                    compared += 1
    assert compared >= 50  # every stream of every shared capture


@st.composite
def streams(draw):  # type: ignore[no-untyped-def]
    """A PCMU stream with loss, reordering, duplicates, a sequence wrap, comfort noise, DTMF and jitter."""
    n = draw(st.integers(5, 400))
    seq0 = draw(st.integers(0, 65535))
    ts0 = draw(st.integers(0, 2**32 - 1))
    rng = random.Random(draw(st.integers(0, 2**31)))
    rows = []
    for i in range(n):
        if rng.random() < 0.05:
            continue  # lost
        pt = 101 if rng.random() < 0.03 else (13 if rng.random() < 0.02 else 0)
        rows.append([1000.0 + 0.02 * i + rng.random() * 0.01, (seq0 + i) % 65536, (ts0 + 160 * i) % 2**32, pt,
                     rng.random() < 0.02])  # fmt: skip
    for _ in range(draw(st.integers(0, 3))):  # swap neighbours: reordering
        if len(rows) > 2:
            j = rng.randrange(len(rows) - 1)
            rows[j][1:], rows[j + 1][1:] = rows[j + 1][1:], rows[j][1:]
    if rows and draw(st.booleans()):
        rows.insert(rng.randrange(len(rows)), list(rows[rng.randrange(len(rows))]))  # a duplicate
    rows.sort(key=lambda r: r[0])
    return rows


@settings(max_examples=150, deadline=None)
@given(rows=streams(), sizes=st.lists(st.integers(1, 120), min_size=1, max_size=8))
def test_pieces_equal_packet_by_packet_recurrences(rows: list, sizes: list[int]) -> None:
    table = PacketTable(keep_payloads=False)
    reference = StreamStats()
    for arrival, seq, ts, pt, marker in rows:
        table.add(arrival, seq, ts, pt, marker, b"\x01\x0a\x00\xa0" if pt == 101 else b"")
        reference.add((arrival - 1000.0) * 1000.0, seq, ts, pt, marker, 0 if pt == 101 else 8000)
    meter = StreamMeter(1000.0)
    for size in sizes:
        meter.feed(table.take_head(size), PCMU)
    meter.feed(table, PCMU)
    got = meter.stats
    assert (got.total, got.expected, got.lost, got.duplicates, got.out_of_order) == (
        reference.total,
        reference.expected,
        reference.lost,
        reference.duplicates,
        reference.out_of_order,
    )
    assert got.max_delta == pytest.approx(reference.max_delta, abs=1e-6)
    assert got.max_jitter == pytest.approx(reference.max_jitter, abs=1e-6)
    assert got.mean_jitter == pytest.approx(reference.mean_jitter, abs=1e-6)
    assert len(meter.events) == sum(1 for r in rows if r[3] == 101)


@pytest.mark.parametrize("disorder", ["swap", "duplicate", "restart", "wrap"])
def test_a_stream_returns_to_array_operations_after_an_irregular_piece(disorder: str) -> None:
    """A long call with one disturbance early on (two packets swapped, a duplicate, the sender restarting its
    sequence numbers and timestamps, a swap across the sequence wrap) is measured packet by packet only while
    it lasts: the later pieces take the array operations again, and the figures are still the per-packet ones."""
    rng = random.Random(3)
    seq0 = 65000 if disorder == "wrap" else 1000
    rows = [[1000.0 + 0.02 * i + rng.random() * 0.004, (seq0 + i) % 65536, (5000 + 160 * i) % 2**32, 0, False]
            for i in range(6000)]  # fmt: skip
    k = 540 if disorder == "wrap" else 300  # (seq0 + 540 wraps past 65535)
    if disorder in ("swap", "wrap"):
        rows[k][1:], rows[k + 1][1:] = rows[k + 1][1:], rows[k][1:]
    elif disorder == "duplicate":
        rows.insert(k, [rows[k][0] + 0.001, *rows[k - 1][1:]])
    else:  # the same SSRC starts again from other numbers
        for i, r in enumerate(rows[k:]):
            r[1], r[2] = (7 + i) % 65536, (90000 + 160 * i) % 2**32
    rows.sort(key=lambda r: r[0])
    table, reference = PacketTable(keep_payloads=False), StreamStats()
    for arrival, seq, ts, pt, marker in rows:
        table.add(arrival, seq, ts, pt, marker, b"")
        reference.add((arrival - 1000.0) * 1000.0, seq, ts, pt, marker, 8000)
    meter = StreamMeter(1000.0)
    regular = []
    while len(table):
        meter.feed(table.take_head(500), PCMU)
        regular.append(meter.stats.regular)
    got = meter.stats
    assert (got.total, got.expected, got.lost, got.duplicates, got.out_of_order, got.sequence_errors) == (
        reference.total, reference.expected, reference.lost, reference.duplicates, reference.out_of_order,
        reference.sequence_errors)  # fmt: skip
    for name in ("max_delta", "max_jitter", "mean_jitter", "jitter"):
        assert getattr(got, name) == pytest.approx(getattr(reference, name), abs=1e-9), name
    # only the disturbed piece is measured packet by packet; after a restart, the pieces until the new numbers
    # pass the highest one seen before (packets 300 to about 1,600: they look late until then)
    assert regular.count(False) == (4 if disorder == "restart" else 1) and regular[-1], regular


def test_live_tracker_holds_bounded_packets_and_reports_what_the_file_gives(tmp_path: Path) -> None:
    """Three 5-minute calls (one with 1% loss on a direction) fed frame by frame to a statistics-only Tracker
    that expires once a second, as `callqa sniff --stats-only` does: no stream ever holds more than
    FOLD_AT + one second of packets, and every stream's report equals the one from reading the file whole."""
    import subprocess
    import sys

    from conftest import REPO

    from callqa.capture.calls import FOLD_AT, Tracker
    from callqa.protocol.pcap import CaptureFile
    from callqa.service.captures import report_call

    pcap = tmp_path / "long.pcap"
    subprocess.run([sys.executable, str(REPO / "bench/gen_capture.py"), str(pcap), "--calls", "3", "--seconds", "300",
                    "--seed", "5"], check=True, capture_output=True)  # fmt: skip
    s = Settings()

    def streams_of(calls: list[CapturedCall]) -> dict:
        out = {}
        for call in calls:
            for r in report_call(call, s, call.id, call.id, "t", stats_only=True).streams:
                fields = r.model_dump()
                for k in ("max_delta_ms", "max_jitter_ms", "mean_jitter_ms"):
                    fields[k] = pytest.approx(fields[k], abs=0.002)
                out[(call.id, r.ssrc)] = fields
        return out

    tracker = Tracker(keep_audio=False)
    done, next_tick, held = [], None, 0
    for frame in CaptureFile(pcap).frames():
        tracker.feed_frame(frame.ts, frame.linktype, frame.data)
        next_tick = next_tick or frame.ts + 1
        if frame.ts >= next_tick:
            held = max([held, *(len(st.packets) for st in tracker.streams.values())])
            done += tracker.expire(frame.ts)
            next_tick = frame.ts + 1
    done += tracker.expire(float("inf"))
    live = streams_of(done)
    whole = streams_of(read_capture(pcap, keep_audio=False).calls)
    assert len(live) == 6 and live == whole
    assert FOLD_AT <= held <= FOLD_AT + 60  # folded every second once FOLD_AT packets were held
    assert sum(r["lost"] for r in live.values()) > 0  # the lossy direction is measured, not only clean ones


def test_payloads_past_the_leg_limit_are_not_kept(tmp_path: Path) -> None:
    """Live audio analysis keeps each stream's payloads only up to the leg-length limit (what can be analysed):
    a call that never ends cannot fill memory with audio; its packets are still all counted."""
    import captures

    from callqa.capture.calls import Tracker
    from callqa.capture.stats import call_start
    from callqa.protocol.pcap import CaptureFile
    from callqa.service.captures import decode_leg

    first = captures.Call("cap-1", callee_frames=captures.speech_frames(4), seed=1)
    second = captures.Call(
        "cap-2",
        start=first.start + 6,
        codec="PCMA",
        seed=2,
        callee_frames=captures.speech_frames(4, "PCMA"),
        caller_frames=captures.silence(3, "PCMA"),
    )
    path = captures.write(tmp_path / "two.pcap", first.packets() + second.packets())
    whole = read_capture(path)
    tracker = Tracker(max_audio_s=1.0)
    for frame in CaptureFile(path).frames():
        tracker.feed_frame(frame.ts, frame.linktype, frame.data)
    capped = tracker.finish()
    assert [c.id for c in capped] == [c.id for c in whole.calls]
    for full, cut in zip(whole.calls, capped, strict=True):
        for role, streams in cut.streams.items():
            for s, f in zip(streams, full.streams[role], strict=True):
                assert len(s.packets) == len(f.packets) > 100  # every packet still measured
                kept = [p for p in s.packets if p.payload]
                assert 0 < len(kept) < len(s.packets) and kept[-1].arrival - s.first.arrival <= 1.0
            x, rate, _, _ = decode_leg(cut, streams, 7200)
            start = min(st.first.arrival for st in streams) - call_start(cut)  # where the leg's audio begins
            assert x.size / rate <= start + 1.0 + 0.05


def test_a_long_flow_that_is_not_rtp_stays_out_of_the_reports() -> None:
    """UDP that looks like RTP by its first byte but whose sequence numbers jump about: after thousands of
    packets the tracker keeps only the newest, and a run of orderly packets at the end does not turn it into a
    call (its other packets were dropped, not measured)."""
    import random
    import struct

    from callqa.capture.calls import FOLD_AT, Tracker
    from callqa.protocol.packet import PROTO_UDP, Segment

    rng = random.Random(3)
    tracker = Tracker(keep_audio=False)
    t, done = 1000.0, []
    for k in range(FOLD_AT + 1000):
        seq = rng.randrange(65536) if k < FOLD_AT else k  # noise, then 1000 orderly packets
        payload = struct.pack(">BBHII", 0x80, 0, seq & 0xFFFF, 160 * k, 0x5151) + bytes(160)
        tracker.feed_segment(Segment(t, PROTO_UDP, "10.0.0.1", 7000, "10.0.0.2", 7002, payload))
        t += 0.02
        if k % 50 == 0:
            done += tracker.expire(t)
    done += tracker.expire(float("inf"))
    assert done == []
