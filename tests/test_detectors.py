"""Detectors on made-up calls with known faults, built from real recorded speech."""

from __future__ import annotations

import calls
import numpy as np
import pytest

from callqa.config import Settings
from callqa.pipeline import Leg, analyze_legs
from callqa.report import CallReport


def run(settings: Settings, agent: np.ndarray, customer: np.ndarray | None = None) -> CallReport:
    legs = [Leg("agent", "agent.wav", agent.astype(np.float32), calls.RATE)]
    if customer is not None:
        legs.append(Leg("customer", "customer.wav", customer.astype(np.float32), calls.RATE))
    return analyze_legs(legs, settings)


def codes(report: CallReport) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in report.findings:
        out.setdefault(f.code, []).append(f.severity)
    return out


def test_normal_conversation_is_good(settings: Settings) -> None:
    a, b = calls.conversation(60.0)
    report = run(settings, calls.leg(60, a), calls.leg(60, b, seed=1))
    assert report.verdict == "good", report.reasons
    assert report.findings == []
    for leg in report.legs:
        assert 0.2 < leg.speech_ratio < 0.7
        assert leg.mos.dnsmos is not None and 1.0 < leg.mos.dnsmos.ovrl < 5.0


def test_one_way_audio_customer_never_heard(settings: Settings) -> None:
    a, _ = calls.conversation(60.0)
    silent = np.random.default_rng(2).normal(0, 10 ** (-65 / 20), 60 * calls.RATE)  # line noise only
    report = run(settings, calls.leg(60, a), silent)
    found = [f for f in report.findings if f.code == "one_way_audio"]
    assert [f.severity for f in found] == ["critical"]
    assert found[0].leg == "customer"
    assert found[0].evidence["speech_s"]["customer"] < 1.0
    assert report.verdict == "failed"


def test_one_way_audio_digital_silence(settings: Settings) -> None:
    a, _ = calls.conversation(40.0)
    report = run(settings, calls.leg(40, a), np.zeros(40 * calls.RATE))
    assert codes(report)["one_way_audio"] == ["critical"]
    assert codes(report)["no_audio"] == ["warning"]  # one leg only: the call still has audio
    assert report.verdict == "failed"


def test_customer_lost_after_30_s(settings: Settings) -> None:
    a, b = calls.conversation(90.0)
    b_early = [t for t in b if t <= 25]  # not heard from ~30 s on: the agent's turns go on, each waits for a reply
    report = run(settings, calls.leg(90, a), calls.leg(90, b_early, seed=1))
    (lost,) = [f for f in report.findings if f.code == "one_way_audio"]
    assert lost.severity == "critical" and lost.leg == "customer"  # lost for good: the call failed
    customer_gone = b_early[-1] + calls.utterances()[(len(b_early) - 1) % 4].size / calls.RATE  # last words end
    assert lost.start_s == pytest.approx(customer_gone, abs=2) and lost.end_s == pytest.approx(90, abs=1)
    assert lost.evidence["used"] == ["audio"] and lost.evidence["audio"]["unanswered_waits"] >= 2
    assert report.verdict == "failed"


def test_monologue_after_the_last_reply_is_not_one_way(settings: Settings) -> None:
    a, b = calls.conversation(90.0)
    a_all = a + [t for t in b if t > 30]  # from 30 s on the agent talks on, 1 s pauses, waiting for no one
    report = run(settings, calls.leg(90, a_all), calls.leg(90, [t for t in b if t <= 25], seed=1))
    assert "one_way_audio" not in codes(report)


def _agent_dominated(customer_gain_db: float) -> tuple[np.ndarray, np.ndarray]:
    a, b = calls.conversation(60.0, gap_s=0.5)
    turns = sorted(a + b)
    customer = turns[2::4]  # the customer answers every fourth turn, never silent for 20 s
    agent = [t for t in turns if t not in customer]
    return calls.leg(60, agent), calls.leg(60, customer, gain_db=customer_gain_db, seed=1)


def test_talkative_agent_is_not_one_way(settings: Settings) -> None:
    report = run(settings, *_agent_dominated(0.0))
    agent, customer = report.legs
    assert customer.speech_s / (agent.speech_s + customer.speech_s) < 0.3  # a 70/30 split...
    assert "one_way_audio" not in codes(report)  # ...with no other marker is not a fault
    assert report.verdict == "good"


def test_one_way_when_split_and_faint(settings: Settings) -> None:
    report = run(settings, *_agent_dominated(-26.0))
    assert codes(report)["one_way_audio"] == ["warning"]
    assert codes(report)["low_level"] == ["warning"]
    assert report.findings[0].leg == "customer"


def test_dead_air(settings: Settings) -> None:
    report = run(settings, calls.leg(60, [1.0, 45.0]), calls.leg(60, [8.0, 50.0], seed=1))
    dead = [f for f in report.findings if f.code == "dead_air"]
    assert len(dead) == 1
    assert dead[0].start_s == pytest.approx(12.0, abs=1.5) and dead[0].end_s == pytest.approx(45.0, abs=0.5)
    assert report.verdict == "degraded"
    # a longer threshold no longer flags it
    longer = settings.model_copy(update={"analysis": settings.analysis.model_copy(update={"dead_air_min_s": 40})})
    assert "dead_air" not in codes(run(longer, calls.leg(60, [1.0, 45.0]),
                                       calls.leg(60, [8.0, 50.0], seed=1)))  # fmt: skip


def test_clipping(settings: Settings) -> None:
    a, b = calls.conversation(40.0)
    hot = np.clip(calls.leg(40, a, gain_db=18), -1.0, 1.0)
    report = run(settings, hot, calls.leg(40, b, seed=1))
    found = [f for f in report.findings if f.code == "clipping"]
    assert len(found) == 1 and found[0].leg == "agent"
    assert found[0].evidence["clipping_ratio"] > 0.001
    assert report.verdict == "degraded"


def test_low_level(settings: Settings) -> None:
    a, b = calls.conversation(40.0)
    report = run(settings, calls.leg(40, a), calls.leg(40, b, gain_db=-25, seed=1))
    found = [f for f in report.findings if f.code == "low_level"]
    assert len(found) == 1 and found[0].leg == "customer"
    assert found[0].evidence["active_dbfs"] < -35


def test_no_audio_at_all(settings: Settings) -> None:
    report = run(settings, np.zeros(10 * calls.RATE), np.zeros(10 * calls.RATE))
    assert codes(report) == {"no_audio": ["critical", "critical"]}
    assert report.verdict == "failed"
    assert all("no audio" in leg.mos.skipped["dnsmos"] for leg in report.legs)


def test_mixed_leg_is_flagged(settings: Settings) -> None:
    a, b = calls.conversation(30.0)
    mixed = calls.leg(30, a) + calls.leg(30, b, seed=1)
    report = analyze_legs([Leg("mixed", "mix.wav", mixed.astype(np.float32), calls.RATE)], settings)
    assert codes(report) == {"mixed_legs": ["info"]}
    assert report.verdict == "good"
