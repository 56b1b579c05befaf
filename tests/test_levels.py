"""Levels agree with ``sox FILE -n stat`` (RMS amplitude, max/min amplitude, length) on real recordings."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

import calls
import numpy as np
import pytest
from conftest import TESTDATA, write_wav

from callqa.audio.decode import decode_file
from callqa.audio.levels import FLOOR_DBFS, active_level_dbfs, measure_levels, to_dbfs
from callqa.audio.resample import resample

RECORDINGS = sorted(
    str(p.relative_to(TESTDATA)) for p in TESTDATA.glob("audio/*/*") if p.suffix in (".wav", ".flac")
) or ["audio/pesq/speech.wav"]


def sox_stat(path: Path, channel: int) -> dict[str, float]:
    proc = subprocess.run(["sox", str(path), "-n", "remix", str(channel + 1), "stat"],
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    fields = dict(re.findall(r"^(.+?):\s+(-?[\d.e+-]+)\s*$", proc.stderr, flags=re.M))
    return {k.strip(): float(v) for k, v in fields.items()}


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is installed by .ci/run")
@pytest.mark.parametrize("name", RECORDINGS)
def test_levels_match_sox_stat(testdata: Path, name: str) -> None:
    audio = decode_file(testdata / name, 3600)
    for ch in range(audio.channels):
        ref = sox_stat(testdata / name, ch)
        lv = measure_levels(audio.samples[ch], clip_level=0.98)
        assert lv.rms_dbfs == pytest.approx(20 * math.log10(ref["RMS     amplitude"]), abs=0.1)
        peak = max(ref["Maximum amplitude"], -ref["Minimum amplitude"])
        assert lv.peak_dbfs == pytest.approx(20 * math.log10(peak), abs=0.1)
        assert audio.duration_s == pytest.approx(ref["Length (seconds)"], abs=0.010)


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is installed by .ci/run")
@pytest.mark.parametrize(("rate", "gain_db", "stereo"), [(8000, 0, False), (16000, -18, True), (44100, 6, False)])
def test_levels_match_sox_stat_on_generated_speech(tmp_path: Path, rate: int, gain_db: float, stereo: bool) -> None:
    x = calls.leg(9.3, [0.4, 5.0], gain_db=gain_db, noise_dbfs=-55)
    x = resample(x, calls.RATE, rate) if rate != calls.RATE else x
    path = write_wav(tmp_path / "speech.wav", np.vstack([x, 0.3 * x[::-1]]) if stereo else np.clip(x, -1, 1), rate)
    audio = decode_file(path, 3600)
    for ch in range(audio.channels):
        ref = sox_stat(path, ch)
        lv = measure_levels(audio.samples[ch], clip_level=0.98)
        assert lv.rms_dbfs == pytest.approx(20 * math.log10(ref["RMS     amplitude"]), abs=0.1)
        assert lv.peak_dbfs == pytest.approx(20 * math.log10(max(ref["Maximum amplitude"], -ref["Minimum amplitude"])),
                                             abs=0.1)  # fmt: skip
        assert audio.duration_s == pytest.approx(ref["Length (seconds)"], abs=0.010)


def test_levels_of_known_signals() -> None:
    t = np.arange(8000) / 8000
    sine = 0.5 * np.sin(2 * np.pi * 1000 * t)
    lv = measure_levels(sine.astype(np.float32), clip_level=0.98)
    assert lv.rms_dbfs == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.01)
    assert lv.peak_dbfs == pytest.approx(20 * math.log10(0.5), abs=0.01)
    assert lv.clipping_ratio == 0.0
    clipped = np.clip(sine * 4, -1, 1).astype(np.float32)
    assert measure_levels(clipped, 0.98).clipping_ratio > 0.5
    silent = measure_levels(np.zeros(100, np.float32), 0.98)
    assert silent.rms_dbfs == FLOOR_DBFS and silent.peak_dbfs == FLOOR_DBFS
    assert measure_levels(np.zeros(0, np.float32), 0.98).rms_dbfs == FLOOR_DBFS
    assert to_dbfs(1.0) == 0.0


def test_active_level_ignores_silence() -> None:
    x = np.zeros(16000, np.float32)
    x[8000:12000] = 0.1 * np.sign(np.sin(np.arange(4000)))
    assert active_level_dbfs(x, 8000, [(1.0, 1.5)]) == pytest.approx(-20.0, abs=0.1)
    assert active_level_dbfs(x, 8000, []) is None


def test_write_wav_round_trips_decoded_samples_exactly(tmp_path: Path) -> None:
    from callqa.audio.wav import write_wav

    pcm = np.array([-32768, -32767, -1, 0, 1, 12345, 32767], dtype=np.int16)
    x = pcm.astype(np.float32) / 32768.0
    out = write_wav(tmp_path / "x.wav", x, 8000)
    back = decode_file(out, 60).samples[0]
    assert np.array_equal(np.round(back * 32768.0).astype(np.int16), pcm)


def test_level_timeline_floor_and_sound_segments() -> None:
    from callqa.audio.levels import level_timeline, noise_floor_dbfs, sound_segments

    sr = 8000
    rng = np.random.default_rng(0)
    x = rng.normal(0, 10 ** (-60 / 20), 10 * sr)  # line noise at -60 dBFS RMS
    t = np.arange(sr) / sr
    x[3 * sr : 4 * sr] += np.sqrt(2) * 10 ** (-20 / 20) * np.sin(2 * np.pi * 440 * t)  # 1 s tone, -20 dBFS RMS
    x[6 * sr + 4000 : 6 * sr + 4800] += 0.1 * np.sign(np.sin(2 * np.pi * 300 * t[:800]))  # 0.1 s burst
    x[8 * sr :] = 0.0  # digital silence at the end
    timeline = level_timeline(x, sr)
    assert len(timeline) == 10
    assert timeline[3] == pytest.approx(-20.0, abs=0.1) and timeline[0] == pytest.approx(-60.0, abs=0.3)
    assert timeline[9] == -150.0
    floor = noise_floor_dbfs(x, sr)
    assert floor is not None and -64.0 < floor < -60.0  # a low percentile of 50 ms frames of the noise
    assert noise_floor_dbfs(np.zeros(sr), sr) is None
    segs = sound_segments(x, sr, floor + 20)
    assert segs == [(3.0, 4.0), (6.5, 6.6)]
