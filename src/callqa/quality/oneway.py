"""One-way audio: one side of a call is not heard while the other goes on. Pure functions of the legs' speech
timelines and levels, and for captured calls of each direction's RTP (packets, first and last packet, payload).

Audio evidence (both legs recorded apart):
- a side that says nothing at all while the other talks (only line noise or digital silence);
- a side that falls silent for good while the other keeps talking *and waiting for it*: pauses of at least
  ``one_way_wait_s`` that nobody answers, followed by more talk ("hello? ... hello, are you there?"). A talker
  who just goes on (a long explanation after the last "okay") waits for no one, so a dominant speaker with short
  replies from the other side is not a fault;
- a pause of the talker of ``one_way_hold_gap_s`` or more inside the silence (a hold, a transfer): the loss shows
  only when the talker comes back, so the finding starts there.

Network evidence (captured calls with SIP): a direction that is missing or sent almost no packets, one that
carries only comfort noise, one whose RTP stops while the other's goes on. An answered call with no RTP at all
is ``no_media``.

Each finding names the silent side (``leg``), the moment the audio was lost (``start_s``) and in ``evidence``
which evidence it rests on (``used``: audio, network) with the figures.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any

from callqa.config import AnalysisSettings
from callqa.report import Finding, LegReport, RtpStream, Severity, SipInfo

DIRECTIONS = ("caller", "callee")
NON_VOICE = {"CN", "COMFORT-NOISE", "TELEPHONE-EVENT", "PT13"}
MIN_TALKER_PACKETS = 50  # 1 s of 20 ms packets: less than this from both sides says nothing about one-way


@dataclass(frozen=True)
class Direction:
    """One direction's RTP, over all its streams."""

    role: str
    packets: int  # received
    sent: int  # what the sender sent, from the sequence numbers (at least what was received)
    first_s: float
    last_s: float
    payloads: frozenset[str]

    @property
    def comfort_noise_only(self) -> bool:
        return bool(self.payloads) and self.payloads <= NON_VOICE

    @property
    def uses_dtx(self) -> bool:
        return bool(self.payloads & {"CN", "COMFORT-NOISE", "PT13"})


def directions(streams: list[RtpStream]) -> dict[str, Direction]:
    out: dict[str, Direction] = {}
    for role in DIRECTIONS:
        mine = [st for st in streams if st.leg == role]
        if mine:
            names = {n.strip().upper() for st in mine for n in st.payload.split(",") if n.strip()}
            received = sum(st.packets for st in mine)
            sent = max(received, sum(st.expected for st in mine))
            out[role] = Direction(role, received, sent, min(st.start_s for st in mine),
                                  max(st.end_s for st in mine), frozenset(names))  # fmt: skip
    return out


def call_end_s(legs: list[LegReport], streams: list[RtpStream], sip: SipInfo | None) -> float:
    """The end of the call on its timeline: the last audio, the last packet, or the BYE."""
    end = max([leg.duration_s for leg in legs] + [st.end_s for st in streams], default=0.0)
    if sip is not None and sip.started_at is not None and sip.ended_at is not None and (legs or streams):
        end = max(end, (sip.ended_at - sip.started_at).total_seconds())
    return end


# --- audio ------------------------------------------------------------------------------------------------


def _window_max(leg: LegReport, a: float, b: float, inside: bool = False) -> float | None:
    """The loudest second of ``leg`` overlapping [a, b] (or ``inside`` it), dBFS; None when there is none."""
    t = leg.level_timeline_dbfs
    i, j = (math.ceil(a), math.floor(b)) if inside else (math.floor(a), math.ceil(b))
    i, j = max(0, i), min(len(t), j)
    return max(t[i:j]) if j > i else None


def heard_speech(leg: LegReport, s: AnalysisSettings) -> list[tuple[float, float]]:
    """The leg's speech segments, less those no louder than its line noise (the VAD's answer to hum or hiss)."""
    segs = [(x.start_s, x.end_s) for x in leg.speech_segments]
    floor = leg.noise_floor_dbfs
    if floor is None or not leg.level_timeline_dbfs:
        return segs
    out = []
    for a, b in segs:
        level = _window_max(leg, a, b)
        if level is None or level >= floor + s.one_way_noise_margin_db:
            out.append((a, b))
    return out


