"""Captured calls into CallReports: per-direction network statistics, decoded legs, the common pipeline."""

from __future__ import annotations

import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from callqa.audio.resample import resample
from callqa.capture import dtmf, emodel, rtcp
from callqa.capture.calls import CapturedCall, Stream, iso
from callqa.capture.media import RtpPacket, UnsupportedCodec, check_leg, decode_stream
from callqa.capture.meter import FIXED_DEPTHS_MS
from callqa.capture.rtp import encoding_of
from callqa.config import LimitSettings, Settings
from callqa.pipeline import Leg, analyze_legs
from callqa.report import CallReport, Dtmf, RtcpSummary, RtpStats, RtpStream, SipInfo


def measure_stream(call: CapturedCall, stream: Stream, role: str, s: Settings) -> RtpStream:
    enc = call.encodings.get(stream.key, {})
    depth = s.analysis.jitter_buffer_ms
    m = stream.measured(enc, call.capture_start, depth)
    stats, t0 = m.stats, call_start(call)
    names = [encoding_of(pt, enc)[0] or f"PT{pt}" for pt in m.types]
    voice = m.types[m.dominant]
    codec, clock = encoding_of(m.dominant, enc)
    ptime = voice.ptime_ms()

    def mos_behind(lost_late: int, depth: float) -> float:
        return emodel.network_mos(codec, stats.expected, stats.lost, lost_late, ptime, depth)

    late = voice.buffers[depth].late
    mos = mos_behind(late, depth) if clock else None
    buffers: dict[str, float] = {}
    if clock:
        buffers = {f"fixed_{d:.0f}ms": mos_behind(voice.buffers[d].late, d) for d in FIXED_DEPTHS_MS}
        buffers["adaptive_500ms"] = mos_behind(voice.adaptive.late, voice.adaptive.mean_depth_ms)
    return RtpStream(
        leg=role, codec=codec, ssrc=f"0x{stream.ssrc:08X}", src=f"{stream.src[0]}:{stream.src[1]}",
        dst=f"{stream.dst[0]}:{stream.dst[1]}", payload=", ".join(names), packets=stats.total,
        expected=stats.expected, lost=stats.lost, duplicates=stats.duplicates, out_of_order=stats.out_of_order,
        max_delta_ms=round(stats.max_delta, 3), max_jitter_ms=round(stats.max_jitter, 3),
        mean_jitter_ms=round(stats.mean_jitter, 3), network_mos=mos, jitter_buffer_discards=late,
        network_mos_jitter_buffers=buffers, loss_bursts=m.bursts, max_loss_burst=m.longest_burst,
        start_s=round(stream.first.arrival - t0, 6), end_s=round(stream.last_arrival - t0, 6),
    )  # fmt: skip


NTP_EPOCH_OFFSET = 2208988800


def rtcp_summary(call: CapturedCall, stream: Stream) -> RtcpSummary | None:
    """Report blocks (and XR VoIP metrics) that describe this stream, from whoever received it."""
    clock = encoding_of(stream.first.pt, call.encodings.get(stream.key, {}))[1]
    blocks, rtts, xr = [], [], []
    for d in call.rtcp:
        ntp = d.arrival + NTP_EPOCH_OFFSET
        middle = (int(ntp) & 0xFFFF) << 16 | int((ntp % 1) * 65536)
        for p in d.packets:
            for b in p.blocks:
                if b.ssrc == stream.ssrc:
                    blocks.append(b)
                    if (rtt := rtcp.round_trip_ms(middle, b)) is not None:
                        rtts.append(rtt)
            xr += [m for m in p.voip_metrics if m.ssrc == stream.ssrc]
    if not blocks and not xr:
        return None
    return RtcpSummary(
        reports=len(blocks) + len(xr),
        fraction_lost_max=max((b.fraction_lost for b in blocks), default=0.0),
        cumulative_lost=blocks[-1].cumulative_lost if blocks else 0,
        jitter_max_ms=round(max(b.jitter for b in blocks) * 1000.0 / clock, 3) if blocks and clock else None,
        round_trip_ms=round(min(rtts), 3) if rtts else None,
        xr_mos_lq=xr[-1].mos_lq if xr else None,
        xr_r_factor=xr[-1].r_factor if xr and xr[-1].r_factor != 127 else None,
    )


