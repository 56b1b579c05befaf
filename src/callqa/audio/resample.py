"""Sample-rate conversion (polyphase FIR, scipy.signal.resample_poly, as the DNSMOS reference used).

Upsampling by a whole factor (8 kHz telephone audio to the models' 16 kHz) is computed here with the same filter
(``firwin`` with a Kaiser window, beta 5) and the same alignment, one convolution per output phase, in double
precision: the same samples as ``resample_poly`` to float32 rounding, without importing ``scipy.signal``, whose
import costs more than the conversion of a whole call. Other ratios call ``resample_poly``. Long signals are
converted in chunks with enough overlap for the filter, so memory stays bounded and the output equals converting
the whole signal at once.
"""

from __future__ import annotations

from functools import lru_cache
from math import gcd

import numpy as np

from callqa.errors import LimitError

CHUNK_S = 60
MAX_FACTOR = 1_000_000  # the filter has ~20 taps per unit of max(up, down): beyond this it alone is gigabytes


@lru_cache
def kaiser_lowpass(up: int, down: int) -> tuple[np.ndarray, int]:
    """``resample_poly``'s default filter: ``firwin(2 * half_len + 1, 1 / max_rate, window=("kaiser", 5.0))``
    with ``half_len = 10 * max_rate``, and that half length."""
    max_rate = max(up, down)
    half_len = 10 * max_rate
    n = 2 * half_len + 1
    m = np.arange(n) - (n - 1) / 2
    cutoff = 1.0 / max_rate
    h = cutoff * np.sinc(cutoff * m) * np.kaiser(n, 5.0)
    return h / h.sum(), half_len


def _upsample(x: np.ndarray, up: int) -> np.ndarray:
    """``resample_poly(x, up, 1)``: output sample ``n`` is the filter centred on input position ``n / up``;
    each output phase is a short FIR over the input (a matrix-vector product over sliding windows)."""
    h, half_len = kaiser_lowpass(up, 1)
    h = h * up
    pad = half_len // up + 1
    xp = np.zeros(x.size + 2 * pad, np.float32)  # float32 as resample_poly computes float32 input
    xp[pad : pad + x.size] = x
    out = np.empty(x.size * up, np.float32)
    for r in range(up):
        shift = r + half_len
        taps = h[shift % up :: up]  # y[r + up q] = sum_t taps[t] x[q + shift // up - t]
        first = pad + shift // up - (taps.size - 1)
        windows = np.lib.stride_tricks.sliding_window_view(xp[first : first + x.size + taps.size - 1], taps.size)
        out[r::up] = windows @ taps[::-1].astype(np.float32)
    return out


def _resample_poly(x: np.ndarray, up: int, down: int) -> np.ndarray:
    if down == 1:
        return _upsample(x, up)
    from scipy.signal import resample_poly

    return np.asarray(resample_poly(x, up, down), dtype=np.float32)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """``x`` at ``sr_out`` as float32."""
    x = np.asarray(x, dtype=np.float32)
    if sr_in == sr_out:
        return x
    if sr_in <= 0 or sr_out <= 0:
        raise LimitError(f"cannot convert {sr_in} Hz to {sr_out} Hz")
    g = gcd(sr_in, sr_out)
    up, down = sr_out // g, sr_in // g
    if max(up, down) > MAX_FACTOR:
        raise LimitError(f"cannot convert {sr_in} Hz to {sr_out} Hz (a ratio of {up}/{down}): the rates are "
                         f"implausible")  # fmt: skip
    chunk = CHUNK_S * sr_in
    if x.size <= 2 * chunk:
        return _resample_poly(x, up, down)
    margin = down * (10 * max(up, down) // down + 2)  # whole input blocks covering the filter's half-length
    n_out = -(-x.size * up // down)
    out = np.empty(n_out, np.float32)
    for a in range(0, x.size, chunk):
        lo, hi = max(0, a - margin), min(x.size, a + chunk + margin)
        y = _resample_poly(x[lo:hi], up, down)
        skip = (a - lo) * up // down
        start, stop = a * up // down, min(n_out, -(-min(x.size, a + chunk) * up // down))
        out[start:stop] = y[skip : skip + stop - start]
    return out
