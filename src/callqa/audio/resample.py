"""Sample-rate conversion (polyphase, as the DNSMOS reference used: scipy.signal.resample_poly)."""

from __future__ import annotations

from math import gcd

import numpy as np


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return np.asarray(x, dtype=np.float32)
    from scipy.signal import resample_poly

    g = gcd(sr_in, sr_out)
    return resample_poly(x, sr_out // g, sr_in // g).astype(np.float32)
