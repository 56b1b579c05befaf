"""Made-up calls with known faults, built from speech synthesised by espeak-ng (no external data needed)."""

from __future__ import annotations

import importlib.util
import random
import struct
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from callqa.audio.decode import decode_file
from callqa.audio.resample import resample

RATE = 8000
# (voice, text): four speakers, each sentence a few seconds long, like short read utterances
SENTENCES = [
    ("en-us+m3", "Thank you for calling the service desk, my name is Daniel, how can I help you today?"),
    ("en-gb+f2", "Hello, I would like to check the balance of my savings account, please."),
    ("en-us+f3", "Of course, could you tell me your date of birth and the first line of your address?"),
    ("en-gb+m4", "It is the fourth of July, and I live at twelve Station Road near the river."),
]


@lru_cache
def synthesise(text: str, voice: str, rate: int = RATE) -> np.ndarray:
    """``text`` spoken by espeak-ng, mono float at ``rate``, normalised to about -20 dBFS RMS."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "tts.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(wav), text], check=True, timeout=60,
                       capture_output=True)  # fmt: skip
        d = decode_file(wav, 3600)
    x = resample(d.samples.mean(axis=0), d.sample_rate, rate).astype(np.float64)
    return x * 10 ** (-20 / 20) / np.sqrt(np.mean(x**2))


def utterances(rate: int = RATE) -> tuple[np.ndarray, ...]:
    """Each of the four sentences at ``rate``."""
    return tuple(synthesise(text, voice, rate) for voice, text in SENTENCES)


def leg(duration_s: float, turns: list[float], gain_db: float = 0.0, noise_dbfs: float = -65.0,
        seed: int = 0) -> np.ndarray:  # fmt: skip
    """A leg of ``duration_s`` with an utterance starting at each time in ``turns``, over a faint noise floor."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 10 ** (noise_dbfs / 20), int(duration_s * RATE))
    utts = utterances()
    for i, start in enumerate(turns):
        u = utts[i % len(utts)] * 10 ** (gain_db / 20)
        a = int(start * RATE)
        x[a : a + u.size] += u[: max(0, x.size - a)]
    return x


def babble(size: int, seed: int = 0, talkers: int = 6) -> np.ndarray:
    """Babble of ``talkers`` overlapping sentences (the four voices, shifted at random), at about -20 dBFS."""
    rng, others = np.random.default_rng(seed), np.concatenate(utterances())
    noise = sum(np.roll(np.resize(others, size), int(rng.integers(others.size))) for _ in range(talkers))
    return np.asarray(noise) * 10 ** (-20 / 20) / np.sqrt(np.mean(np.asarray(noise) ** 2))


def conversation(duration_s: float = 60.0, gap_s: float = 1.0) -> tuple[list[float], list[float]]:
    """Alternating turn start times for two speakers filling ``duration_s``."""
    lengths = [u.size / RATE for u in utterances()]
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