def call_start(call: CapturedCall) -> float:
    firsts = [s.first.arrival for streams in call.streams.values() for s in streams]
    if call.dialog:
        return min([call.dialog.started_at, *firsts])
    return min(firsts, default=call.capture_start)


def aggregate(streams: list[RtpStream]) -> RtpStats:
    """One direction's statistics when it used several streams (SSRC change, re-INVITE)."""
    if len(streams) == 1:
        return RtpStats(**streams[0].model_dump(include=set(RtpStats.model_fields)))
    total = sum(s.packets for s in streams)
    moss = [s.network_mos for s in streams if s.network_mos is not None]
    return RtpStats(
        ssrc=", ".join(s.ssrc for s in streams), src=streams[0].src, dst=streams[0].dst,
        payload=", ".join(dict.fromkeys(n for s in streams for n in s.payload.split(", "))),
        packets=total, expected=sum(s.expected for s in streams), lost=sum(s.lost for s in streams),
        duplicates=sum(s.duplicates for s in streams), out_of_order=sum(s.out_of_order for s in streams),
        max_delta_ms=max(s.max_delta_ms for s in streams), max_jitter_ms=max(s.max_jitter_ms for s in streams),
        mean_jitter_ms=round(sum(s.mean_jitter_ms * s.packets for s in streams) / max(total, 1), 3),
        network_mos=min(moss) if moss else None,
        loss_bursts=sum(s.loss_bursts for s in streams), max_loss_burst=max(s.max_loss_burst for s in streams),
        jitter_buffer_discards=sum(s.jitter_buffer_discards for s in streams),
        start_s=min(s.start_s for s in streams), end_s=max(s.end_s for s in streams),
    )  # fmt: skip


def decode_leg(call: CapturedCall, streams: list[Stream], max_s: float,
               limits: LimitSettings | None = None) -> tuple[np.ndarray, int, str, list[str]]:  # fmt: skip
    """A direction's audio on the call's timeline (silence before the first packet and in gaps)."""
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


def write_wav(path: Path, x: np.ndarray, rate: int) -> None:
    pcm = np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def report_call(call: CapturedCall, settings: Settings, report_id: str, cache_key: str, source: str,
                stats_only: bool = False, wav_dir: Path | None = None) -> CallReport:  # fmt: skip
    """One captured call through the common pipeline (or network statistics only)."""
    rtp_streams = [measure_stream(call, st, role, settings) for role, sts in call.streams.items() for st in sts]
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
                      matched_by=call.matched_by)  # fmt: skip
    warnings: list[str] = []
    legs: list[Leg] = []
    if not stats_only:
        for role, sts in call.streams.items():
            try:
                x, rate, codec, notes = decode_leg(call, sts, settings.analysis.max_leg_duration_s, settings.limits)
            except UnsupportedCodec as exc:
                warnings.append(f"{role} not decoded: {exc}")
                continue
            warnings += notes
            mine = [r for r in rtp_streams if r.leg == role]
            for r in mine:
                r.decoded = True
            leg_role = role if role in ("caller", "callee") else "caller"
            legs.append(Leg(leg_role, f"{source}#{call.id}/{role}", x, rate, codec, None, aggregate(mine)))  # type: ignore[arg-type]
            if wav_dir is not None:
                wav_dir.mkdir(parents=True, exist_ok=True)
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
    return report.model_copy(update={"dtmf": digits})


def _event_candidates(stream: Stream) -> Sequence[RtpPacket]:
    """Packets that may carry RFC 4733 events (4-byte payloads, which every table and meter keeps)."""
    return (stream.meter.events if stream.meter else []) + [stream.packets[i] for i in sorted(stream.packets.events)]


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:80]
