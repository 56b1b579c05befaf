"""Upsampling by a whole factor gives resample_poly's samples, whole or in chunks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.signal import firwin, resample_poly

from callqa.audio import resample as rs
from callqa.audio.decode import decode_file


def test_filter_is_resample_polys() -> None:
    for up, down in ((2, 1), (6, 1), (1, 3), (160, 441)):
        h, half_len = rs.kaiser_lowpass(up, down)
        assert half_len == 10 * max(up, down)
        # the same taps to the last bits of float64 (scipy's Kaiser window and numpy's differ by ~1e-18 in some
        # builds); the resampled legs below are still bit-exact in float32
        assert np.allclose(h, firwin(2 * half_len + 1, 1 / max(up, down), window=("kaiser", 5.0)), rtol=0, atol=1e-15)


def test_upsampling_equals_resample_poly_on_real_speech(testdata: Path) -> None:
    x = decode_file(testdata / "audio/pjproject/input.8.wav", 60).samples[0]
    long_leg = np.tile(x, 40)  # 168 s: converted in overlapping chunks
    for up in (2, 3, 6):
        ours = rs.resample(x, 8000, 8000 * up)
        assert ours.dtype == np.float32 and ours.size == x.size * up
        assert np.max(np.abs(ours - resample_poly(x, up, 1))) < 1e-6
    assert np.array_equal(rs.resample(long_leg, 8000, 16000), resample_poly(long_leg, 2, 1).astype(np.float32))
    for n in (1, 2, 7, 41, 100):  # shorter than the filter
        assert np.allclose(rs.resample(x[:n], 8000, 16000), resample_poly(x[:n], 2, 1), atol=1e-6)


def test_other_ratios_still_use_resample_poly(testdata: Path) -> None:
    d = decode_file(testdata / "audio/visqol/clean_speech_CA01_01.wav", 60)
    ours = rs.resample(d.samples[0], d.sample_rate, 16000)
    assert np.array_equal(ours, resample_poly(d.samples[0], 1, 3).astype(np.float32))
