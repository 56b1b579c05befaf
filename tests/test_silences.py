"""Silences agree with ``ffmpeg -af silencedetect`` (same threshold and minimum duration) to 20 ms."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import calls
import numpy as np
import pytest
from conftest import write_wav

from callqa.audio.decode import decode_file
from callqa.audio.silences import detect_silences, merge_gaps

CASES = [
    ("audio/silero_vad/test.wav", -40, 0.3),
    ("audio/silero_vad/test.wav", -30, 1.0),
    ("audio/visqol/alignment_reference.wav", -35, 0.2),
    ("audio/visqol/alignment_degraded.wav", -30, 0.5),
    ("audio/pjproject/input.8.wav", -30, 0.1),
    ("audio/cmu_arctic/cmu_arctic_us_aew_a0002.wav", -40, 0.1),
    ("audio/pesq/speech.wav", -35, 0.05),
]


def ffmpeg_silences(path: Path, noise_db: float, min_s: float) -> list[tuple[float, float]]:
    proc = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostats", "-i", str(path), "-af",
         f"silencedetect=n={noise_db}dB:d={min_s}", "-f", "null", "-"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    starts = [float(v) for v in re.findall(r"silence_start: (-?[\d.]+)", proc.stderr)]
    ends = [float(v) for v in re.findall(r"silence_end: (-?[\d.]+)", proc.stderr)]
    return list(zip(starts, ends, strict=True))


def assert_same_as_ffmpeg(path: Path, noise_db: float, min_s: float) -> None:
    """Our silences of ``path`` are ffmpeg silencedetect's, to 20 ms, and there are some."""
    audio = decode_file(path, 3600)
    ref = ffmpeg_silences(path, noise_db, min_s)
    ours = detect_silences(audio.samples[0], audio.sample_rate, noise_db, min_s)
    assert ref, "the case should have silences to compare"
    assert len(ours) == len(ref)
    for (s, e), (rs, re_) in zip(ours, ref, strict=True):
        assert s == pytest.approx(rs, abs=0.020)
        assert e == pytest.approx(re_, abs=0.020)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is installed by .ci/run")
@pytest.mark.parametrize(("name", "noise_db", "min_s"), CASES)
def test_silences_match_ffmpeg_silencedetect(testdata: Path, name: str, noise_db: float, min_s: float) -> None:
    assert_same_as_ffmpeg(testdata / name, noise_db, min_s)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is installed by .ci/run")
@pytest.mark.parametrize(("noise_db", "min_s", "gap_s"), [(-40, 0.3, 1.0), (-30, 1.0, 2.5), (-50, 0.3, 0.4)])
def test_silences_match_ffmpeg_silencedetect_on_generated_speech(tmp_path: Path, noise_db: float, min_s: float,
                                                                 gap_s: float) -> None:  # fmt: skip
    a, b = calls.conversation(40.0, gap_s=gap_s)
    path = write_wav(tmp_path / "speech.wav", calls.leg(40, sorted(a + b), noise_dbfs=-70), calls.RATE)
    assert_same_as_ffmpeg(path, noise_db, min_s)


def test_silence_rules() -> None:
    sr = 1000
    x = np.full(5000, 0.5)
    x[1000:2500] = 0.0  # 1.5 s of silence
    x[3000:3400] = 0.0  # 0.4 s: too short
    x[4000:] = 0.001  # quiet to the end (below -50 dB), 1 s
    assert detect_silences(x, sr, -50, 1.0) == [(1.0, 2.5), (4.0, 5.0)]
    assert detect_silences(x, sr, -50, 2.0) == []
    assert detect_silences(np.zeros(0), sr, -50, 1.0) == []
    assert merge_gaps([(1.0, 2.0), (1.5, 3.0), (9.0, 9.5)], 12.0, 2.0) == [(3.0, 9.0), (9.5, 12.0)]
