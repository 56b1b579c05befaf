"""Sample-rate conversion (polyphase FIR, scipy.signal.resample_poly, as the DNSMOS reference used).

Long signals are converted in chunks with enough overlap for the filter, so memory stays bounded and the
output equals converting the whole signal at once.
"""

from __future__ import annotations

from math import gcd

import numpy as np

from callqa.errors import LimitError

CHUNK_S = 60
MAX_FACTOR = 1_000_000  # the filter has ~20 taps per unit of max(up, down): beyond this it alone is gigabytes


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """``x`` at ``sr_out`` as float32."""
    x = np.asarray(x, dtype=np.float32)
    if sr_in == sr_out:
        return x
    from scipy.signal import resample_poly

    if sr_in <= 0 or sr_out <= 0:
        raise LimitError(f"cannot convert {sr_in} Hz to {sr_out} Hz")
    g = gcd(sr_in, sr_out)
    up, down = sr_out // g, sr_in // g
    if max(up, down) > MAX_FACTOR:
        raise LimitError(f"cannot convert {sr_in} Hz to {sr_out} Hz (a ratio of {up}/{down}): the rates are "
                         f"implausible")  # fmt: skip
    chunk = CHUNK_S * sr_in
    if x.size <= 2 * chunk:
        return resample_poly(x, up, down).astype(np.float32)
    margin = down * (10 * max(up, down) // down + 2)  # whole input blocks covering the filter's half-length
    n_out = -(-x.size * up // down)
    out = np.empty(n_out, np.float32)
    for a in range(0, x.size, chunk):
        lo, hi = max(0, a - margin), min(x.size, a + chunk + margin)
        y = resample_poly(x[lo:hi], up, down)
        skip = (a - lo) * up // down
        start, stop = a * up // down, min(n_out, -(-min(x.size, a + chunk) * up // down))
        out[start:stop] = y[skip : skip + stop - start]
    return out
