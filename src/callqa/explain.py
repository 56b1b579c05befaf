"""Plain words for a report: one sentence per finding (what, which side, when) and what to check.

Every surface that shows findings to a person (the CLI's text report, the offline assistant, the web page)
takes its wording from here, so the advice for a fault is written once.
"""

from __future__ import annotations

from callqa.report import CallReport, Finding

# finding code -> (likely cause, what to check first)
CAUSES: dict[str, tuple[str, str]] = {
    "no_audio": ("no media reached the recorder from this side (RTP blocked, muted device or a failed codec "
                 "negotiation)", "RTP in both directions, the SDP connection address, the device's mute state"),
    "no_media": ("the call was answered but no RTP flowed at all: a firewall or NAT dropped both directions, "
                 "the SDP named unreachable addresses, or the capture point does not see the media path",
                 "the SDP c= and m= lines of both sides, firewall rules for the RTP port range, where the capture "
                 "was taken"),
    "no_speech": ("this side never spoke (muted, silent handset or an unattended line)",
                  "the handset or softphone input, mute, and whether the line was answered by a person"),
    "one_way_audio": ("media flows in one direction only: typically NAT or a firewall drops RTP, the SDP names a "
                      "private address, or a SIP ALG rewrote it", "RTP in both directions (capture at the edge), "
                      "the SDP c= address against the public address, firewall/ALG settings"),
    "dead_air": ("a long stretch with nobody speaking: hold without music, a transfer gap, or audio lost on both "
                 "sides", "the call flow at that time (hold, transfer, IVR) and both legs' RTP around it"),
    "clipping": ("the input gain on this side is too high", "headset or microphone gain and AGC settings"),
    "low_level": ("speech is too quiet: microphone placement, low gain or attenuation on a trunk",
                  "the headset, the input gain and the trunk's level settings"),
    "low_mos": ("perceived quality is poor: noise, codec artefacts or network impairment",
                "background noise and the headset on this side, the codec, and packet loss on its path"),
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

_ENDPOINT_CHECK = "the headset or phone on this side, background noise, input gain, and the codecs on the way"
_NISQA_CHECK = ("the NISQA dimensions (noisiness: background noise; discontinuity: loss or jitter; coloration: "
                "codec or headset)")  # fmt: skip


def _when(f: Finding) -> str:
    if f.start_s is None:
        return ""
    if f.end_s is None or f.end_s <= f.start_s:
        return f" from {f.start_s:.0f} s"
    return f" from {f.start_s:.0f} s to {f.end_s:.0f} s"


def _side(f: Finding) -> str:
    return {"left": "left channel", "right": "right channel", "mixed": "mix"}.get(f.leg or "", f.leg or "")


def what(f: Finding) -> str:
    """What is wrong, in one plain sentence (no model names, no thresholds)."""
    side, when, ev = _side(f), _when(f), f.evidence
    match f.code:
        case "one_way_audio":
            return f"The {side} could not be heard{when}." if side else f"Audio went one way only{when}."
        case "no_audio":
            return f"No audio at all came from the {side}." if side else "No audio at all on the call."
        case "no_media":
            return "The call was answered but no audio packets were seen in either direction."
        case "no_speech":
            return "Nobody spoke on this call, although there is sound (music, tones or noise)."
        case "dead_air":
            return f"Nobody spoke for {ev.get('duration_s', 0):.0f} seconds{when}."
        case "clipping":
            return f"The {side}'s audio is distorted: it is too loud and clips."
        case "low_level":
            return f"The {side} is very quiet."
        case "low_mos":
            mos = ev.get("mos")
            score = f" (quality score {mos:.1f} of 4.5)" if isinstance(mos, int | float) else ""
            because = {"network": ", because the network lost or delayed its audio packets",
                       "endpoint": ", because of the sound at that end (the network delivered it intact)",
                       "both": ", because of both the network (lost or late packets) and the sound at that end",
                       }.get(str(ev.get("cause")), "")  # fmt: skip
            return f"The {side} sounds poor{score}{because}." if side else f"The call sounds poor{score}{because}."
        case "mixed_legs":
            return "Both sides are mixed in one channel, so a side that was not heard cannot be detected."
        case "packet_loss":
            lost, expected = ev.get("lost", 0), ev.get("expected", 0)
            share = f" ({lost / expected:.1%})" if expected else ""
            return f"The network lost {lost} of {expected} audio packets from the {side or 'sender'}{share}."
        case "high_jitter":
            return (
                f"Audio packets from the {side or 'sender'} arrived unevenly (jitter up to "
                f"{ev.get('max_jitter_ms', 0):.0f} ms)."
            )
        case _:
            return f.message[:1].upper() + f.message[1:] + ("" if f.message.endswith(".") else ".")


def check(f: Finding, report: CallReport | None = None) -> str:
    """What to check first for this finding."""
    advice = CAUSES.get(f.code, ("", "the evidence in the report"))[1]
    if f.code == "low_mos":
        cause = f.evidence.get("cause")
        reasons = [*f.evidence.get("network_reasons", []), *f.evidence.get("endpoint_reasons", [])]
        if cause == "network":
            advice = CAUSES["packet_loss"][1] + ", and the jitter buffer of the receiving side"
        elif cause in ("endpoint", "both"):
            advice = _ENDPOINT_CHECK + (" (" + ", ".join(reasons) + ")" if reasons else "")
            if cause == "both":
                advice += "; and the network path: " + CAUSES["packet_loss"][1]
        if report is not None and any(leg.mos.nisqa for leg in report.legs):
            advice += "; " + _NISQA_CHECK
    return advice


def sentence(f: Finding, report: CallReport | None = None) -> str:
    """What, which side and when, then what to check: the line a person reads."""
    return f"{what(f)} Check: {check(f, report)}."


def warnings_to_show(report: CallReport) -> list[str]:
    """The report's warnings less those a finding already explains (a mixed recording is said once)."""
    codes = {f.code for f in report.findings}
    return [w for w in report.warnings if not ("mixed_legs" in codes and w.startswith("mixed recording"))]
