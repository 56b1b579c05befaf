"""Silero VAD finds speech where it was placed and nothing in silence or noise."""

from __future__ import annotations

from pathlib import Path

import calls
import numpy as np
import pytest
from conftest import REPO

from callqa.audio.decode import decode_file
from callqa.audio.resample import resample
from callqa.quality.vad import VAD_RATE, VadOptions, detect_speech, speech_overlap


def test_speech_found_where_placed() -> None:
    x = calls.leg(30.0, [2.0, 15.0])
    lengths = [u.size / calls.RATE for u in calls.utterances()[:2]]
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


def _recordings(files: list[Path]) -> list[np.ndarray]:
    out = []
    for f in files:
        d = decode_file(f, 3600)
        out.append(resample(d.samples.mean(axis=0), d.sample_rate, VAD_RATE))
    return out


def _generated() -> list[np.ndarray]:
    """Made-up legs (espeak-ng speech at several places, gains and noise floors) and the bundled example."""
    legs = [calls.leg(40, a, gain_db=g, noise_dbfs=n, seed=i)
            for i, (g, n) in enumerate([(0, -65), (-12, -50), (6, -40), (-20, -70)])
            for a in calls.conversation(40, gap_s=0.3 + i)]  # fmt: skip
    legs += [calls.leg(12, [0.0]), calls.leg(12, [7.5])]  # speech from the first sample; cut by the end
    legs = [resample(x, calls.RATE, VAD_RATE) for x in legs]
    return legs + _recordings([REPO / "examples/call-agent.wav", REPO / "examples/call-customer.wav"])


@pytest.fixture(params=["packaged", "derived"])
def vad_cache(request: pytest.FixtureRequest, tmp_path: Path) -> Path | None:
    """No models directory (faster-whisper's own graph), or one where the matrix-product graph is derived."""
    if request.param == "packaged":
        return None
    pytest.importorskip("onnx")
    return tmp_path / "models"


def test_segments_equal_faster_whispers_on_generated_legs(vad_cache: Path | None) -> None:
    _same_as_faster_whisper(_generated(), vad_cache)


def test_segments_equal_faster_whispers_on_real_recordings(testdata: Path, vad_cache: Path | None) -> None:
    _same_as_faster_whisper(_recordings(sorted((testdata / "audio").rglob("*.wav"))), vad_cache)


def test_derived_graph_gives_the_packaged_probabilities(testdata: Path, tmp_path: Path) -> None:
    """The matrix-product graph is derived once into the models directory, and its probabilities are the
    packaged graph's to float32 rounding on real recordings."""
    pytest.importorskip("onnx")
    from callqa import model_loaders
    from callqa.quality import vad_graph
    from callqa.quality.vad import speech_probabilities

    cache = tmp_path / "models"
    x = _recordings([testdata / "audio/silero_vad/test.wav"])[0]
    derived = speech_probabilities(x, cache)
    assert vad_graph.cached_path(model_loaders.silero_vad_path(), cache).is_file()
    packaged = speech_probabilities(x)
    assert derived.shape == packaged.shape and packaged.size > 1000
    assert np.max(np.abs(derived - packaged)) < 1e-4
    assert np.ptp(packaged) > 0.9  # speech and pauses: the comparison covers both ends of the range


def _same_as_faster_whisper(recordings: list[np.ndarray], cache_dir: Path | None = None) -> None:
    """Our block-by-block VAD gives exactly faster-whisper's get_speech_timestamps (same model, same rules),
    on every recording, with the defaults and other settings, and on a length of whole windows; with
    ``cache_dir``, through the matrix-product graph derived from the same model."""
    from faster_whisper.vad import VadOptions as FwOptions
    from faster_whisper.vad import get_speech_timestamps

    recordings.append(recordings[0][: (recordings[0].size // 512) * 512])  # ends on a window boundary
    assert len(recordings) >= 10
    compared = 0
    for options in (VadOptions(), VadOptions(0.35, 100, 300, 100), VadOptions(0.7, 500, 50, 0)):
        fw = FwOptions(threshold=options.threshold, min_speech_duration_ms=options.min_speech_ms,
                       min_silence_duration_ms=options.min_silence_ms, speech_pad_ms=options.speech_pad_ms)  # fmt: skip
        for x in recordings:
            theirs = [(s["start"] / VAD_RATE, s["end"] / VAD_RATE) for s in get_speech_timestamps(x, fw)]
            assert detect_speech(x, options, cache_dir).segments == theirs
            compared += len(theirs)
    assert compared > 100


def test_a_long_leg_is_run_block_by_block() -> None:
    """20 minutes of speech: the VAD's own allocations stay small (faster-whisper's one-shot call copies the
    whole input about twice)."""
    import tracemalloc

    x = np.tile(_recordings([REPO / "examples/call-agent.wav"])[0], 30)[: 20 * 60 * VAD_RATE]
    tracemalloc.start()
    result = detect_speech(x, VadOptions())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 30e6 < x.nbytes / 2  # 77 MB of input
    assert 0.3 < result.speech_s / (x.size / VAD_RATE) < 0.9


def test_speech_overlap_per_window_on_a_real_recording(testdata: Path) -> None:
    """The seconds of speech in each candidate window (how DNSMOS and NISQA choose what to score) equal a
    plain per-window sum over the VAD segments, to the last bit, so the same windows win the ranking."""
    d = decode_file(testdata / "audio/silero_vad/test.wav", 3600)
    segments = detect_speech(d.samples[0], VadOptions()).segments
    assert len(segments) > 5
    starts = np.arange(0.0, d.duration_s, 0.25)
    ends = starts + 9.01
    cover = speech_overlap(starts, ends, segments)
    expected = [sum(max(0.0, min(b, e) - max(a, s)) for s, e in segments) for a, b in zip(starts, ends, strict=True)]
    assert cover.tolist() == expected
    assert cover.max() > 5.0 and cover.min() >= 0.0
    assert speech_overlap(starts, ends, []).tolist() == [0.0] * starts.size
