"""What the pages show, computed from a CallReport: the verdict in plain words, and each chart's figures."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from markupsafe import Markup

from callqa import explain
from callqa.callindex import leg_mos
from callqa.report import CallReport, Finding, LegReport, RtpStream
from callqa.web.charts import Arrow, Band, Series, clock, ladder, line_chart, waveform

TITLES = {
    "no_audio": "No audio", "no_speech": "Nobody speaks", "one_way_audio": "One-way audio", "dead_air": "Dead air",
    "clipping": "Clipping (distorted, too loud)", "low_level": "Too quiet", "low_mos": "Poor sound quality",
    "mixed_legs": "Both sides mixed in one recording", "packet_loss": "Packet loss", "high_jitter": "High jitter",
    "no_transcript": "Speech without recognisable words", "required_phrase_missing": "Required phrase missing",
    "forbidden_phrase": "Forbidden phrase said",
}  # fmt: skip
VERDICT_WORDS = {
    "good": "Good: every check passed.",
    "degraded": "Degraded: the call went through, but something hurt it.",
    "failed": "Failed: the call could not serve its purpose.",
}
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def when(t: float | datetime | None) -> str:
    if t is None:
        return ""
    d = t if isinstance(t, datetime) else datetime.fromtimestamp(t, UTC)
    d = d if d.tzinfo else d.replace(tzinfo=UTC)
    return d.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class Problem:
    """One finding said plainly: what is wrong, on which side, when, the likely cause and what to check."""

    code: str
    severity: str
    title: str
    side: str
    when: str
    message: str
    cause: str
    check: str


def problems(report: CallReport) -> list[Problem]:
    out = []
    for f in sorted(report.findings, key=lambda f: (SEVERITY_ORDER.get(f.severity, 3), f.start_s or 0.0)):
        cause = explain.CAUSES.get(f.code, ("", ""))[0]
        check = explain.check(f, report)  # the same advice as the CLI and the offline assistant
        span = ""
        if f.start_s is not None:
            span = clock(f.start_s) + (f"-{clock(f.end_s)}" if f.end_s is not None else "")
        out.append(Problem(f.code, f.severity, TITLES.get(f.code, f.code.replace("_", " ").capitalize()),
                           _side(report, f), span, f.message, cause, check))  # fmt: skip
    return out


def _side(report: CallReport, f: Finding) -> str:
    if f.leg:
        return f"{f.leg} side"
    return "both sides" if len(report.legs) > 1 else ""


@dataclass(frozen=True)
class LegView:
    index: int
    leg: LegReport
    mos: float | None
    audio_url: str
    wave: Markup
    mos_chart: Markup
    loudness_chart: Markup
    stream: RtpStream | None


def bands(report: CallReport, leg: LegReport) -> list[Band]:
    out = [Band(s.start_s, s.end_s, "speech", f"speech {clock(s.start_s)}-{clock(s.end_s)}")
           for s in leg.speech_segments]  # fmt: skip
    out += [Band(s.start_s, s.end_s, "silence", f"silence {clock(s.start_s)}-{clock(s.end_s)} "
                 f"({s.end_s - s.start_s:.1f} s)") for s in leg.silences]  # fmt: skip
    for f in report.findings:
        if f.start_s is not None and (f.leg is None or f.leg == leg.role):
            end = f.end_s if f.end_s is not None else f.start_s
            out.append(Band(f.start_s, end, f.severity, f"{TITLES.get(f.code, f.code)}: {f.message}"))
    return out


def mos_chart(leg: LegReport, low: float) -> Markup:
    """The call MOS, DNSMOS and NISQA over the leg: each window a bar at its score (DNSMOS windows are 9.01 s)."""
    series = []
    if leg.mos.call and leg.mos.call.windows:
        spans = [(w.start_s, w.end_s, w.mos) for w in leg.mos.call.windows]
        series.append(Series("call MOS", spans=spans, css="s2"))
    if leg.mos.dnsmos and leg.mos.dnsmos.windows:
        spans = [(w.start_s, w.start_s + 9.01, w.ovrl) for w in leg.mos.dnsmos.windows]
        series.append(Series("DNSMOS OVRL", spans=spans, css="s0"))
    if leg.mos.nisqa and leg.mos.nisqa.windows:
        series.append(Series("NISQA MOS", spans=[(w.start_s, w.end_s, w.mos) for w in leg.mos.nisqa.windows], css="s1"))
    elif leg.mos.nisqa:
        series.append(Series("NISQA MOS", spans=[(0.0, leg.duration_s, leg.mos.nisqa.mos)], css="s1"))
    if not series:
        return Markup("")
    return line_chart(series, 0.0, leg.duration_s, 1.0, 5.0, f"MOS over time, {leg.role}", height=120.0, ref=low)


def loudness_chart(report: CallReport, leg: LegReport) -> Markup:
    if report.conversation is None:
        return Markup("")
    side = next((s for s in report.conversation.sides if s.leg == leg.role), None)
    if side is None or not side.loudness:
        return Markup("")
    pts = [(p.start_s, p.dbfs) for p in side.loudness]
    return line_chart([Series("speech level dBFS", points=pts, css="s2")], 0.0, leg.duration_s, -60.0, 0.0,
                      f"speech level over time, {leg.role} (dBFS)", height=110.0)  # fmt: skip


def leg_views(report: CallReport, envelopes: dict[int, tuple[list[float], float]], low_mos: float) -> list[LegView]:
    """One view per leg; ``envelopes`` holds the peak envelope (and its duration) of each leg whose audio is kept."""
    out = []
    for i, leg in enumerate(report.legs):
        env, dur = envelopes.get(i, ([], leg.duration_s))
        stream = next((s for s in report.streams if s.leg == leg.role), None) if report.source == "capture" else None
        out.append(LegView(
            index=i, leg=leg, mos=leg_mos(leg.model_dump()), audio_url=f"/calls/{report.id}/audio/{i}",
            wave=waveform(env, dur or leg.duration_s, bands(report, leg), f"waveform, {leg.role}"),
            mos_chart=mos_chart(leg, low_mos), loudness_chart=loudness_chart(report, leg), stream=stream,
        ))  # fmt: skip
    return out


def network_charts(report: CallReport) -> tuple[Markup, Markup]:
    """Per-direction packet loss (%) and jitter (ms) over the call, from each stream's intervals."""
    loss, jitter = [], []
    end = report.duration_s
    for k, s in enumerate(report.streams):
        if not s.intervals:
            continue
        name = f"{s.leg} ({s.src} → {s.dst})"
        css = f"s{k % 4}"
        loss.append(Series(name, points=[(i.start_s, 100.0 * max(i.lost, 0) / i.expected if i.expected > 0 else 0.0)
                                         for i in s.intervals], css=css))  # fmt: skip
        jitter.append(Series(name, points=[(i.start_s, i.max_jitter_ms) for i in s.intervals], css=css))
        end = max(end, s.end_s)
    if not loss:
        return Markup(""), Markup("")
    top_loss = max([5.0] + [y for s in loss for _, y in s.points])
    top_jit = max([40.0] + [y for s in jitter for _, y in s.points])
    return (line_chart(loss, 0.0, end, 0.0, top_loss, "packet loss per direction, % per interval"),
            line_chart(jitter, 0.0, end, 0.0, top_jit, "jitter per direction (RFC 3550), ms"))  # fmt: skip


def sip_ladder(report: CallReport) -> Markup:
    if report.sip is None or not report.sip.messages:
        return Markup("")
    endpoints = list(dict.fromkeys(e for m in report.sip.messages for e in (m.src, m.dst) if e))
    return ladder([Arrow(m.t_s, m.src, m.dst, m.label) for m in report.sip.messages], endpoints)
