"""Made-up calls with known faults, built from real recorded speech in the shared test data."""

from __future__ import annotations

import importlib.util
import random
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np

from callqa.audio.decode import decode_file
from callqa.audio.resample import resample

RATE = 8000
SPEECH_FILES = [
    "audio/pjproject/input.16.wav",
    "audio/cmu_arctic/cmu_arctic_us_aew_a0001.wav",
    "audio/cmu_arctic/cmu_arctic_us_aew_a0002.wav",
    "audio/cmu_arctic/cmu_arctic_us_axb_a0004.wav",
]


@lru_cache
def utterances(testdata: Path) -> tuple[np.ndarray, ...]:
    """Each shared speech file at 8 kHz, normalised to about -20 dBFS RMS."""
    out = []
    for name in SPEECH_FILES:
        d = decode_file(testdata / name, 3600)
        x = resample(d.samples.mean(axis=0), d.sample_rate, RATE).astype(np.float64)
        out.append(x * 10 ** (-20 / 20) / np.sqrt(np.mean(x**2)))
    return tuple(out)


def leg(testdata: Path, duration_s: float, turns: list[float], gain_db: float = 0.0,
        noise_dbfs: float = -65.0, seed: int = 0) -> np.ndarray:  # fmt: skip
    """A leg of ``duration_s`` with an utterance starting at each time in ``turns``, over a faint noise floor."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 10 ** (noise_dbfs / 20), int(duration_s * RATE))
    utts = utterances(testdata)
    for i, start in enumerate(turns):
        u = utts[i % len(utts)] * 10 ** (gain_db / 20)
        a = int(start * RATE)
        x[a : a + u.size] += u[: max(0, x.size - a)]
    return x


def conversation(testdata: Path, duration_s: float = 60.0, gap_s: float = 1.0) -> tuple[list[float], list[float]]:
    """Alternating turn start times for two speakers filling ``duration_s``."""
    lengths = [u.size / RATE for u in utterances(testdata)]
    a, b, t, i = [], [], 0.5, 0
    while t + lengths[i % len(lengths)] < duration_s:
        (a if i % 2 == 0 else b).append(t)
        t += lengths[i % len(lengths)] + gap_s
        i += 1
    return a, b


def capture_file(path: Path, calls: int, seconds: float) -> None:
    """A capture of ``calls`` SIP calls with G.711 both ways, written by the benchmark's generator."""
    script = Path(__file__).resolve().parents[1] / "bench" / "gen_capture.py"
    spec = importlib.util.spec_from_file_location("gen_capture", script)
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    rng = random.Random(5)
    frames = sorted((p for i in range(calls) for p in gen.call_packets(i, 1_700_000_000.0 + i, seconds, rng)),
                    key=lambda p: p[0])  # fmt: skip
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for ts, frame in frames:
            f.write(struct.pack("<IIII", int(ts), int((ts - int(ts)) * 1e6), len(frame), len(frame)))
            f.write(frame)
