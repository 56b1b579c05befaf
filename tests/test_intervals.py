"""Loss and jitter per interval of a stream: they add up to the stream's own statistics, on every shared capture
and on generated calls, and come out the same when the stream is measured in pieces (a live call)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from calls import capture_file

from callqa.capture.calls import read_capture
from callqa.capture.fastpath import PacketTable
from callqa.capture.intervals import IntervalMeter
from callqa.capture.meter import StreamMeter, jitter_clocks
from callqa.config import AnalysisSettings, Settings
from callqa.service.captures import analyze_capture


def _intervals_in_pieces(table: PacketTable, encodings: dict, rng: random.Random) -> list:
    meter = IntervalMeter()
    rows = list(table)
    while rows:
        n = rng.randint(1, 300)
        piece = PacketTable(keep_payloads=False)
        for p in rows[:n]:
            piece.add(p.arrival, p.seq, p.timestamp, p.pt, p.marker, b"")
        meter.feed(piece, jitter_clocks(piece, encodings))
        rows = rows[n:]
    return meter.intervals()


def test_intervals_add_up_to_the_stream_on_every_shared_capture(testdata: Path) -> None:
    rng = random.Random(3)
    checked = 0
    for path in sorted(p for p in (testdata / "pcap").rglob("*") if p.suffix in (".pcap", ".rtp", ".cap")):
        cap = read_capture(path, keep_audio=False)
        for call in cap.calls:
            for sts in call.streams.values():
                for stream in sts:
                    enc = call.encodings.get(stream.key, {})
                    whole = StreamMeter(cap.start, (50.0,))
                    whole.feed(stream.packets, enc)
                    got = whole.timeline.intervals(max_count=10**6)
                    stats = whole.stats
                    assert sum(i.packets for i in got) == stats.total, path
                    assert sum(i.expected for i in got) == stats.expected, path
                    assert all(b.start > a.start for a, b in zip(got, got[1:], strict=False))
                    if stats.clock and not any(name.lower() == "telephone-event" for name, _ in enc.values()):
                        top = max(i.max_jitter_ms for i in got)
                        assert top == pytest.approx(stats.max_jitter, abs=0.01), path
                    assert all(
                        (a.start, a.packets, a.expected, a.lost) == (b.start, b.packets, b.expected, b.lost)
                        and a.max_jitter_ms == pytest.approx(b.max_jitter_ms, abs=0.002)
                        for a, b in zip(_intervals_in_pieces(stream.packets, enc, rng), got,
                                        strict=True)
                    )  # fmt: skip
                    checked += 1
    assert checked > 30


def test_loss_lands_in_the_intervals_where_packets_went_missing(tmp_path: Path) -> None:
    pcap = tmp_path / "calls.pcap"
    capture_file(pcap, 5, 30.0)
    settings = Settings(db=tmp_path / "s.sqlite3", analysis=AnalysisSettings(nisqa=False))
    reports, _ = analyze_capture(pcap, settings, None, stats_only=True)
    lossy = [s for r in reports for s in r.streams if s.lost > 0]
    assert lossy, "the generator drops 1% of one direction of every fifth call"
    for r in reports:
        for s in r.streams:
            first = s.intervals[0].start_s
            assert first == pytest.approx(s.start_s, abs=1e-3)  # intervals start with the stream
            assert [i.start_s - first for i in s.intervals][:4] == pytest.approx([0.0, 5.0, 10.0, 15.0], abs=1e-3)
            assert sum(i.packets for i in s.intervals) == s.packets
            assert sum(i.lost for i in s.intervals) == s.lost
            assert max(i.max_jitter_ms for i in s.intervals) == pytest.approx(s.max_jitter_ms, abs=0.01)
            assert (s.lost == 0) == all(i.lost == 0 for i in s.intervals)


def test_long_streams_merge_neighbouring_intervals() -> None:
    table = PacketTable(keep_payloads=False)
    for k in range(50 * 600):  # 10 minutes of 20 ms packets, every 100th lost
        if k % 100 != 7:
            table.add(1000.0 + 0.02 * k, k & 0xFFFF, (160 * k) & 0xFFFFFFFF, 0, False, b"")
    meter = IntervalMeter(1000.0)
    meter.feed(table, jitter_clocks(table, {0: ("PCMU", 8000)}))
    fine = meter.intervals(max_count=10**6)
    assert len(fine) == 120 and {i.lost for i in fine} == {2, 3}
    merged = meter.intervals(max_count=50)
    assert len(merged) == 40 and sum(i.lost for i in merged) == sum(i.lost for i in fine) == 300
    assert [i.start for i in merged[:3]] == [1000.0, 1015.0, 1030.0]


def test_a_forged_arrival_time_years_away_stays_bounded() -> None:
    """One packet stamped decades after the others (a corrupt capture record): the intervals between are not
    materialised one by one (that took gigabytes), they only widen the merged intervals."""
    table = PacketTable(keep_payloads=False)
    for k in range(500):
        arrival = 1000.0 + 0.02 * k + (2e9 if k == 499 else 0.0)
        table.add(arrival, k, 160 * k, 0, False, b"")
    meter = IntervalMeter()
    meter.feed(table, jitter_clocks(table, {0: ("PCMU", 8000)}))
    t0 = time.perf_counter()
    out = meter.intervals()
    assert time.perf_counter() - t0 < 1.0 and len(out) <= 360
    assert sum(i.packets for i in out) == 500 and sum(i.lost for i in out) == 0
    assert out[0].packets == 499 and out[-1].packets == 1