def heard(quiet: LegReport, talker: LegReport, s: AnalysisSettings) -> list[tuple[float, float]]:
    """What the other side could hear of ``quiet``: its speech, and any sound well above its noise floor in the
    talker's pauses (a short "yes" or "okay" that the VAD let through is still an answer; sound under the
    talker's own speech may be echo, so it does not count)."""
    segs = heard_speech(quiet, s)
    talk = sorted((x.start_s, x.end_s) for x in talker.speech_segments)
    starts = [a for a, _ in talk]
    for x in quiet.sound_segments:
        a, b = x.start_s, x.end_s
        i = max(0, bisect.bisect_right(starts, a) - 1)
        overlap = 0.0
        while i < len(talk) and talk[i][0] < b:
            overlap += max(0.0, min(b, talk[i][1]) - max(a, talk[i][0]))
            i += 1
        if overlap < 0.5 * (b - a):
            segs.append((a, b))
    return sorted(segs)


def _audio_end(leg: LegReport, s: AnalysisSettings) -> float:
    """Where the leg's audio ends: its last sample, or the start of the digital silence that runs to it (a
    stream that goes on sending G.711 silence), to the second."""
    t = leg.level_timeline_dbfs
    k = len(t)
    while k > 0 and t[k - 1] < s.digital_silence_dbfs:
        k -= 1
    return min(float(k), leg.duration_s)


def _content(leg: LegReport | None, a: float, b: float, s: AnalysisSettings) -> str:
    """What the silent side carries in [a, b]: no audio, digital silence, line noise or sound without speech."""
    if leg is None or leg.duration_s <= a + 1.0:
        return "no audio" + (f" after {leg.duration_s:.1f} s" if leg is not None else "")
    level = _window_max(leg, a + 0.5, min(b, leg.duration_s), inside=True)  # whole seconds after the last words
    if level is None:
        return "no audio"
    tail = f" after {leg.duration_s:.1f} s" if leg.duration_s < b - 1.0 else ""
    if level < s.digital_silence_dbfs:
        return "digital silence" + tail
    floor = leg.noise_floor_dbfs if leg.noise_floor_dbfs is not None else level
    if level < floor + s.one_way_noise_margin_db:
        return f"line noise ({level:.0f} dBFS)" + tail
    return f"sound without speech (up to {level:.0f} dBFS)" + tail


@dataclass(frozen=True)
class Silence:
    """A stretch in which ``quiet`` says nothing while ``talker`` talks into it."""

    quiet: str
    talker: str
    start_s: float  # where the evidence starts: the quiet side's last words, or the talker's return from a hold
    end_s: float
    to_end: bool  # the quiet side never speaks again
    spoke_before: bool
    talk_s: float
    waits: int  # talker pauses of at least one_way_wait_s that nobody answered, followed by more talk
    waiting_s: float  # their total length
    hold_s: float  # the talker's longest pause skipped at the start (a hold or transfer)


def _clip(segs: list[tuple[float, float]], a: float, b: float) -> list[tuple[float, float]]:
    return [(max(x, a), min(y, b)) for x, y in segs if y > a and x < b]


