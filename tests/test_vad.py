"""Silero VAD finds speech where it was placed and nothing in silence or noise."""

from __future__ import annotations

from pathlib import Path

import calls
import numpy as np

from callqa.audio.decode import decode_file
from callqa.audio.resample import resample
from callqa.quality.vad import VAD_RATE, VadOptions, detect_speech


def test_speech_found_where_placed(testdata: Path) -> None:
    x = calls.leg(testdata, 30.0, [2.0, 15.0])
    lengths = [u.size / calls.RATE for u in calls.utterances(testdata)[:2]]
    result = detect_speech(resample(x, calls.RATE, VAD_RATE), VadOptions())
    assert result.segments
    placed = [(2.0, 2.0 + lengths[0]), (15.0, 15.0 + lengths[1])]
    for s, e in result.segments:  # every detected segment lies inside an utterance (with padding)
        assert any(a - 0.3 <= s and e <= b + 0.3 for a, b in placed)
    speech_ratio_of_placed = result.speech_s / sum(b - a for a, b in placed)
    assert 0.6 < speech_ratio_of_placed <= 1.1


def test_no_speech_in_silence_or_noise() -> None:
    rng = np.random.default_rng(1)
    assert detect_speech(np.zeros(VAD_RATE * 5, np.float32), VadOptions()).segments == []
    noise = rng.normal(0, 0.01, VAD_RATE * 10).astype(np.float32)
    assert detect_speech(noise, VadOptions()).speech_s < 0.5
    assert detect_speech(np.zeros(10, np.float32), VadOptions()).segments == []


def test_speech_ratio_of_silero_test_file(testdata: Path) -> None:
    d = decode_file(testdata / "audio/silero_vad/test.wav", 3600)
    result = detect_speech(d.samples[0], VadOptions())
    ratio = result.speech_s / d.duration_s
    assert 0.6 < ratio < 0.9  # the file is described as about 73% active
    strict = detect_speech(d.samples[0], VadOptions(threshold=0.9))
    assert strict.speech_s < result.speech_s  # the threshold setting is honoured
