"""Silence segments with FFmpeg ``silencedetect`` semantics, so our figures match ``ffmpeg -af silencedetect``.

A silence is a run of at least ``round(min_duration * sr)`` consecutive samples whose absolute value is below
the noise amplitude; it starts at the run's first sample and ends at the first sample above the threshold, or
at the end of the audio when it runs to the end (FFmpeg then reports the end of the last frame).
"""

from __future__ import annotations

import numpy as np


def runs_below(x: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) sample indices of every run where |x| < threshold."""
    quiet = np.abs(x) < threshold
    if quiet.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    edges = np.diff(quiet.astype(np.int8), prepend=0, append=0)
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def detect_silences(x: np.ndarray, sr: int, noise_db: float, min_duration_s: float) -> list[tuple[float, float]]:
    """(start_s, end_s) of each silence, like silencedetect=n=<noise_db>dB:d=<min_duration_s> on mono audio."""
    threshold = 10.0 ** (noise_db / 20.0)
    min_samples = max(1, round(min_duration_s * sr))
    starts, ends = runs_below(x, threshold)
    keep = (ends - starts) >= min_samples
    return [(s / sr, e / sr) for s, e in zip(starts[keep].tolist(), ends[keep].tolist(), strict=True)]


def merge_gaps(segments: list[tuple[float, float]], total_s: float, min_gap_s: float) -> list[tuple[float, float]]:
    """Gaps of at least ``min_gap_s`` between sorted segments inside [0, total_s]."""
    gaps = []
    cursor = 0.0
    for s, e in segments:
        if s - cursor >= min_gap_s:
            gaps.append((cursor, s))
        cursor = max(cursor, e)
    if total_s - cursor >= min_gap_s:
        gaps.append((cursor, total_s))
    return gaps
