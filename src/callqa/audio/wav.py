"""Write a leg as 16-bit PCM WAV (what the API serves for listening), readable by its owner only."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from callqa.private import open_private, private_dir


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> Path:
    """Mono float samples in [-1, 1] -> 16-bit PCM WAV at ``path`` (written to a temporary name, then renamed).
    Scaled by 32768, the inverse of the decoders' int16 / 32768, so decoded audio is written back bit-exact."""
    pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2")
    private_dir(path.parent)
    tmp = path.with_suffix(".part")
    with open_private(tmp) as f, wave.open(f, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    tmp.replace(path)
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    """A WAV file's bytes (already checked) written to ``path`` as ``write_wav`` writes: private, under a
    temporary name, then renamed, so a reader never sees half a file."""
    private_dir(path.parent)
    tmp = path.with_suffix(".part")
    with open_private(tmp) as f:
        f.write(data)
    tmp.replace(path)
    return path
