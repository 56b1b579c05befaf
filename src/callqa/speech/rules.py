"""Phrase rules over the transcript (a YAML file) and the weighted scorecard they give.

    rules:
      - name: recording_disclosure
        type: required            # required: must be said; forbidden: must not be said
        phrases: ["this call may be recorded", "this call is recorded"]
        leg: agent                # optional: who must (or must not) say it
        within_s: 30              # optional, required rules: by this time from the start of the call
        severity: warning         # info, warning or critical (the finding's severity)
        weight: 20                # points the scorecard loses when the rule fails

Phrases match whole words, case and punctuation ignored, also across the utterances of one leg. Each failed
rule gives a finding (``required_phrase_missing`` or ``forbidden_phrase`` with the time and the words); the
scorecard is 100 minus the weights of the failed rules, at least 0.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from callqa.errors import InputError
from callqa.report import Finding, Role, Scorecard, ScoreItem, Severity, Utterance

_TOKEN = re.compile(r"[a-z0-9']+")


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    type: Literal["required", "forbidden"]
    phrases: list[str] = Field(min_length=1)
    leg: Role | None = None
    within_s: float | None = Field(None, gt=0)
    severity: Severity = "warning"
    weight: float = Field(0.0, ge=0, le=100)


class RuleSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[Rule] = []


def load_rules(path: Path) -> RuleSet:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputError(f"cannot read the rules file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise InputError(f"the rules file {path} is not valid YAML: {exc}") from exc
    try:
        return RuleSet.model_validate(data or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise InputError(f"the rules file {path} is not valid: {problems}") from exc


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower().replace("’", "'"))


def _timed_tokens(transcript: list[Utterance], leg: Role) -> list[tuple[str, float, float]]:
    """Every token of one leg with its time (word timestamps, else the utterance's span)."""
    out = []
    for u in transcript:
        if u.leg != leg:
            continue
        if u.words:
            out += [(t, w.start_s, w.end_s) for w in u.words for t in tokens(w.word)]
        else:
            out += [(t, u.start_s, u.end_s) for t in tokens(u.text)]
    return out


def find(transcript: list[Utterance], phrase: str, legs: list[Role]) -> list[tuple[Role, float, float, str]]:
    """Occurrences of ``phrase`` (leg, start, end, the words as said)."""
    want = tokens(phrase)
    hits: list[tuple[Role, float, float, str]] = []
    if not want:
        return hits
    for leg in legs:
        seq = _timed_tokens(transcript, leg)
        for i in range(len(seq) - len(want) + 1):
            if [t for t, _, _ in seq[i : i + len(want)]] == want:
                words = " ".join(t for t, _, _ in seq[i : i + len(want)])
                hits.append((leg, seq[i][1], seq[i + len(want) - 1][2], words))
    return hits


def apply(rules: RuleSet, transcript: list[Utterance], legs: list[Role]) -> tuple[list[Finding], Scorecard]:
    findings: list[Finding] = []
    items: list[ScoreItem] = []
    for rule in rules.rules:
        scope = [rule.leg] if rule.leg else legs
        hits = [h for p in rule.phrases for h in find(transcript, p, scope)]
        if rule.type == "required":
            in_time = [h for h in hits if rule.within_s is None or h[1] <= rule.within_s]
            passed = bool(in_time)
            if not passed:
                who = f"the {rule.leg} side" if rule.leg else "nobody"
                when = f" within the first {rule.within_s:g} s" if rule.within_s else ""
                late = f" (said later, at {hits[0][1]:.1f} s)" if hits else ""
                findings.append(Finding(
                    code="required_phrase_missing", severity=rule.severity, leg=rule.leg,
                    message=f"rule {rule.name}: {who} did not say {rule.phrases[0]!r}{when}{late}",
                    evidence={"rule": rule.name, "phrases": rule.phrases, "within_s": rule.within_s},
                ))  # fmt: skip
        else:
            passed = not hits
            for leg, start, end, words in hits:
                findings.append(Finding(
                    code="forbidden_phrase", severity=rule.severity, leg=leg, start_s=round(start, 3),
                    end_s=round(end, 3), message=f"rule {rule.name}: {leg} said {words!r} at {start:.1f} s",
                    evidence={"rule": rule.name, "words": words},
                ))  # fmt: skip
        items.append(ScoreItem(rule=rule.name, passed=passed, weight=rule.weight))
    score = max(0.0, 100.0 - sum(i.weight for i in items if not i.passed))
    return findings, Scorecard(score=score, items=items)