def silences(quiet: LegReport, talker: LegReport, end: float, s: AnalysisSettings) -> list[Silence]:
    """Every stretch of the quiet side's silence in which the talker talks, measured."""
    q, t = heard(quiet, talker, s), heard_speech(talker, s)
    gaps, cursor = [], 0.0
    for a, b in q:
        if a > cursor:
            gaps.append((cursor, a, False))
        cursor = max(cursor, b)
    gaps.append((cursor, end, True))
    out = []
    for a, b, to_end in gaps:
        talk = _clip(t, a, b)
        if not talk:
            continue
        start, hold = a, 0.0
        prev = a
        for x, y in talk:  # the evidence starts after the talker's last long pause (hold, transfer)
            if x - prev >= s.one_way_hold_gap_s:
                start, hold = x, max(hold, x - prev)
            prev = max(prev, y)
        talk = _clip(talk, start, b)
        # pauses that wait for the quiet side: between the talker's words, and before its first words when they
        # follow the quiet side's last ones (the reply that does not come)
        pauses = [x - y for (_, y), (x, _) in zip(talk, talk[1:], strict=False)]
        if a > 0.0 and start == a:
            pauses.append(talk[0][0] - a)
        waits = [p for p in pauses if p >= s.one_way_wait_s]
        out.append(Silence(quiet.role, talker.role, start, b, to_end, a > 0.0 or bool(q),
                           sum(y - x for x, y in talk), len(waits), sum(waits), hold))  # fmt: skip
    return out


def audio_evidence(legs: list[LegReport], end: float, s: AnalysisSettings) -> dict[str, tuple[Severity, Silence]]:
    """quiet role -> (severity, the silence that shows it), from the two legs' speech over time."""
    if len(legs) != 2 or any(leg.role == "mixed" for leg in legs):
        return {}
    out: dict[str, tuple[Severity, Silence]] = {}
    for quiet, talker in (legs, legs[::-1]):
        for sil in silences(quiet, talker, end, s):
            if sil.talk_s < s.one_way_min_talk_s:
                continue
            waiting = sil.waiting_s >= s.one_way_wait_share * sil.talk_s  # waits for a reply, not a monologue
            if not sil.spoke_before and sil.to_end:
                severity: Severity = "critical"  # never heard at all while the other talks
            elif (sil.to_end and sil.end_s - sil.start_s >= s.one_way_after_min_s and waiting
                  and sil.waits >= s.one_way_min_waits):  # fmt: skip
                content = _content(quiet, sil.start_s, sil.end_s, s)
                severity = "warning" if content.startswith("sound") else "critical"
            elif sil.end_s - sil.start_s >= s.one_way_partial_min_s and waiting and sil.waits > s.one_way_min_waits:
                severity = "warning"  # lost for a while, then back
            else:
                continue
            if quiet.role not in out or _rank(severity) > _rank(out[quiet.role][0]):
                out[quiet.role] = (severity, sil)
    return out


# --- network ----------------------------------------------------------------------------------------------


def network_evidence(
    streams: list[RtpStream], sip: SipInfo | None, s: AnalysisSettings
) -> dict[str, tuple[float, str, dict[str, Any]]]:
    """silent direction -> (since when, why, figures), for an answered SIP call whose other direction carries
    voice. DTX streams (comfort noise in the payload) may stop while their side is silent, so a stop alone
    is only reported for a direction that never used comfort noise."""
    if sip is None or sip.answered_at is None:
        return {}
    d = directions(streams)
    figures = {
        "packets": {r: x.packets for r, x in d.items()},
        "first_packet_s": {r: round(x.first_s, 3) for r, x in d.items()},
        "last_packet_s": {r: round(x.last_s, 3) for r, x in d.items()},
        "payload": {r: ", ".join(sorted(x.payloads)) for r, x in d.items()},
    }
    out: dict[str, tuple[float, str, dict[str, Any]]] = {}
    for role, other in (DIRECTIONS, DIRECTIONS[::-1]):
        o = d.get(other)
        if o is None or o.sent < MIN_TALKER_PACKETS or o.comfort_noise_only:
            continue
        me = d.get(role)
        if me is None:
            out[role] = (o.first_s, f"no RTP from the {role}", figures)
        elif me.packets < s.one_way_rtp_share * o.sent:
            out[role] = (o.first_s, f"the {role} sent {me.packets} RTP packets, the {other} {o.packets}", figures)
        elif me.comfort_noise_only:
            out[role] = (o.first_s, f"the {role}'s RTP carries only comfort noise", figures)
        elif o.last_s - me.last_s >= s.one_way_rtp_stop_s and not me.uses_dtx:
            out[role] = (me.last_s, f"the {role}'s RTP stops at {me.last_s:.1f} s, the {other}'s goes on to "
                                    f"{o.last_s:.1f} s", figures)  # fmt: skip
    return out


