"""Turn an RTP stream into audio: decode each packet's payload and place it on the stream's timeline by its
RTP timestamp, so lost packets become silence of the right length and the two directions stay aligned.

G.711 is decoded here; G.722, GSM, G.729, G.723.1 and Opus go through FFmpeg's decoders (PyAV) when the
build has them. ``UnsupportedCodec`` names what could not be decoded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from callqa.audio import g711
from callqa.config import LimitSettings
from callqa.errors import CallqaError, LimitError
from callqa.protocol.rtp import RtpPacket, encoding_of, unwrap

# encoding name (upper case) -> (FFmpeg decoder, output sample rate)
FFMPEG_CODECS = {"G722": ("g722", 16000), "GSM": ("gsm", 8000), "G729": ("g729", 8000),
                 "G723": ("g723_1", 8000), "OPUS": ("libopus", 48000)}  # fmt: skip
SKIP = {"TELEPHONE-EVENT", "CN", "COMFORT-NOISE", "RED"}


class UnsupportedCodec(CallqaError):
    """No decoder for this stream's payload."""


@dataclass(frozen=True)
class StreamAudio:
    samples: np.ndarray  # float32 mono
    sample_rate: int
    codec: str
    start: float  # arrival time of the first packet, seconds


def decode_stream(packets: Iterable[RtpPacket], encodings: dict[int, tuple[str, int]],
                  limits: LimitSettings | None = None, max_span_s: float = float("inf")) -> StreamAudio:  # fmt: skip
    """Decode the voice packets of one stream (events and comfort noise are skipped) onto its timeline.
    ``encodings`` maps payload types from the SDP; static types fall back to RFC 3551. With ``limits``, the
    timeline is checked (and ``max_span_s``) before it is allocated, see :func:`plan_stream`; without, the caller
    has checked it (:func:`check_leg`)."""
    v = _voice(packets, encodings)
    if limits is not None:
        _check(v, limits, max_span_s)
    name, clock, voice, ext = v.name, v.clock, v.packets, v.ext
    order = sorted(range(len(voice)), key=lambda i: (ext[i], voice[i].seq))
    if name in ("PCMU", "PCMA"):
        table = g711.ULAW if name == "PCMU" else g711.ALAW
        frames = [(ext[i], g711.decode(voice[i].payload, table)) for i in order]
        rate = 8000
    else:
        decoder, rate = FFMPEG_CODECS[name]
        frames = _ffmpeg_decode(decoder, rate, [(ext[i], voice[i].payload) for i in order], name)
    scale = rate / clock if clock else 1.0
    base = frames[0][0]
    end = max(int((t - base) * scale) + f.size for t, f in frames)
    out = np.zeros(end, np.float32)
    for t, f in frames:  # later duplicates overwrite earlier ones; gaps stay silent
        a = int((t - base) * scale)
        out[a : a + f.size] = f
    return StreamAudio(out, rate, name, voice[order[0]].arrival)


@dataclass(frozen=True)
class _Voice:
    name: str  # encoding name, upper case, one this module decodes
    clock: int
    rate: int  # the decoder's output rate
    packets: list[RtpPacket]  # the dominant payload type's packets, in arrival order
    ext: list[int]  # their extended RTP timestamps


def _voice(packets: Iterable[RtpPacket], encodings: dict[int, tuple[str, int]]) -> _Voice:
    packets = list(packets)
    encodings = {pt: encoding_of(pt, encodings) for pt in {p.pt for p in packets}}
    voice = [p for p in packets if encodings.get(p.pt, ("", 0))[0].upper() not in SKIP and p.payload]
    if not voice:
        raise UnsupportedCodec("stream carries no voice payload")
    pt = max({p.pt for p in voice}, key=lambda x: sum(1 for p in voice if p.pt == x))
    name, clock = encodings.get(pt, ("", 0))
    name = name.upper()
    if not name:
        raise UnsupportedCodec(f"unknown payload type {pt} (no SDP maps it)")
    if name in ("PCMU", "PCMA"):
        rate = 8000
    elif name in FFMPEG_CODECS:
        rate = FFMPEG_CODECS[name][1]
    else:
        raise UnsupportedCodec(f"no decoder for {name} (PT {pt})")
    voice = [p for p in voice if p.pt == pt]  # a codec change mid-stream: the dominant codec is decoded
    ext, last = [], None
    for p in voice:
        last = unwrap(last, p.timestamp, 32)
        ext.append(last)
    return _Voice(name, clock, rate, voice, ext)


