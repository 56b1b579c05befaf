"""Plain WAV files (16-bit PCM, G.711 u-law or A-law; mono or stereo) read directly with NumPy.

Call recordings are mostly such files. Reading them here gives the same samples as FFmpeg's decoders (int16 /
32768; G.711 through the ITU-T tables) an order of magnitude faster than decoding them frame by frame through
PyAV, and without importing it. Anything else (other formats, WAV variants, damaged headers) returns None, and
the caller decodes it with FFmpeg.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from callqa.audio import g711
from callqa.errors import LimitError

PCM, ALAW, ULAW, EXTENSIBLE = 1, 6, 7, 0xFFFE
CODECS = {PCM: "pcm_s16le", ALAW: "pcm_alaw", ULAW: "pcm_mulaw"}


def _chunks(f, size: int):  # type: ignore[no-untyped-def]
    """(id, offset of the body, declared body size) of each chunk after the RIFF/WAVE header."""
    pos = 12
    while pos + 8 <= size:
        f.seek(pos)
        cid, n = struct.unpack("<4sI", f.read(8))
        yield cid, pos + 8, n
        pos += 8 + n + (n & 1)


def read_wav(path: Path, max_duration_s: float, max_decoded_bytes: int | None = None
             ) -> tuple[np.ndarray, int, str] | None:  # fmt: skip
    """(float32 samples (channels, n), sample rate, FFmpeg codec name), or None when the file is not a plain WAV
    of a kind read here. A data chunk longer than the file (a truncated or still-growing recording) is read as
    far as it goes, as FFmpeg does. A recording longer than ``max_duration_s``, or whose samples would take more
    than ``max_decoded_bytes`` as float32, raises LimitError unread."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        fmt: tuple[int, int, int, int, int] | None = None
        for cid, body, n in _chunks(f, size):
            if cid == b"fmt ":
                if n < 16:
                    return None
                f.seek(body)
                raw = f.read(min(n, 40))
                if len(raw) < 16:  # the file ends inside the format chunk it declares
                    return None
                tag, channels, rate, _, align, bits = struct.unpack("<HHIIHH", raw[:16])
                if tag == EXTENSIBLE:
                    if len(raw) < 26:
                        return None
                    tag = struct.unpack("<H", raw[24:26])[0]  # the sub-format GUID starts with the format tag
                fmt = (tag, channels, rate, align, bits)
            elif cid == b"data":
                if fmt is None:
                    return None
                return _samples(f, path, body, min(n, size - body), max_duration_s, max_decoded_bytes, *fmt)
    return None


def _samples(f, path: Path, offset: int, n_bytes: int, max_duration_s: float, max_decoded_bytes: int | None,
             tag: int, channels: int, rate: int, align: int, bits: int
             ) -> tuple[np.ndarray, int, str] | None:  # type: ignore[no-untyped-def]  # fmt: skip
    width = {PCM: 2, ALAW: 1, ULAW: 1}.get(tag)
    if width is None or bits != 8 * width or channels not in (1, 2) or align != width * channels or rate <= 0:
        return None
    count = n_bytes // align * channels
    if count == 0:
        return None
    if count / channels / rate > max_duration_s * 1.01:
        raise LimitError(f"{path} lasts {count / channels / rate:.0f} s, over the {max_duration_s:.0f} s limit")
    if max_decoded_bytes is not None and count * 4 > max_decoded_bytes:
        raise LimitError(f"{path} decodes to more than {max_decoded_bytes} bytes (limits.max_decoded_bytes)")
    f.seek(offset)
    if tag == PCM:
        data = np.fromfile(f, dtype="<i2", count=count).astype(np.float32) / np.float32(32768.0)
    else:
        data = g711.decode(f.read(count), g711.ULAW if tag == ULAW else g711.ALAW)
    return np.ascontiguousarray(data.reshape(-1, channels).T), rate, CODECS[tag]
