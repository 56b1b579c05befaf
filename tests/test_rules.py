"""Phrase rules and the scorecard, on the bundled call's real transcript; rules-file errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from callqa.ai import offline
from callqa.ai.tools import run_tool
from callqa.config import AnalysisSettings, Settings
from callqa.errors import InputError
from callqa.report import Utterance, Word
from callqa.service.recordings import analyze_recording
from callqa.speech.rules import find, load_rules
from callqa.store import Store

REPO = Path(__file__).resolve().parents[1]
RULES = """
rules:
  - name: recording_disclosure
    type: required
    phrases: ["this call may be recorded", "this call is being recorded"]
    leg: agent
    within_s: 30
    weight: 30
  - name: closing
    type: required
    phrases: ["have a nice day"]
    leg: agent
    severity: info
    weight: 10
  - name: no_promises_of_engineers
    type: forbidden
    phrases: ["an engineer"]
    leg: agent
    severity: critical
    weight: 25
  - name: late_disclosure
    type: required
    phrases: ["this call may be recorded"]
    within_s: 0.5
    weight: 5
"""


def test_rules_on_the_example_call(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    analysis = AnalysisSettings(nisqa=False, dnsmos=False, transcribe=True, rules_file=rules)
    settings = Settings(db=tmp_path / "s.sqlite3", analysis=analysis)
    report, _ = analyze_recording([REPO / "examples/call-agent.wav", REPO / "examples/call-customer.wav"], settings)
    by_rule = {f.evidence["rule"]: f for f in report.findings if "rule" in f.evidence}
    assert "recording_disclosure" not in by_rule  # the agent says it at about 2 s
    assert by_rule["closing"].code == "required_phrase_missing" and by_rule["closing"].severity == "info"
    promise = by_rule["no_promises_of_engineers"]
    assert promise.code == "forbidden_phrase" and promise.leg == "agent" and promise.severity == "critical"
    assert 33.0 < promise.start_s < promise.end_s < 37.0 and promise.evidence["words"] == "an engineer"
    assert "said later" in by_rule["late_disclosure"].message
    assert report.scorecard is not None and report.scorecard.score == 100 - 10 - 25 - 5
    assert [(i.rule, i.passed) for i in report.scorecard.items] == [
        ("recording_disclosure", True), ("closing", False), ("no_promises_of_engineers", False),
        ("late_disclosure", False)]  # fmt: skip
    assert report.verdict == "degraded"  # rules do not change the quality verdict (dead air does)
    store = Store(settings.db)
    store.put(report)
    text, cited = offline.ask(store, "Which calls had a forbidden phrase today?")
    assert cited == [report.id] and "forbidden_phrase" in text
    found, ids = run_tool(store, "search_calls", {"finding": "required_phrase_missing"})
    assert ids == [report.id]
    # a changed rules file is a different analysis: not served from the cache
    rules.write_text(RULES.replace("weight: 25", "weight: 50"))
    again, cached = analyze_recording([REPO / "examples/call-agent.wav", REPO / "examples/call-customer.wav"], settings,
                                  store=None)  # fmt: skip
    assert again.scorecard is not None and again.scorecard.score == 100 - 10 - 50 - 5


def test_phrases_match_across_utterances_ignoring_case_and_punctuation() -> None:
    words = [("This", 1.0), ("call,", 1.3), ("MAY", 1.6)], [("be", 2.5), ("recorded.", 2.8)]
    transcript = [Utterance(leg="agent", start_s=w[0][1], end_s=w[-1][1] + 0.2, text=" ".join(x for x, _ in w),
                            words=[Word(word=x, start_s=t, end_s=t + 0.2, probability=1.0) for x, t in w],
                            confidence=1.0) for w in words]  # fmt: skip
    assert find(transcript, "this call may be recorded", ["agent"]) == [
        ("agent", 1.0, 3.0, "this call may be recorded")
    ]
    assert find(transcript, "this call may be recorded", ["customer"]) == []


@pytest.mark.parametrize(("text", "message"), [
    ("rules: [{name: x, type: maybe, phrases: [a]}]", "rules.0.type"),
    ("rules: [{name: x, type: required, phrases: []}]", "rules.0.phrases"),
    ("rules: [{name: x, type: required, phrases: [a], colour: red}]", "colour"),
    ("rules: [{name: x", "not valid YAML"),
])  # fmt: skip
def test_bad_rules_files_are_clear_errors(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        load_rules(path)
    with pytest.raises(InputError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml")