def _check(v: _Voice, limits: LimitSettings, max_span_s: float) -> int:
    """Samples of the stream's timeline, after checking the bounds that a forged or corrupt packet could break:
    payload size, a timestamp running ahead of its neighbour's by more than their arrival times do (a jump),
    and the span of the timeline."""
    biggest = max(len(p.payload) for p in v.packets)
    if biggest > limits.max_rtp_payload_bytes:
        raise LimitError(f"an RTP payload of {biggest} bytes ({v.name}) is over the limit of "
                         f"{limits.max_rtp_payload_bytes} bytes (limits.max_rtp_payload_bytes)")  # fmt: skip
    clock = v.clock or v.rate
    ext = np.asarray(v.ext, np.int64)
    order = np.argsort(ext, kind="stable")
    ts_s = ext[order] / clock
    arrival = np.asarray([v.packets[i].arrival for i in order], np.float64)
    span_s = float(ts_s[-1] - ts_s[0])
    # a jump: between packets neighbouring in timestamp order, the timestamps move on further than the arrival
    # times do (a replay faster than real time moves its timestamps on 10 ms per 1 ms: never a jump here)
    excess = np.diff(ts_s) - np.diff(arrival) if ts_s.size > 1 else np.zeros(1)
    if float(excess.max()) > limits.max_rtp_jump_s:
        k = int(excess.argmax())
        raise LimitError(f"{v.name} RTP timestamps jump {float(excess[k]):.0f} s further than the packets' arrival "
                         f"times, over the limit of {limits.max_rtp_jump_s:g} s (limits.max_rtp_jump_s)")  # fmt: skip
    if span_s > max_span_s:
        raise LimitError(f"RTP timestamps span {span_s:.0f} s, over the {max_span_s:.0f} s limit of a leg "
                         f"(analysis.max_leg_duration_s)")  # fmt: skip
    return int(span_s * v.rate) + v.rate


def plan_stream(packets: Iterable[RtpPacket], encodings: dict[int, tuple[str, int]], limits: LimitSettings,
                max_span_s: float = float("inf")) -> int:  # fmt: skip
    """The samples decoding this stream would allocate, without decoding it. Raises ``LimitError`` (naming the
    setting) when a bound is broken, ``UnsupportedCodec`` when it could not be decoded anyway."""
    return _check(_voice(packets, encodings), limits, max_span_s)


def check_leg(streams: list[tuple[Iterable[RtpPacket], dict[int, tuple[str, int]]]], limits: LimitSettings | None,
              max_span_s: float) -> None:  # fmt: skip
    """Bounds for decoding one direction of a call: the number of its streams, each stream's timeline, and
    their decoded size together (``limits.max_decoded_bytes``). Streams that cannot be decoded are skipped
    here (decoding names them)."""
    lim = limits or LimitSettings()
    if len(streams) > lim.max_streams_per_call:
        raise LimitError(f"{len(streams)} RTP streams in one direction of a call, over the limit of "
                         f"{lim.max_streams_per_call} (limits.max_streams_per_call)")  # fmt: skip
    total = 0
    for packets, encodings in streams:
        with contextlib.suppress(UnsupportedCodec):
            total += plan_stream(packets, encodings, lim, max_span_s)
    if total * 4 > lim.max_decoded_bytes:
        raise LimitError(f"the RTP streams of one direction would decode to {total * 4} bytes, over the limit of "
                         f"{lim.max_decoded_bytes} bytes (limits.max_decoded_bytes)")  # fmt: skip


def _ffmpeg_decode(
    decoder: str, rate: int, packets: list[tuple[int, bytes]], name: str
) -> list[tuple[int, np.ndarray]]:
    import av

    try:
        ctx: Any = av.CodecContext.create(decoder, "r")
    except (av.error.FFmpegError, ValueError) as exc:
        raise UnsupportedCodec(f"this FFmpeg build has no {name} decoder ({decoder})") from exc
    ctx.sample_rate = rate
    ctx.layout = "mono"
    frames = []
    for ts, payload in packets:
        try:
            decoded = ctx.decode(av.Packet(payload))
        except av.error.FFmpegError:
            continue  # a corrupt frame: leave its span silent
        pcm = [f.to_ndarray().astype(np.float32).reshape(-1) for f in decoded]
        if pcm:
            x = np.concatenate(pcm)
            if decoded[0].format.name in ("s16", "s16p"):
                x /= 32768.0
            frames.append((ts, x))
    if not frames:
        raise UnsupportedCodec(f"{name} payloads did not decode")
    return frames
