"""RTCP (RFC 3550 section 6, RFC 3611 XR): compound packets, sender and receiver reports with their report
blocks, and the VoIP metrics block of XR. Other packet types are skipped by length."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from callqa.errors import ParseError

SR, RR, SDES, BYE, APP, RTPFB, PSFB, XR = 200, 201, 202, 203, 204, 205, 206, 207
XR_VOIP_METRICS = 7


@dataclass(frozen=True, slots=True)
class ReportBlock:
    ssrc: int  # the source this block reports on
    fraction_lost: float  # 0..1 since the previous report
    cumulative_lost: int  # signed 24-bit
    highest_seq: int
    jitter: int  # interarrival jitter in RTP timestamp units
    lsr: int  # middle 32 bits of the last SR's NTP time
    dlsr: int  # delay since that SR, 1/65536 s


@dataclass(frozen=True, slots=True)
class VoipMetrics:
    """RFC 3611 4.7: the reporter's view of the stream it receives."""

    ssrc: int
    loss_rate: float
    discard_rate: float
    round_trip_ms: int
    end_system_delay_ms: int
    r_factor: int  # 127 = unavailable
    mos_lq: float | None
    mos_cq: float | None


@dataclass(frozen=True, slots=True)
class RtcpPacket:
    packet_type: int
    sender_ssrc: int
    ntp: int = 0  # SR: 64-bit NTP timestamp
    rtp_timestamp: int = 0
    blocks: tuple[ReportBlock, ...] = ()
    voip_metrics: tuple[VoipMetrics, ...] = ()


def looks_like_rtcp(data: bytes) -> bool:
    return len(data) >= 8 and data[0] >> 6 == 2 and data[1] in (SR, RR)


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Every packet of a compound RTCP datagram. A malformed packet raises ParseError."""
    out, pos = [], 0
    while pos < len(data):
        if len(data) - pos < 4:
            raise ParseError("RTCP packet is truncated (header)")
        b0, pt, words = struct.unpack_from(">BBH", data, pos)
        if b0 >> 6 != 2:
            raise ParseError(f"RTCP version {b0 >> 6} is not 2")
        end = pos + 4 * (words + 1)
        if end > len(data):
            raise ParseError("RTCP packet is truncated (length field exceeds datagram)")
        body = data[pos + 4 : end]
        count = b0 & 0x1F
        if pt in (SR, RR):
            out.append(_report(pt, count, body))
        elif pt == XR:
            out.append(_xr(body))
        pos = end
    return out


def _report(pt: int, count: int, body: bytes) -> RtcpPacket:
    head = 24 if pt == SR else 4
    if len(body) < head + 24 * count:
        raise ParseError(f"RTCP {'SR' if pt == SR else 'RR'} is truncated ({count} report blocks announced)")
    ssrc = struct.unpack_from(">I", body)[0]
    ntp = rtp_ts = 0
    if pt == SR:
        ntp_hi, ntp_lo, rtp_ts = struct.unpack_from(">III", body, 4)
        ntp = (ntp_hi << 32) | ntp_lo
    blocks = []
    for i in range(count):
        b = head + 24 * i
        src, lost_word, seq, jitter, lsr, dlsr = struct.unpack_from(">IIIIII", body, b)
        cumulative = lost_word & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 1 << 24
        blocks.append(ReportBlock(src, (lost_word >> 24) / 256.0, cumulative, seq, jitter, lsr, dlsr))
    return RtcpPacket(pt, ssrc, ntp, rtp_ts, tuple(blocks))


def _xr(body: bytes) -> RtcpPacket:
    if len(body) < 4:
        raise ParseError("RTCP XR is truncated")
    ssrc = struct.unpack_from(">I", body)[0]
    pos, metrics = 4, []
    while pos + 4 <= len(body):
        bt, _, words = struct.unpack_from(">BBH", body, pos)
        end = pos + 4 + 4 * words
        if end > len(body):
            raise ParseError("RTCP XR block is truncated")
        if bt == XR_VOIP_METRICS and words >= 8:
            b = body[pos + 4 : end]
            src = struct.unpack_from(">I", b)[0]
            rtt, esd = struct.unpack_from(">HH", b, 12)
            r, mos_lq, mos_cq = b[20], b[22], b[23]
            metrics.append(VoipMetrics(src, b[4] / 256.0, b[5] / 256.0, rtt, esd, r,
                                       mos_lq / 10 if mos_lq != 127 else None,
                                       mos_cq / 10 if mos_cq != 127 else None))  # fmt: skip
        pos = end
    return RtcpPacket(XR, ssrc, voip_metrics=tuple(metrics))


def round_trip_ms(arrival_ntp_middle: int, block: ReportBlock) -> float | None:
    """RFC 3550 6.4.1: RTT = A - LSR - DLSR, in the middle-32-bit NTP units (1/65536 s)."""
    if not block.lsr:
        return None
    rtt = (arrival_ntp_middle - block.lsr - block.dlsr) & 0xFFFFFFFF
    return rtt * 1000.0 / 65536.0 if rtt < 0x80000000 else None
