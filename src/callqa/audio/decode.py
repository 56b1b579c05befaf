"""Decode anything FFmpeg reads into float32 channels, through PyAV (FFmpeg's libraries, no subprocess).

Samples are scaled as FFmpeg and SoX scale them (int16 / 32768), so levels agree with ``sox stat``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from callqa.audio.riff import read_wav
from callqa.errors import DecodeError, InputError, LimitError


@dataclass(frozen=True)
class DecodedAudio:
    """All channels of one file: ``samples`` has shape (channels, n)."""

    samples: np.ndarray
    sample_rate: int
    codec: str
    source: str

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        return self.samples.shape[1] / self.sample_rate


def decode_file(path: str | Path, max_duration_s: float, max_bytes: int | None = None) -> DecodedAudio:
    """Decode a file to float32 at its native rate, refusing inputs longer than ``max_duration_s``.

    Raises :class:`InputError` for a missing file, :class:`DecodeError` for bytes FFmpeg cannot decode,
    :class:`LimitError` when a limit is exceeded (checked while decoding, so a huge file is not read whole).
    """

    p = Path(path)
    if not p.exists():
        raise InputError(f"file not found: {p}")
    if not p.is_file():
        raise InputError(f"not a regular file: {p}")
    size = p.stat().st_size
    if size == 0:
        raise DecodeError(f"empty file: {p}")
    if max_bytes is not None and size > max_bytes:
        raise LimitError(f"{p} is {size} bytes, over the {max_bytes}-byte limit")
    plain = read_wav(p, max_duration_s)  # plain PCM/G.711 WAV: read directly, the same samples as FFmpeg's
    if plain is not None:
        return DecodedAudio(samples=plain[0], sample_rate=plain[1], codec=plain[2], source=str(p))
    import av  # PyAV: imported here so that importing callqa stays cheap

    try:
        container = av.open(str(p), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise DecodeError(f"not a decodable audio file: {p} ({exc})") from exc
    with container:
        if not container.streams.audio:
            raise DecodeError(f"no audio stream in {p}")
        stream = container.streams.audio[0]
        codec = stream.codec_context.name
        rate = int(stream.codec_context.sample_rate or 0)
        if rate <= 0:
            raise DecodeError(f"no sample rate in {p}")
        if stream.duration is not None and stream.time_base is not None:
            declared = float(stream.duration * stream.time_base)
            if declared > max_duration_s * 1.01:
                raise LimitError(f"{p} lasts {declared:.0f} s, over the {max_duration_s:.0f} s limit")
        max_samples = int(max_duration_s * rate) + rate
        chunks: list[np.ndarray] = []
        total = 0
        try:
            for frame in container.decode(stream):
                chunks.append(_frame_to_float(frame))
                total += frame.samples
                if total > max_samples:
                    raise LimitError(f"{p} is longer than the {max_duration_s:.0f} s limit")
        except av.error.FFmpegError as exc:
            if not chunks:
                raise DecodeError(f"cannot decode {p}: {exc}") from exc
            # a truncated tail: keep what decoded (the analysis notes the short duration)
    if not chunks:
        raise DecodeError(f"no audio samples decoded from {p}")
    n_ch = max(c.shape[0] for c in chunks)
    chunks = [c if c.shape[0] == n_ch else np.resize(c, (n_ch, c.shape[1])) for c in chunks]
    samples = np.ascontiguousarray(np.concatenate(chunks, axis=1), dtype=np.float32)
    return DecodedAudio(samples=samples, sample_rate=rate, codec=codec, source=str(p))


_INT_SCALE = {"s16": 32768.0, "s16p": 32768.0, "s32": 2147483648.0, "s32p": 2147483648.0}


def _frame_to_float(frame) -> np.ndarray:  # type: ignore[no-untyped-def]
    """One decoded frame as float32 (channels, n), scaled like SoX/FFmpeg."""
    fmt = frame.format.name
    arr = frame.to_ndarray()
    n_ch = len(frame.layout.channels)
    if not frame.format.is_planar:
        arr = arr.reshape(-1, n_ch).T
    if fmt in _INT_SCALE:
        return arr.astype(np.float32) / np.float32(_INT_SCALE[fmt])
    if fmt in ("u8", "u8p"):
        return (arr.astype(np.float32) - 128.0) / 128.0
    if fmt in ("flt", "fltp", "dbl", "dblp"):
        return arr.astype(np.float32)
    raise DecodeError(f"unsupported sample format {fmt}")
