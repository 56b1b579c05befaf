"""Signal levels of one leg: RMS, peak and clipping, in dBFS (agrees with ``sox FILE -n stat``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLOOR_DBFS = -150.0  # reported for digital silence instead of -inf, so JSON stays finite
CHUNK = 1 << 20


def to_dbfs(amplitude: float) -> float:
    """Amplitude (1.0 = full scale) to dBFS, floored at FLOOR_DBFS."""
    if amplitude <= 0.0:
        return FLOOR_DBFS
    return max(FLOOR_DBFS, 20.0 * float(np.log10(amplitude)))


@dataclass(frozen=True)
class LevelStats:
    rms_dbfs: float
    peak_dbfs: float
    clipping_ratio: float
    clipped_samples: int


def measure_levels(x: np.ndarray, clip_level: float) -> LevelStats:
    """RMS (sox 'RMS amplitude'), peak (max of sox 'Maximum'/'Minimum amplitude') and clipped-sample share."""
    if x.size == 0:
        return LevelStats(FLOOR_DBFS, FLOOR_DBFS, 0.0, 0)
    energy, peak, clipped = 0.0, 0.0, 0
    for a in range(0, x.size, CHUNK):  # chunks keep the float64 copy small on hour-long legs
        c = x[a : a + CHUNK].astype(np.float64)
        energy += float(np.dot(c, c))
        mag = np.abs(c)
        peak = max(peak, float(mag.max()))
        clipped += int(np.count_nonzero(mag >= clip_level))
    return LevelStats(to_dbfs(float(np.sqrt(energy / x.size))), to_dbfs(peak), clipped / x.size, clipped)


def active_level_dbfs(x: np.ndarray, sr: int, segments: list[tuple[float, float]]) -> float | None:
    """RMS over the speech segments only (a simple active speech level), or None without speech."""
    parts = [x[int(s * sr) : int(e * sr)] for s, e in segments]
    parts = [p for p in parts if p.size]
    if not parts:
        return None
    joined = np.concatenate(parts).astype(np.float64)
    return to_dbfs(float(np.sqrt(np.dot(joined, joined) / joined.size)))


FLOOR_DBFS_AUDIBLE = -100.0  # frames below this RMS are digital silence, not a noise floor


def _frame_rms(x: np.ndarray, n: int) -> np.ndarray:
    """RMS of consecutive ``n``-sample frames (a shorter last frame included), chunk by chunk in float64."""
    out = []
    step = max(n, CHUNK // n * n)
    for a in range(0, x.size, step):
        c = x[a : a + step].astype(np.float64)
        full = c.size // n * n
        if full:
            out.append(np.sqrt(np.mean(c[:full].reshape(-1, n) ** 2, axis=1)))
        if c.size > full:
            out.append(np.sqrt([np.mean(c[full:] ** 2)]))
    return np.concatenate(out) if out else np.empty(0)


def level_timeline(x: np.ndarray, sr: int, step_s: float = 1.0) -> list[float]:
    """RMS of each ``step_s`` window (the last one may be shorter), dBFS rounded to 0.1: what a leg carries over
    time, at a resolution that keeps a two-hour leg's report small (7200 numbers)."""
    return [round(to_dbfs(float(v)), 1) for v in _frame_rms(x, max(1, int(round(step_s * sr))))]


def noise_floor_dbfs(x: np.ndarray, sr: int, frame_s: float = 0.05, percentile: float = 5.0) -> float | None:
    """The leg's background level: a low percentile of the RMS of short frames (the pauses between words reach
    it even in a leg that is speech most of the time). Frames of digital silence (the zeros before a captured
    stream's first packet, or a muted leg) are left out; None when every frame is digital silence."""
    rms = _frame_rms(x, max(1, int(round(frame_s * sr))))
    audible = rms[rms > 10 ** (FLOOR_DBFS_AUDIBLE / 20)]
    if audible.size == 0:
        return None
    return round(to_dbfs(float(np.percentile(audible, percentile))), 1)


def sound_segments(x: np.ndarray, sr: int, threshold_dbfs: float, frame_s: float = 0.02, min_s: float = 0.1,
                   bridge_s: float = 0.2) -> list[tuple[float, float]]:  # fmt: skip
    """Stretches whose 20 ms frames are louder than ``threshold_dbfs`` (gaps under ``bridge_s`` bridged, pieces
    shorter than ``min_s`` dropped): where a leg carries sound, speech or not, whatever a VAD makes of it."""
    n = max(1, int(round(frame_s * sr)))
    loud = _frame_rms(x, n) > 10 ** (threshold_dbfs / 20)
    edges = np.diff(loud.astype(np.int8), prepend=0, append=0)
    out: list[tuple[float, float]] = []
    for a, b in zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True):
        start, end = a * n / sr, min(b * n, x.size) / sr
        if out and start - out[-1][1] < bridge_s:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return [(round(a, 3), round(b, 3)) for a, b in out if b - a >= min_s - 1e-9]
