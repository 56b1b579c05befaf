"""Decode anything FFmpeg reads into float32 channels, through PyAV (FFmpeg's libraries, no subprocess).

Samples are scaled as FFmpeg and SoX scale them (int16 / 32768), so levels agree with ``sox stat``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from callqa.audio.riff import read_wav
from callqa.config import LimitSettings
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


def decode_file(path: str | Path, max_duration_s: float, max_bytes: int | None = None,
                limits: LimitSettings | None = None) -> DecodedAudio:  # fmt: skip
    """Decode a file to float32 at its native rate, refusing inputs longer than ``max_duration_s``.

    Raises :class:`InputError` for a missing file, :class:`DecodeError` for bytes FFmpeg cannot decode,
    :class:`LimitError` when a limit is exceeded: the sample rate, channels and duration a header declares are
    checked before anything is decoded, and the duration and decoded size again as frames arrive (a header may
    lie), so a hostile file is refused before it is held in memory.
    """

    lim = limits or LimitSettings()
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
    # plain PCM/G.711 WAV: read directly, the same samples as FFmpeg's
    plain = read_wav(p, max_duration_s, lim.max_decoded_bytes)
    if plain is not None:  # the same limits as decoded files (the samples are no larger than the file)
        _check_rate(plain[1], p, lim)
        _check_channels(plain[0].shape[0], p, lim)
        return DecodedAudio(samples=plain[0], sample_rate=plain[1], codec=plain[2], source=str(p))
    import av  # PyAV: imported here so that importing callqa stays cheap

    try:
        container = av.open(str(p), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError, OSError) as exc:
        raise DecodeError(f"not a decodable audio file: {p} ({exc})") from exc
    with container:
        if not container.streams.audio:
            raise DecodeError(f"no audio stream in {p}")
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        if ctx is None:  # FFmpeg found a stream but has no decoder for it (e.g. an unknown WAV sub-format)
            raise DecodeError(f"no decoder for the audio in {p} (unknown or corrupt codec in its header)")
        codec = ctx.name
        rate = int(ctx.sample_rate or 0)
        if rate <= 0:
            raise DecodeError(f"no sample rate in {p}")
        _check_rate(rate, p, lim)
        _check_channels(_channels(ctx), p, lim)
        if stream.duration is not None and stream.time_base is not None:
            declared = float(stream.duration * stream.time_base)
            if declared > max_duration_s * 1.01:
                raise LimitError(f"{p} lasts {declared:.0f} s, over the {max_duration_s:.0f} s limit")
        max_samples = int(max_duration_s * rate) + rate
        chunks: list[np.ndarray] = []
        total = decoded_bytes = 0
        try:
            for frame in container.decode(stream):
                x = _frame_to_float(frame)
                # a frame may disagree with the header: its own rate and layout are checked too
                _check_rate(int(frame.sample_rate or rate), p, lim)
                _check_channels(x.shape[0], p, lim)
                chunks.append(x)
                total += x.shape[1]
                decoded_bytes += x.nbytes
                if total > max_samples:
                    raise LimitError(f"{p} is longer than the {max_duration_s:.0f} s limit")
                if decoded_bytes > lim.max_decoded_bytes:
                    raise LimitError(f"{p} decodes to more than {lim.max_decoded_bytes} bytes "
                                     f"(limits.max_decoded_bytes)")  # fmt: skip
        except (av.error.FFmpegError, ValueError) as exc:  # ValueError: PyAV cannot convert the sample format
            if not chunks:
                raise DecodeError(f"cannot decode {p}: {exc}") from exc
            # a truncated tail: keep what decoded (the analysis notes the short duration)
    if not chunks:
        raise DecodeError(f"no audio samples decoded from {p}")
    n_ch = max(c.shape[0] for c in chunks)
    chunks = [c if c.shape[0] == n_ch else np.resize(c, (n_ch, c.shape[1])) for c in chunks]
    samples = np.ascontiguousarray(np.concatenate(chunks, axis=1), dtype=np.float32)
    return DecodedAudio(samples=samples, sample_rate=rate, codec=codec, source=str(p))


def _channels(ctx) -> int:  # type: ignore[no-untyped-def]
    layout = getattr(ctx, "layout", None)
    n = len(layout.channels) if layout is not None else 0
    return n or int(getattr(ctx, "channels", 0) or 0)


def _check_rate(rate: int, p: Path, lim: LimitSettings) -> None:
    if rate > lim.max_sample_rate:
        raise LimitError(f"{p} declares a sample rate of {rate} Hz, over the limit of {lim.max_sample_rate} Hz "
                         f"(limits.max_sample_rate)")  # fmt: skip


def _check_channels(n: int, p: Path, lim: LimitSettings) -> None:
    if n > lim.max_channels:
        raise LimitError(f"{p} declares {n} channels, over the limit of {lim.max_channels} (limits.max_channels)")


_INT_SCALE = {"s16": 32768.0, "s16p": 32768.0, "s32": 2147483648.0, "s32p": 2147483648.0}


def _frame_to_float(frame) -> np.ndarray:  # type: ignore[no-untyped-def]
    """One decoded frame as float32 (channels, n), scaled like SoX/FFmpeg."""
    fmt = frame.format.name
    n_ch = len(frame.layout.channels)
    if n_ch == 0:
        raise DecodeError("a decoded frame has no channels")
    arr = frame.to_ndarray()
    if not frame.format.is_planar:
        arr = arr.reshape(-1, n_ch).T
    if fmt in _INT_SCALE:
        return arr.astype(np.float32) / np.float32(_INT_SCALE[fmt])
    if fmt in ("u8", "u8p"):
        return (arr.astype(np.float32) - 128.0) / 128.0
    if fmt in ("flt", "fltp", "dbl", "dblp"):
        return arr.astype(np.float32)
    raise DecodeError(f"unsupported sample format {fmt}")
