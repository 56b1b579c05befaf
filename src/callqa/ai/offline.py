"""Answers without a language model: deterministic, built from the findings, and labelled as such."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from callqa.ai.tools import FINDING_CODES, host_of, run_tool
from callqa.report import CallReport
from callqa.store import Store

LABEL = "Offline summary (no language model was used)"

# finding code -> (likely cause, what to check first)
CAUSES: dict[str, tuple[str, str]] = {
    "no_audio": ("no media reached the recorder from this side (RTP blocked, muted device or a failed codec "
                 "negotiation)", "RTP in both directions, the SDP connection address, the device's mute state"),
    "no_speech": ("this side never spoke (muted, silent handset or an unattended line)",
                  "the handset or softphone input, mute, and whether the line was answered by a person"),
    "one_way_audio": ("media flows in one direction only: typically NAT or a firewall drops RTP, the SDP names a "
                      "private address, or a SIP ALG rewrote it", "RTP in both directions (capture at the edge), "
                      "the SDP c= address against the public address, firewall/ALG settings"),
    "no_media": ("the call was answered but no RTP flowed at all: a firewall or NAT dropped both directions, "
                 "the SDP named unreachable addresses, or the capture point does not see the media path",
                 "the SDP c= and m= lines of both sides, firewall rules for the RTP port range, where the capture "
                 "was taken"),
    "dead_air": ("a long stretch with nobody speaking: hold without music, a transfer gap, or audio lost on both "
                 "sides", "the call flow at that time (hold, transfer, IVR) and both legs' RTP around it"),
    "clipping": ("the input gain on this side is too high", "headset or microphone gain and AGC settings"),
    "low_level": ("speech is too quiet: microphone placement, low gain or attenuation on a trunk",
                  "the headset, the input gain and the trunk's level settings"),
    "low_mos": ("perceived quality is poor: noise, codec artefacts or network impairment", "the NISQA dimensions "
                "(noisiness: background noise; discontinuity: loss or jitter; coloration: codec or headset)"),
    "mixed_legs": ("the recording mixes both directions in one channel",
                   "record the legs separately or in stereo so each side can be judged"),
    "packet_loss": ("packets were lost on the network in this direction", "interfaces and WAN links on the path, "
                    "QoS marking (DSCP EF) and queue drops"),
    "high_jitter": ("packets arrive unevenly (congestion, Wi-Fi, missing QoS)",
                    "link utilisation, QoS, Wi-Fi, and the endpoint's jitter buffer"),
    "no_transcript": ("speech activity without recognisable words: another language, music, tones or heavy "
                      "noise", "listen to the leg; set the transcription language or model if it is speech"),
    "required_phrase_missing": ("a required phrase (e.g. the recording disclosure) was not said in time",
                                "the agent's script and coaching; the call's transcript around the start"),
    "forbidden_phrase": ("a phrase the rules forbid was said", "the transcript at the finding's time"),
}  # fmt: skip


def assess(report: CallReport) -> str:
    lines = [f"{LABEL}.", f"Verdict {report.verdict.upper()} for call {report.id} ({report.duration_s:.0f} s)."]
    if not report.findings:
        lines.append("No problem found: every check passed.")
    for f in sorted(report.findings, key=lambda f: {"critical": 0, "warning": 1}.get(f.severity, 2)):
        cause, check = CAUSES.get(f.code, ("see the message", "the evidence in the report"))
        side = f" on the {f.leg} side" if f.leg else ""
        lines.append(f"- [{f.severity}] {f.code}{side}: {f.message}. Likely cause: {cause}. Check: {check}.")
    return "\n".join(lines)


def investigate(reports: list[CallReport], history: dict[str, int]) -> str:
    codes = Counter(f.code for r in reports for f in r.findings)
    legs = Counter(f"{f.code} on {f.leg}" for r in reports for f in r.findings if f.leg)
    verdicts = Counter(r.verdict for r in reports)
    lines = [f"{LABEL}.", f"Summary: {len(reports)} call(s): "
             + ", ".join(f"{n} {v}" for v, n in verdicts.most_common()) + "."]  # fmt: skip
    if not codes:
        lines.append("Evidence: no findings in these calls.")
        return "\n".join(lines)
    lines.append("Evidence: " + "; ".join(
        f"{c} in {n} call(s) [{', '.join(r.id for r in reports if any(f.code == c for f in r.findings))}]"
        for c, n in codes.most_common()) + ".")  # fmt: skip
    if legs:
        lines.append("Sides: " + ", ".join(f"{k} ({n})" for k, n in legs.most_common()) + ".")
    hosts = Counter(host_of(r.sip.to) for r in reports if r.sip and host_of(r.sip.to))
    if hosts:
        lines.append("SIP destinations: " + ", ".join(f"{h} ({n})" for h, n in hosts.most_common(5)) + ".")
    top = codes.most_common(1)[0][0]
    cause, check = CAUSES.get(top, ("unknown", "the reports"))
    lines.append(f"Likely root cause: {cause}.")
    lines.append(f"Next checks: {check}.")
    if history:
        lines.append("History (same findings, 7 days before): "
                     + ", ".join(f"{c}: {n} call(s)" for c, n in history.items()) + ".")  # fmt: skip
    return "\n".join(lines)


_KEYWORDS = {"one-way": "one_way_audio", "one way": "one_way_audio", "dead air": "dead_air", "loss": "packet_loss",
             "jitter": "high_jitter", "clipp": "clipping", "quiet": "low_level", "no audio": "no_audio",
             "silent": "no_speech", "mos": "low_mos", "mixed": "mixed_legs", "disclosure": "required_phrase_missing",
             "required phrase": "required_phrase_missing", "forbidden": "forbidden_phrase"}  # fmt: skip


def ask(store: Store, question: str, now: datetime | None = None) -> tuple[str, list[str]]:
    """Keyword reading of the question -> one tool call -> a plain answer. Returns (text, cited ids)."""
    now = now or datetime.now(UTC)
    q = question.lower()
    args: dict[str, Any] = {}
    finding = next((code for word, code in _KEYWORDS.items() if word in q), None)
    finding = finding or next((c for c in FINDING_CODES if c in q), None)
    if finding:
        args["finding"] = finding
    verdict = next((v for v in ("failed", "degraded", "good") if v in q), None)
    if verdict:
        args["verdict"] = verdict
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if "yesterday" in q:
        args["since"], args["until"] = (midnight - timedelta(days=1)).isoformat(), midnight.isoformat()
    elif "today" in q:
        args["since"] = midnight.isoformat()
    elif m := re.search(r"last (\d+) (hour|day)s?", q):
        args["since"] = (now - timedelta(**{m.group(2) + "s": int(m.group(1))})).isoformat()
    group = "sip_to_host" if "trunk" in q else "day" if "per day" in q or "by day" in q else None
    if group:
        result, cited = run_tool(store, "count_calls", {**args, "group_by": group})
        groups = result.get("groups", [])
        body = "; ".join(f"{g['key']}: {g['calls']} call(s) [{', '.join(g['examples'])}]" for g in groups)
        text = f"{LABEL}. Calls matching {args or 'all'} by {group}: {body or 'none'}."
    else:
        result, cited = run_tool(store, "search_calls", {**args, "limit": 20})
        body = "; ".join(f"[{c['id']}] {c['when']} {c['verdict']} {','.join(c['findings']) or 'no findings'}"
                         for c in result.get("calls", []))  # fmt: skip
        text = f"{LABEL}. {result.get('count', 0)} call(s) matching {args or 'all'}: {body or 'none'}."
    return text, cited
