"""A captured call's RTP directions as report statistics, in one place: per stream the Wireshark/RFC 3550
figures (``meter``), the E-model MOS behind the simulated jitter buffers (``emodel``), loss bursts, the RTCP
reports about it; per direction the streams combined. ``StreamStats`` and the meters are the running state of
the calculation; ``report.RtpStats``/``RtpStream`` are its only results."""

from __future__ import annotations

from callqa.capture import emodel
from callqa.capture.calls import CapturedCall, Stream
from callqa.capture.meter import FIXED_DEPTHS_MS
from callqa.protocol import rtcp
from callqa.protocol.rtp import encoding_of
from callqa.report import RtcpSummary, RtpInterval, RtpStats, RtpStream


def measure_stream(call: CapturedCall, stream: Stream, role: str, depth: float) -> RtpStream:
    """One RTP stream's report statistics; ``depth`` is the fixed jitter buffer (ms) behind ``network_mos``."""
    enc = call.encodings.get(stream.key, {})
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
        intervals=[RtpInterval(start_s=round(i.start - t0, 3), packets=i.packets, expected=i.expected, lost=i.lost,
                               max_jitter_ms=i.max_jitter_ms) for i in m.timeline.intervals()],
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
