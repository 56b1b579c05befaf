"""Fault detectors: pure functions of the per-leg results and the settings, each returning findings.

Severity: ``critical`` means the call failed for a listener (no audio, one side never heard), ``warning`` means
it was degraded, ``info`` is context. The call's verdict is the worst severity among its findings.
"""

from __future__ import annotations

from callqa.audio.silences import merge_gaps
from callqa.config import AnalysisSettings
from callqa.quality import oneway
from callqa.report import Finding, LegReport, RtpStream, Severity, SipInfo, Verdict


def _segments(leg: LegReport) -> list[tuple[float, float]]:
    return [(s.start_s, s.end_s) for s in leg.speech_segments]


def _is_mute(leg: LegReport, s: AnalysisSettings) -> bool:
    return leg.duration_s == 0 or leg.levels.peak_dbfs < s.digital_silence_dbfs


def no_audio(legs: list[LegReport], s: AnalysisSettings) -> list[Finding]:
    """A leg with no samples or only digital silence; critical when no leg carries audio."""
    mute = [leg for leg in legs if _is_mute(leg, s)]
    severity: Severity = "critical" if len(mute) == len(legs) else "warning"
    return [
        Finding(
            code="no_audio",
            severity=severity,
            leg=leg.role,
            message=f"{leg.role} leg carries no audio (peak {leg.levels.peak_dbfs:.1f} dBFS, {leg.duration_s:.1f} s)",
            evidence={"peak_dbfs": leg.levels.peak_dbfs, "duration_s": leg.duration_s},
        )
        for leg in mute
    ]


def no_speech(legs: list[LegReport], s: AnalysisSettings) -> list[Finding]:
    """Audio is present but no leg has any speech (music on hold, tones, noise only)."""
    audible = [leg for leg in legs if not _is_mute(leg, s)]
    if not audible or any(leg.speech_s >= s.one_way_min_speech_s for leg in legs):
        return []
    return [
        Finding(
            code="no_speech",
            severity="critical",
            message="no speech on any leg although audio is present",
            evidence={leg.role: round(leg.speech_s, 2) for leg in legs},
        )
    ]


def faint_quiet_side(legs: list[LegReport], s: AnalysisSettings) -> list[Finding]:
    """The 70/30 rule with a second marker: the quieter leg holds less than ``one_way_share`` of all speech and
    its speech is very low in level (heard faintly, if at all). A talkative agent alone is not a fault."""
    if len(legs) != 2 or any(leg.role == "mixed" for leg in legs):
        return []
    quiet, loud = sorted(legs, key=lambda leg: leg.speech_s)
    total = quiet.speech_s + loud.speech_s
    if loud.speech_s < 3 * s.one_way_min_speech_s or quiet.speech_s < s.one_way_min_speech_s:
        return []  # a side that says nothing is one_way_audio's case
    share = quiet.speech_s / total
    low = quiet.levels.active_dbfs is not None and quiet.levels.active_dbfs < s.low_level_dbfs
    if share >= s.one_way_share or not low:
        return []
    return [
        Finding(
            code="one_way_audio",
            severity="warning",
            leg=quiet.role,
            start_s=0.0,
            end_s=max(leg.duration_s for leg in legs),
            message=f"probable one-way audio: {quiet.role} holds {share:.0%} of the speech, "
            f"at a very low level ({quiet.levels.active_dbfs:.1f} dBFS)",
            evidence={
                "used": ["audio"],
                "speech_s": {loud.role: round(loud.speech_s, 2), quiet.role: round(quiet.speech_s, 2)},
                "quiet_share": round(share, 3),
                "quiet_active_dbfs": quiet.levels.active_dbfs,
            },
        )
    ]


def dead_air(legs: list[LegReport], s: AnalysisSettings) -> list[Finding]:
    """Stretches where no leg has speech for at least ``dead_air_min_s``."""
    if not legs or all(_is_mute(leg, s) for leg in legs) or all(leg.speech_s == 0 for leg in legs):
        return []  # covered by no_audio / no_speech
    speech = sorted(seg for leg in legs for seg in _segments(leg))
    duration = max(leg.duration_s for leg in legs)
    return [
        Finding(
            code="dead_air",
            severity="warning",
            start_s=round(a, 3),
            end_s=round(b, 3),
            message=f"dead air: no one speaks for {b - a:.1f} s ({a:.1f}-{b:.1f} s)",
            evidence={"duration_s": round(b - a, 2)},
        )
        for a, b in merge_gaps(speech, duration, s.dead_air_min_s)
    ]


def clipping(legs: list[LegReport], s: AnalysisSettings) -> list[Finding]:
    return [
        Finding(
            code="clipping",
            severity="warning",
            leg=leg.role,
            message=f"{leg.role} leg clips: {leg.levels.clipping_ratio:.2%} of samples at full scale",
            evidence={"clipping_ratio": leg.levels.clipping_ratio, "peak_dbfs": leg.levels.peak_dbfs},
        )
        for leg in legs
        if leg.levels.clipping_ratio > s.clipping_ratio_max
    ]