def no_media(streams: list[RtpStream], sip: SipInfo | None) -> list[Finding]:
    """An answered call without RTP: nobody heard anything (firewall, NAT, wrong SDP address, media server)."""
    if sip is None or sip.answered_at is None or streams:
        return []
    return [
        Finding(
            code="no_media",
            severity="critical",
            message="the call was answered but no RTP was seen in either direction: check the media path "
            "(firewall, NAT, SDP addresses) and that the capture saw the media",
            evidence={"used": ["network"], "answered_at": sip.answered_at.isoformat(), "end_reason": sip.end_reason},
        )
    ]


# --- the finding ------------------------------------------------------------------------------------------


def _rank(severity: Severity) -> int:
    return {"info": 0, "warning": 1, "critical": 2}[severity]


def one_way_audio(
    legs: list[LegReport], s: AnalysisSettings, streams: list[RtpStream] | None = None, sip: SipInfo | None = None
) -> list[Finding]:
    streams = streams or []
    if no_media(streams, sip):
        return []
    end = call_end_s(legs, streams, sip)
    audio = audio_evidence(legs, end, s)
    network = network_evidence(streams, sip, s)
    by_role: dict[str, LegReport] = {leg.role: leg for leg in legs}
    media_start = min((st.start_s for st in streams), default=0.0)
    findings: list[Finding] = []
    for role in [r for r in (*DIRECTIONS, *by_role) if r in audio or r in network]:
        if any(f.leg == role for f in findings):
            continue
        evidence: dict[str, Any] = {"used": []}
        severity: Severity = "info"
        start: float | None = None
        reasons = []
        if role in network:
            since, why, figures = network[role]
            evidence["used"].append("network")
            evidence["network"] = figures
            severity, start = "critical", since
            reasons.append(why)
        if role in audio:
            sev, sil = audio[role]
            evidence["used"].append("audio")
            evidence["audio"] = {
                "silent_from_s": round(sil.start_s, 3),
                "talker": sil.talker,
                "talk_s": round(sil.talk_s, 2),
                "unanswered_waits": sil.waits,
                "waiting_s": round(sil.waiting_s, 2),
                "after_pause_s": round(sil.hold_s, 2),
                "quiet_side_carries": _content(by_role.get(role), sil.start_s, sil.end_s, s),
            }
            if _rank(sev) > _rank(severity):
                severity = sev
            if start is None:
                start = sil.start_s if sil.spoke_before else max(sil.start_s, media_start)
                quiet_leg = by_role.get(role)
                quiet_end = _audio_end(quiet_leg, s) if quiet_leg is not None else None
                if quiet_end is not None and start < quiet_end < end - s.one_way_rtp_stop_s:
                    start = quiet_end  # its audio ends there (voice packets stop, or only digital silence follows)
            what = "says nothing" if not sil.spoke_before else f"is silent from {sil.start_s:.1f} s"
            reasons.append(f"the {role} {what} while the {sil.talker} talks {sil.talk_s:.0f} s into it"
                           + (f" and waits for a reply {sil.waits} times" if sil.waits else ""))  # fmt: skip
            end_s = sil.end_s
        else:
            end_s = end
        evidence["speech_s"] = {leg.role: round(leg.speech_s, 2) for leg in legs}
        lost = "one-way audio" if severity == "critical" else "probable one-way audio"
        findings.append(
            Finding(
                code="one_way_audio",
                severity=severity,
                leg=role if role in ("caller", "callee", "agent", "customer", "left", "right") else None,  # type: ignore[arg-type]
                start_s=round(start or 0.0, 3),
                end_s=round(end_s, 3),
                message=f"{lost}: the {role} is not heard from {start or 0.0:.1f} s ({'; '.join(reasons)})",
                evidence=evidence,
            )
        )
    return findings
