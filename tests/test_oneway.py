"""One-way audio, dead air, no media and mixed stereo on the labelled suite (bench/gen_oneway.py, a few seeded calls
per class, espeak-ng speech and the bundled example only) and the network rules on their own."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REPO, write_wav

from callqa.config import AnalysisSettings, Settings
from callqa.quality import detectors
from callqa.report import RtpStream, SipInfo
from callqa.service.recordings import legs_from_files

sys.path.insert(0, str(REPO / "bench"))
import bench_detection  # noqa: E402
import gen_oneway  # noqa: E402

PER_CLASS = 2


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[tuple[dict[str, Any], Any]]]]:
    """Every class of the suite, generated and analysed once: class -> [(label, judgement)]."""
    out = tmp_path_factory.mktemp("suite")
    labels = gen_oneway.build(out, PER_CLASS, seed=7, espeak_only=True)
    settings = Settings(db=out / "s.db", models_dir=out / "m", analysis=AnalysisSettings(nisqa=False, dnsmos=False))
    results: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    for label in labels:
        d = asdict(label)
        report = bench_detection.analyse(out / d["notes"]["file"], d, settings)
        results.setdefault(label.cls, []).append((d, (bench_detection.judge(d, report), report)))
    yield results


NEGATIVE = ["normal", "dominant", "hold_ok", "cap_normal", "cap_dominant"]
DETECTED = [c for c in gen_oneway.CLASSES if c not in NEGATIVE]


@pytest.mark.parametrize("cls", DETECTED)
def test_each_fault_class_is_found_on_the_right_side(suite: dict, cls: str) -> None:  # type: ignore[type-arg]
    for label, (judged, report) in suite[cls]:
        found = [(f.code, f.severity, f.leg, f.start_s) for f in report.findings]
        what = f"{label['name']} ({label['variant']}): {found}"
        assert judged["detected"], what
        assert not judged["false_alarm"], what
        if label["oneway"]:
            assert judged["start_error_s"] <= 3.0, what
            (found,) = [f for f in report.findings if f.code == "one_way_audio"]
            assert found.evidence["used"], what
            if cls in ("cap_never_sent", "cap_stopped"):
                assert "network" in found.evidence["used"], what  # the RTP of each direction is looked at


@pytest.mark.parametrize("cls", NEGATIVE)
def test_normal_and_dominant_calls_are_not_one_way(suite: dict, cls: str) -> None:  # type: ignore[type-arg]
    for label, (judged, report) in suite[cls]:
        assert not judged["false_alarm"], f"{label['name']}: {[(f.code, f.severity, f.leg) for f in report.findings]}"
        if cls != "hold_ok":  # a hold is dead air, a warning
            assert report.verdict == "good", (label["name"], report.reasons)


def test_dominant_speaker_is_dominant(suite: dict) -> None:  # type: ignore[type-arg]
    """The class is what it says: the customer answers briefly and holds a small share of the talk."""
    for _label, (_judged, report) in suite["dominant"]:
        agent, customer = report.legs
        assert customer.speech_s / (agent.speech_s + customer.speech_s) < 0.25
        assert max(s.end_s - s.start_s for s in customer.speech_segments) < 1.2


def test_mixed_stereo_is_one_leg_without_overtalk(suite: dict) -> None:  # type: ignore[type-arg]
    for _label, (_judged, report) in suite["mixed"]:
        assert [leg.role for leg in report.legs] == ["mixed"]
        assert report.conversation is not None and report.conversation.overtalk_count == 0
        assert {f.code for f in report.findings} <= {"mixed_legs", "dead_air"}


def test_stereo_with_crosstalk_is_still_two_legs(tmp_path: Path, settings: Settings) -> None:
    rng = np.random.default_rng(3)
    a, b = (rng.normal(0, 0.1, 8000 * 20) * (np.arange(8000 * 20) // 8000 % 2 == k) for k in (0, 1))
    path = write_wav(tmp_path / "x.wav", np.stack([a + 0.1 * b, b + 0.1 * a]), 8000)  # -20 dB crosstalk
    legs, warnings = legs_from_files([path], settings)
    assert [leg.role for leg in legs] == ["left", "right"] and warnings == []
    same = write_wav(tmp_path / "y.wav", np.stack([a + b, (a + b) * 0.7]), 8000)  # one signal, two gains
    legs, warnings = legs_from_files([same], settings)
    assert [leg.role for leg in legs] == ["mixed"] and "same signal" in warnings[0]


# --- the network rules alone (statistics-only captures have no audio) -------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def stream(leg: str, packets: int, start: float, end: float, payload: str = "PCMU") -> RtpStream:
    return RtpStream(leg=leg, ssrc="0x1", src="127.0.0.1:1", dst="127.0.0.2:2", payload=payload, packets=packets,
                     expected=packets, lost=0, duplicates=0, out_of_order=0, max_delta_ms=20, max_jitter_ms=1,
                     mean_jitter_ms=1, start_s=start, end_s=end)  # fmt: skip


def answered(end_s: float = 10.0) -> SipInfo:
    return SipInfo(call_id="x", started_at=T0, answered_at=T0 + timedelta(seconds=1),
                   ended_at=T0 + timedelta(seconds=end_s), end_reason="BYE from callee")  # fmt: skip


def findings(streams: list[RtpStream], sip: SipInfo | None = None) -> list[Any]:
    return detectors.run_detectors([], AnalysisSettings(), streams, sip or answered())


def test_a_single_packet_against_hundreds_is_one_way() -> None:
    found = findings([stream("caller", 1, 1.0, 1.0), stream("callee", 355, 1.0, 8.1)])
    (f,) = [x for x in found if x.code == "one_way_audio"]
    assert (f.severity, f.leg, f.evidence["used"]) == ("critical", "caller", ["network"])
    assert f.evidence["network"]["packets"] == {"caller": 1, "callee": 355}
    assert detectors.verdict(found)[0] == "failed"


def test_rtp_that_stops_early_is_one_way_from_then() -> None:
    found = findings([stream("caller", 75, 1.0, 2.5), stream("callee", 400, 1.0, 9.0)])
    (f,) = [x for x in found if x.code == "one_way_audio"]
    assert (f.severity, f.leg, f.start_s) == ("critical", "caller", 2.5)
    # both directions to the end, or a stop shorter than the setting: nothing
    assert not [x for x in findings([stream("caller", 400, 1.0, 8.6), stream("callee", 400, 1.0, 9.0)])
                if x.code == "one_way_audio"]  # fmt: skip


def test_comfort_noise_only_is_one_way_and_dtx_pauses_are_not() -> None:
    found = findings([stream("caller", 40, 1.0, 9.0, "CN"), stream("callee", 400, 1.0, 9.0)])
    assert [(x.code, x.leg) for x in found] == [("one_way_audio", "caller")]
    # a DTX endpoint stops sending while its user is silent: its stop alone is not evidence
    dtx = findings([stream("caller", 200, 1.0, 5.0, "PCMU, CN"), stream("callee", 400, 1.0, 9.0)])
    assert not [x for x in dtx if x.code == "one_way_audio"]


def test_answered_call_without_rtp_is_no_media() -> None:
    found = findings([])
    assert [(x.code, x.severity) for x in found] == [("no_media", "critical")]
    assert detectors.verdict(found)[0] == "failed"
    unanswered = SipInfo(call_id="x", started_at=T0, ended_at=T0 + timedelta(seconds=5), end_reason="CANCEL")
    assert findings([], unanswered) == []
