"""Turn an RTP stream into audio: decode each packet's payload and place it on the stream's timeline by its
RTP timestamp, so lost packets become silence of the right length and the two directions stay aligned.

G.711 is decoded here; G.722, GSM, G.729, G.723.1 and Opus go through FFmpeg's decoders (PyAV) when the
build has them. ``UnsupportedCodec`` names what could not be decoded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from callqa.audio import g711
from callqa.errors import CallqaError
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


def decode_stream(packets: Iterable[RtpPacket], encodings: dict[int, tuple[str, int]]) -> StreamAudio:
    """Decode the voice packets of one stream (events and comfort noise are skipped) onto its timeline.
    ``encodings`` maps payload types from the SDP; static types fall back to RFC 3551."""
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
    voice = [p for p in voice if p.pt == pt]  # a codec change mid-stream: the dominant codec is decoded
    # order by extended timestamp, drop duplicates
    ext, last = [], None
    for p in voice:
        last = unwrap(last, p.timestamp, 32)
        ext.append(last)
    order = sorted(range(len(voice)), key=lambda i: (ext[i], voice[i].seq))
    if name in ("PCMU", "PCMA"):
        table = g711.ULAW if name == "PCMU" else g711.ALAW
        frames = [(ext[i], g711.decode(voice[i].payload, table)) for i in order]
        rate = 8000
    elif name in FFMPEG_CODECS:
        decoder, rate = FFMPEG_CODECS[name]
        frames = _ffmpeg_decode(decoder, rate, [(ext[i], voice[i].payload) for i in order], name)
    else:
        raise UnsupportedCodec(f"no decoder for {name} (PT {pt})")
    scale = rate / clock if clock else 1.0
    base = frames[0][0]
    end = max(int((t - base) * scale) + f.size for t, f in frames)
    out = np.zeros(end, np.float32)
    for t, f in frames:  # later duplicates overwrite earlier ones; gaps stay silent
        a = int((t - base) * scale)
        out[a : a + f.size] = f
    return StreamAudio(out, rate, name, voice[order[0]].arrival)


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
