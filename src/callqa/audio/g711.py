"""ITU-T G.711 u-law and A-law expansion to 16-bit linear PCM, as 256-entry tables."""

from __future__ import annotations

import numpy as np


def _ulaw(code: int) -> int:
    u = ~code & 0xFF
    exponent, mantissa = (u >> 4) & 0x07, u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -magnitude if u & 0x80 else magnitude


def _alaw(code: int) -> int:
    a = code ^ 0x55
    exponent, mantissa = (a >> 4) & 0x07, a & 0x0F
    magnitude = (mantissa << 4) + 8 if exponent == 0 else ((mantissa << 4) + 0x108) << (exponent - 1)
    return magnitude if a & 0x80 else -magnitude


ULAW = np.array([_ulaw(c) for c in range(256)], dtype=np.int16)
ALAW = np.array([_alaw(c) for c in range(256)], dtype=np.int16)


def decode(payload: bytes, table: np.ndarray) -> np.ndarray:
    """Bytes of G.711 to float32 samples in [-1, 1] (int16 / 32768, as FFmpeg and SoX scale them)."""
    return table[np.frombuffer(payload, dtype=np.uint8)].astype(np.float32) / np.float32(32768.0)
