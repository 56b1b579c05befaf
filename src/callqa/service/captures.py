"""Captured calls into reports: per-direction network statistics, decoded legs, the common pipeline, the cache.

``analyze_capture`` reads a pcap/pcapng file into captured calls (``callqa.capture``) and reports each one;
``report_captured`` is the same for one call that the live tracker closed. A direction's RTP is measured
(RFC 3550 / Wireshark statistics, E-model MOS behind jitter buffers), decoded onto the call's timeline and
passed to ``pipeline.analyze_legs`` like any recording's leg.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from callqa.audio.resample import resample
from callqa.audio.wav import write_wav
from callqa.capture.calls import CapturedCall, Dialog, Stream, iso
from callqa.capture.media import UnsupportedCodec, check_leg, decode_stream
from callqa.capture.stats import aggregate, call_start, measure_stream, rtcp_summary
from callqa.config import LimitSettings, Settings
from callqa.digest import digest, sha256_file
from callqa.errors import LimitError
from callqa.pipeline import Leg, analyze_legs
from callqa.protocol import dtmf
from callqa.protocol.rtp import RtpPacket
from callqa.report import CallReport, Dtmf, SipEvent, SipInfo
from callqa.service import cache
from callqa.service.recordings import keep_leg_audio
from callqa.store import Store


def decode_leg(call: CapturedCall, streams: list[Stream], max_s: float,
               limits: LimitSettings | None = None) -> tuple[np.ndarray, int, str, list[str]]:  # fmt: skip
    """A direction's audio on the call's timeline (silence before the first packet and in gaps). The packets are
    checked against ``limits`` first (timestamp jumps, timeline span, payload sizes, streams): a forged packet
    cannot make the timeline, and so the memory, unbounded."""
    check_leg([(s.packets, call.encodings.get(s.key) or {}) for s in streams if not s.encrypted], limits, max_s)
    t0 = call_start(call)
    pieces, notes = [], []
    for st in sorted(streams, key=lambda x: x.first.arrival):
        if st.encrypted:
            notes.append(f"stream 0x{st.ssrc:08X}: SRTP without a usable key, measured from headers only")
            continue
        try:
            pieces.append(decode_stream(st.packets, call.encodings.get(st.key) or {}))
        except UnsupportedCodec as exc:
            notes.append(f"stream 0x{st.ssrc:08X} ({st.src[0]}:{st.src[1]}): {exc}")
    if not pieces:
        raise UnsupportedCodec("; ".join(notes) or "nothing to decode")
    rate = pieces[0].sample_rate
    ends = [int((p.start - t0) * rate) + int(p.samples.size * rate / p.sample_rate) for p in pieces]
    out = np.zeros(min(max(ends), int(max_s * rate)), np.float32)
    for p in pieces:
        x = resample(p.samples, p.sample_rate, rate)
        a = int((p.start - t0) * rate)
        if a < out.size:
            n = min(x.size, out.size - a)
            out[a : a + n] = np.where(x[:n] != 0, x[:n], out[a : a + n])
    return out, rate, "+".join(dict.fromkeys(p.codec for p in pieces)), notes


def report_call(call: CapturedCall, settings: Settings, report_id: str, cache_key: str, source: str,
                stats_only: bool = False, wav_dir: Path | None = None,
                audio_dir: Path | None = None) -> CallReport:  # fmt: skip
    """One captured call through the common pipeline (or network statistics only)."""
    rtp_streams = [
        measure_stream(call, st, role, settings.analysis.jitter_buffer_ms)
        for role, sts in call.streams.items()
        for st in sts
    ]
    for r, st in zip(rtp_streams, [st for sts in call.streams.values() for st in sts], strict=True):
        r.rtcp = rtcp_summary(call, st)
        if st.srtp is not None:
            r.note = f"SRTP {st.srtp.suite}, decrypted" + (
                f" ({st.srtp_failures} packets failed authentication)" if st.srtp_failures else ""
            )
        elif st.encrypted:
            r.note = "SRTP, no usable key: measured from headers only"
    d = call.dialog
    sip = None
    if d:
        ended, reason = d.ended_at, d.end_reason
        if ended is None:  # no BYE: the call ended when its media stopped (or the capture did)
            last = [s.last_arrival for sts in call.streams.values() for s in sts]
            ended = max(last) if last else None
            reason = "no BYE: RTP stopped" if last else "no BYE and no RTP in the capture"
        sip = SipInfo(call_id=d.call_id, from_=d.from_uri, to=d.to_uri, started_at=iso(d.started_at),
                      answered_at=iso(d.answered_at), ended_at=iso(ended), end_reason=reason,
                      matched_by=call.matched_by, messages=ladder(d, call_start(call)))  # fmt: skip
    warnings: list[str] = []
    legs: list[Leg] = []
    if not stats_only:
        for role, sts in call.streams.items():
            try:
                x, rate, codec, notes = decode_leg(call, sts, settings.analysis.max_leg_duration_s, settings.limits)
            except (UnsupportedCodec, LimitError) as exc:  # this direction is measured, not heard; the call goes on
                warnings.append(f"{role} not decoded: {exc}")
                continue
            warnings += notes
            mine = [r for r in rtp_streams if r.leg == role]
            for r in mine:
                r.decoded = True
            leg_role = role if role in ("caller", "callee") else "caller"
            legs.append(Leg(leg_role, f"{source}#{call.id}/{role}", x, rate, codec, None, aggregate(mine)))  # type: ignore[arg-type]
            if wav_dir is not None:
                write_wav(wav_dir / f"{_safe(call.id)}-{_safe(role)}.wav", x, rate)
    if not call.streams:
        warnings.append("no RTP found for this call" + ("" if d and d.answered_at else " (it was not answered)"))
    t0 = call_start(call)
    digits = sorted(
        (Dtmf(leg=role, digit=e.digit, start_s=round(e.start - t0, 3), duration_ms=round(e.duration_ms, 1))
         for role, sts in call.streams.items() for st in sts
         for e in dtmf.events(_event_candidates(st), call.encodings.get(st.key, {}))),
        key=lambda d: d.start_s,
    )  # fmt: skip
    report = analyze_legs(legs, settings, warnings, report_id=report_id, cache_key=cache_key,
                          streams=rtp_streams, sip=sip)  # fmt: skip
    report = report.model_copy(update={"dtmf": digits})
    if audio_dir is not None and legs:  # kept for listening (the web page's players), as uploads are
        keep_leg_audio(report, legs, audio_dir, settings.analysis.redact_audio)
    return report


def ladder(d: Dialog, t0: float) -> list[SipEvent]:
    """The dialog's SIP messages on the call's timeline (time, source, destination, method or status)."""

    def where(e: tuple[str, int] | None) -> str:
        return "" if e is None else f"{e[0]}:{e[1]}"

    return [SipEvent(t_s=round(t - t0, 3), src=where(src), dst=where(dst), label=label)
            for t, src, dst, label in d.ladder]  # fmt: skip


def _event_candidates(stream: Stream) -> Sequence[RtpPacket]:
    """Packets that may carry RFC 4733 events (4-byte payloads, which every table and meter keeps)."""
    return (stream.meter.events if stream.meter else []) + [stream.packets[i] for i in sorted(stream.packets.events)]


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:80]


def report_captured(
    call: CapturedCall,
    settings: Settings,
    store: Store | None,
    source: str,
    source_hash: str,
    stats_only: bool = False,
    wav_dir: Path | None = None,
    use_cache: bool = True,
    audio_dir: Path | None = None,
    site: str | None = None,
) -> CallReport:
    """One captured call through the pipeline, cached by capture hash, call and settings; ``site`` names the
    capture site that analysed it (part of its key: two sites never make the same id)."""
    key = cache.capture_key(source_hash if site is None else f"{source_hash}|site:{site}", call.id, stats_only,
                            settings)  # fmt: skip
    hit = cache.lookup(store, key, settings) if use_cache and wav_dir is None and audio_dir is None else None
    if hit is not None:
        return hit
    report = report_call(call, settings, key[:16], key, source, stats_only, wav_dir, audio_dir)
    if site is not None:
        report = report.model_copy(update={"site": site})
    if store is not None:
        store.put(report)
    return report


def analyze_capture(
    path: Path,
    settings: Settings,
    store: Store | None = None,
    stats_only: bool = False,
    wav_dir: Path | None = None,
    nat_aliases: dict[str, str] | None = None,
    use_cache: bool = True,
    audio_dir: Path | None = None,
) -> tuple[list[CallReport], list[str]]:
    """Every call in a pcap or pcapng file through the common pipeline: (reports, capture warnings)."""  # fmt: skip
    from callqa.capture.calls import read_capture

    source_hash = digest({"capture": sha256_file(path), "aliases": nat_aliases or {}})
    capture = read_capture(path, nat_aliases, keep_audio=not stats_only, srtp_keys=settings.srtp_keys)
    reports = [
        report_captured(call, settings, store, str(path), source_hash, stats_only, wav_dir, use_cache, audio_dir)
        for call in capture.calls
    ]
    return reports, capture.warnings
