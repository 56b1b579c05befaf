"""Per-stream RTP statistics agree with ``tshark -q -z rtp,streams`` (TShark 4.0.17) on every shared capture
where tshark reports the stream: packets and lost exactly, max delta and max/mean jitter within 0.1 ms."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from captures import stream_summary
from conftest import TESTDATA

from callqa.capture.calls import read_capture, stream_stats

ROW = re.compile(
    r"^\s+[\d.]+\s+[\d.]+\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)\s+(0x[0-9A-Fa-f]+)\s+.+?\s+(\d+)\s+(-?\d+) \(.*?\)"
    r"\s+[\d.]+\s+[\d.]+\s+([\d.]+)\s+[\d.]+\s+([\d.]+)\s+([\d.]+)"
)


def references() -> list[tuple[str, Path, dict[tuple[str, int, str, int, int], dict[str, float]]]]:
    out = []
    for ref in sorted((TESTDATA / "reference" / "tshark").glob("*.txt")):
        lines = ref.read_text().splitlines()
        capture = TESTDATA / "pcap" / lines[0].split("./", 1)[1]
        rows = {}
        for line in lines:
            if m := ROW.match(line):
                src, sport, dst, dport, ssrc, pkts, lost, max_delta, mean_jitter, max_jitter = m.groups()
                rows[(src, int(sport), dst, int(dport), int(ssrc, 16))] = {
                    "packets": int(pkts), "lost": int(lost), "max_delta": float(max_delta),
                    "mean_jitter": float(mean_jitter), "max_jitter": float(max_jitter),
                }  # fmt: skip
        if rows and capture.exists():
            out.append((ref.stem, capture, rows))
    return out


REFS = references()


@pytest.mark.parametrize("bulk", [False, True], ids=["per-packet", "bulk"])
@pytest.mark.parametrize(("name", "capture", "expected"), REFS, ids=[r[0] for r in REFS])
def test_stream_statistics_match_tshark(testdata: Path, name: str, capture: Path, expected: dict, bulk: bool) -> None:
    found = read_capture(capture, keep_audio=not bulk)  # statistics only takes the bulk (NumPy) path
    ours = {}
    for call in found.calls:
        for streams in call.streams.values():
            for s in streams:
                ours[s.key] = stream_stats(s, call.encodings.get(s.key, {}), found.start)
    for key, ref in expected.items():
        assert key in ours, f"stream {key} that tshark reports was not found"
        st = ours[key]
        assert st.total == ref["packets"]
        assert st.lost == ref["lost"]
        assert st.max_delta == pytest.approx(ref["max_delta"], abs=0.1)
        assert st.max_jitter == pytest.approx(ref["max_jitter"], abs=0.1)
        assert st.mean_jitter == pytest.approx(ref["mean_jitter"], abs=0.1)


def test_bulk_path_equals_per_packet_path_on_every_capture(testdata: Path) -> None:
    captures = [p for p in (testdata / "pcap").rglob("*") if p.suffix in (".pcap", ".rtp", ".cap", ".pcapng")]
    assert len(captures) > 30
    for path in captures:
        assert stream_summary(path, True) == stream_summary(path, False), path.name


def test_reference_set_is_not_empty(testdata: Path) -> None:
    assert len(REFS) >= 30  # every capture with RTP that tshark decodes


def test_rtpproxy_figures(testdata: Path) -> None:
    """The second, independent reference: rtpproxy's counts for lost, weird and dups (see MANIFEST)."""
    cases = {"rtpproxy/lost.a.rtp": (244, 565), "rtpproxy/weird.o.rtp": (1273, 3379)}
    for name, (received, sent) in cases.items():
        cap = read_capture(testdata / "pcap" / name)
        (call,) = cap.calls
        (stream,) = next(iter(call.streams.values()))
        st = stream_stats(stream, {}, cap.start)
        assert (st.total, st.expected, st.lost) == (received, sent, sent - received)
    cap = read_capture(testdata / "pcap/rtpproxy/dups.a.rtp")
    (stream,) = next(iter(cap.calls[0].streams.values()))
    assert stream_stats(stream, {}, cap.start).duplicates == 1
