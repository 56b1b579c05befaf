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
