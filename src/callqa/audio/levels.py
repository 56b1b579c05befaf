"""Signal levels of one leg: RMS, peak and clipping, in dBFS (agrees with ``sox FILE -n stat``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLOOR_DBFS = -150.0  # reported for digital silence instead of -inf, so JSON stays finite


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
    x64 = x.astype(np.float64)
    rms = float(np.sqrt(np.dot(x64, x64) / x64.size))
    peak = float(np.max(np.abs(x64)))
    clipped = int(np.count_nonzero(np.abs(x) >= clip_level))
    return LevelStats(to_dbfs(rms), to_dbfs(peak), clipped / x.size, clipped)


def active_level_dbfs(x: np.ndarray, sr: int, segments: list[tuple[float, float]]) -> float | None:
    """RMS over the speech segments only (a simple active speech level), or None without speech."""
    parts = [x[int(s * sr) : int(e * sr)] for s, e in segments]
    parts = [p for p in parts if p.size]
    if not parts:
        return None
    joined = np.concatenate(parts).astype(np.float64)
    return to_dbfs(float(np.sqrt(np.dot(joined, joined) / joined.size)))