def low_level(legs: list[LegReport], s: AnalysisSettings) -> list[Finding]:
    return [
        Finding(
            code="low_level",
            severity="warning",
            leg=leg.role,
            message=f"{leg.role} speech is very quiet ({leg.levels.active_dbfs:.1f} dBFS active level)",
            evidence={"active_dbfs": leg.levels.active_dbfs, "threshold_dbfs": s.low_level_dbfs},
        )
        for leg in legs
        if leg.levels.active_dbfs is not None and leg.levels.active_dbfs < s.low_level_dbfs
    ]


def low_mos(legs: list[LegReport], s: AnalysisSettings) -> list[Finding]:
    """Poor quality as a listener on the phone hears it: the calibrated call MOS (P.862 scale, see docs/mos.md)
    below ``low_mos`` on a leg with speech, with what explains it (network, endpoint or both)."""
    findings = []
    for leg in legs:
        call = leg.mos.call
        if leg.speech_s < s.one_way_min_speech_s or call is None or call.value >= s.low_mos:
            continue
        ev = call.cause_evidence
        reasons = [*ev.get("network_reasons", []), *ev.get("endpoint_reasons", [])]
        why = f"; {call.cause}: {', '.join(reasons)}" if call.cause and reasons else ""
        findings.append(
            Finding(
                code="low_mos",
                severity="warning",
                leg=leg.role,
                message=f"{leg.role} leg sounds poor (call MOS {call.value:.2f} < {s.low_mos}{why})",
                evidence={"model": call.model, "mos": call.value, "cause": call.cause,
                          **{k: v for k, v in ev.items() if k != "call_mos"}},
            )
        )  # fmt: skip
    return findings


def mixed_legs(legs: list[LegReport], s: AnalysisSettings) -> list[Finding]:
    if not any(leg.role == "mixed" for leg in legs):
        return []
    return [
        Finding(
            code="mixed_legs",
            severity="info",
            leg="mixed",
            message="both directions are mixed in one channel: one-way audio cannot be detected and "
            "levels and MOS describe the mix; record the legs separately",
        )
    ]


def packet_loss(streams: list[RtpStream], s: AnalysisSettings) -> list[Finding]:
    """Loss per direction (expected - received over expected); a sequence restart is not counted as loss."""
    findings = []
    for st in streams:
        if st.expected <= 0 or st.lost <= 0:
            continue
        ratio = st.lost / st.expected
        if ratio >= s.loss_warning:
            findings.append(
                Finding(
                    code="packet_loss",
                    severity="critical" if ratio >= s.loss_critical else "warning",
                    leg=st.leg if st.leg in ROLES else None,
                    start_s=st.start_s,
                    end_s=st.end_s,
                    message=f"{st.leg} RTP lost {st.lost} of {st.expected} packets ({ratio:.1%}) {st.src} -> {st.dst}",
                    evidence={"lost": st.lost, "expected": st.expected, "ssrc": st.ssrc,
                              "network_mos": st.network_mos},
                )
            )  # fmt: skip
    return findings


def jitter(streams: list[RtpStream], s: AnalysisSettings) -> list[Finding]:
    return [
        Finding(
            code="high_jitter",
            severity="warning",
            leg=st.leg if st.leg in ROLES else None,
            start_s=st.start_s,
            end_s=st.end_s,
            message=f"{st.leg} RTP jitter up to {st.max_jitter_ms:.1f} ms (mean {st.mean_jitter_ms:.1f} ms)",
            evidence={"max_jitter_ms": st.max_jitter_ms, "mean_jitter_ms": st.mean_jitter_ms, "ssrc": st.ssrc},
        )
        for st in streams
        if st.max_jitter_ms >= s.jitter_warning_ms
    ]


DETECTORS = (no_audio, no_speech, dead_air, clipping, low_level, low_mos, mixed_legs)
ROLES = ("caller", "callee")


def run_detectors(
    legs: list[LegReport], s: AnalysisSettings, streams: list[RtpStream] | None = None, sip: SipInfo | None = None
) -> list[Finding]:
    findings = oneway.no_media(streams or [], sip) + oneway.one_way_audio(legs, s, streams, sip)
    if not any(f.code == "one_way_audio" for f in findings):
        findings += faint_quiet_side(legs, s)
    findings += packet_loss(streams or [], s) + jitter(streams or [], s)
    return findings + [f for detect in DETECTORS for f in detect(legs, s)]


def verdict(findings: list[Finding]) -> tuple[Verdict, list[str]]:
    """``failed`` on any critical finding, ``degraded`` on any warning, else ``good``; with the reasons."""
    critical = [f.message for f in findings if f.severity == "critical"]
    warnings = [f.message for f in findings if f.severity == "warning"]
    if critical:
        return "failed", critical + warnings
    if warnings:
        return "degraded", warnings
    return "good", []
