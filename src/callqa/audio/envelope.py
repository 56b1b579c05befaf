"""A leg's loudness envelope for drawing: the peak level of each of ``n`` equal slices, in dBFS.

Read from the kept 16-bit WAV in blocks (a two-hour leg is never held in memory at once).
"""

from __future__ import annotations

import wave
from functools import lru_cache
from pathlib import Path

import numpy as np

FLOOR_DBFS = -90.0
BLOCK_FRAMES = 1 << 20


def peak_envelope(samples: np.ndarray, n: int) -> np.ndarray:
    """Peak |sample| of each of ``n`` equal slices of ``samples`` (in [-1, 1]), in dBFS, floored at -90."""
    if n < 1:
        raise ValueError("an envelope needs at least one slice")
    x = np.abs(np.asarray(samples, dtype=np.float64).ravel())
    if x.size == 0:
        return np.full(n, FLOOR_DBFS)
    edges = np.linspace(0, x.size, n + 1).astype(np.int64)
    peaks = np.array([x[a:b].max() if b > a else 0.0 for a, b in zip(edges[:-1], edges[1:], strict=True)])
    return np.maximum(20 * np.log10(np.maximum(peaks, 1e-12)), FLOOR_DBFS)


def wav_envelope(path: Path, n: int) -> tuple[np.ndarray, float]:
    """(envelope, duration in seconds) of a 16-bit PCM WAV file, read block by block."""
    stat = path.stat()
    return _cached(str(path), stat.st_mtime_ns, stat.st_size, n)


@lru_cache(maxsize=64)
def _cached(path: str, mtime_ns: int, size: int, n: int) -> tuple[np.ndarray, float]:
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM")
        frames, channels, rate = w.getnframes(), w.getnchannels(), w.getframerate()
        edges = np.linspace(0, frames, n + 1).astype(np.int64)
        peaks = np.zeros(n)
        done = 0
        while done < frames:
            block = np.frombuffer(w.readframes(BLOCK_FRAMES), "<i2")
            if block.size == 0:
                break
            mono = np.abs(block.reshape(-1, channels).astype(np.int32)).max(axis=1)
            first = int(np.searchsorted(edges, done, side="right")) - 1
            last = int(np.searchsorted(edges, done + mono.size - 1, side="right")) - 1
            for i in range(max(first, 0), min(last, n - 1) + 1):
                a, b = max(edges[i], done) - done, min(edges[i + 1], done + mono.size) - done
                if b > a:
                    peaks[i] = max(peaks[i], float(mono[a:b].max()))
            done += mono.size
    env = np.maximum(20 * np.log10(np.maximum(peaks / 32768.0, 1e-12)), FLOOR_DBFS)
    return env, frames / rate if rate else 0.0
