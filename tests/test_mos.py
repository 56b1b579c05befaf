"""DNSMOS and NISQA agree with the upstream implementations' scores in mos_reference.tsv."""

from __future__ import annotations

import csv
from pathlib import Path

import calls
import numpy as np
import pytest
from conftest import TESTDATA

from callqa.audio.decode import decode_file
from callqa.audio.resample import resample
from callqa.quality import dnsmos, nisqa


def reference_rows() -> list[dict[str, str]]:
    path = TESTDATA / "reference" / "mos_reference.tsv"
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    return list(csv.DictReader(lines, delimiter="\t"))


ROWS = reference_rows()
IDS = [r["file"] for r in ROWS]


def mono(testdata: Path, name: str) -> tuple[np.ndarray, int]:
    d = decode_file(testdata / name, 3600)
    return d.samples.mean(axis=0), d.sample_rate


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_dnsmos_matches_reference(testdata: Path, row: dict[str, str]) -> None:
    x, sr = mono(testdata, row["file"])
    # the reference procedure: every 1 s hop, its own window set
    r = dnsmos.score(resample(x, sr, 16000), dnsmos.DnsmosOptions(max_windows=10_000, upstream_windows=True))
    assert r.sig == pytest.approx(float(row["dnsmos_sig"]), abs=0.1)
    assert r.bak == pytest.approx(float(row["dnsmos_bak"]), abs=0.1)
    assert r.ovrl == pytest.approx(float(row["dnsmos_ovrl"]), abs=0.1)
    assert r.p808 == pytest.approx(float(row["dnsmos_p808"]), abs=0.1)


@pytest.fixture(scope="module")
def nisqa_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_nisqa_matches_reference(
    testdata: Path, nisqa_weights: Path, nisqa_cache: Path, row: dict[str, str], runtime: str
) -> None:
    """Both runtimes: the ONNX export made at run time (the analysis path) and the PyTorch model it comes from."""
    x, sr = mono(testdata, row["file"])
    s = nisqa.score_audio(x, sr, nisqa_weights, nisqa_cache if runtime == "onnx" else None)
    assert s.mos == pytest.approx(float(row["nisqa_mos"]), abs=0.05)
    assert s.noisiness == pytest.approx(float(row["nisqa_noi"]), abs=0.05)
    assert s.discontinuity == pytest.approx(float(row["nisqa_dis"]), abs=0.05)
    assert s.coloration == pytest.approx(float(row["nisqa_col"]), abs=0.05)
    assert s.loudness == pytest.approx(float(row["nisqa_loud"]), abs=0.05)


def test_dnsmos_ranks_clean_above_noisy() -> None:
    """Speech alone scores well above the same speech in babble at 0 dB SNR (eight other talkers)."""
    opts = dnsmos.DnsmosOptions()
    utts = calls.utterances(dnsmos.SR)
    clean = np.concatenate([np.zeros(dnsmos.SR // 2), utts[0], np.zeros(dnsmos.SR // 2)])
    rng, others = np.random.default_rng(0), np.concatenate(utts[1:])
    babble = sum(np.roll(np.resize(others, clean.size), int(rng.integers(others.size))) for _ in range(8))
    babble *= np.sqrt(np.mean(clean**2) / np.mean(babble**2))  # 0 dB
    good = dnsmos.score(clean.astype(np.float32), opts)
    bad = dnsmos.score(((clean + babble) / 2).astype(np.float32), opts)
    assert good.ovrl > bad.ovrl + 1.0 and good.bak > bad.bak + 1.0


def test_dnsmos_picks_windows_with_speech() -> None:
    sr = dnsmos.SR
    starts = dnsmos.window_starts(60 * sr, 1.0)
    assert len(starts) == 51 and starts[0] == 0 and starts[-1] == 50 * sr
    picked = dnsmos.pick_windows(starts, [(30.0, 45.0)], 2)
    assert len(picked) == 2
    assert all(abs(a - b) >= dnsmos.WINDOW for a in picked for b in picked if a != b)  # disjoint
    assert all(22 * sr <= s <= 45 * sr for s in picked)  # both hold speech
    # upstream's float rounding drops windows 7 and later of a 20 s clip
    assert len(dnsmos.window_starts(20 * sr, 1.0, upstream=True)) == 7


def test_nisqa_windows_long_legs_over_speech(nisqa_weights: Path, tmp_path: Path) -> None:
    sr = 16000
    x = calls.utterances(sr)[1].astype(np.float32)  # 4.6 s of speech
    n = x.size / sr
    gap = np.zeros(int(20 * sr), np.float32)
    long_leg = np.concatenate([gap, x, gap, x, gap, x, gap])  # 94 s: too long for one pass
    speech = [(20.0 + i * (20 + n), 20 + n + i * (20 + n)) for i in range(3)]
    result = nisqa.score_leg(long_leg, sr, speech, nisqa_weights, window_s=10.0, max_windows=6)
    assert len(result.windows) == 3  # one window per utterance, none over pure silence
    for w, (a, b) in zip(result.windows, speech, strict=True):
        assert w.start_s <= a and w.end_s >= b
    single = nisqa.score_audio(x, sr, nisqa_weights)
    assert result.mos == pytest.approx(np.mean([w.mos for w in result.windows]))
    assert abs(result.mos - single.mos) < 1.0  # same speech, padded with silence: similar score
    assert nisqa.unavailable_reason(tmp_path / "missing.tar") is not None
    assert nisqa.unavailable_reason(nisqa_weights) is None


def test_nisqa_export_is_made_once_and_agrees_with_torch(testdata: Path, nisqa_weights: Path, tmp_path: Path) -> None:
    """The export is written to the cache directory named by the weights' hash, reused, and scores windows of
    any count and length as the PyTorch model does."""
    cache = tmp_path / "models"
    path = nisqa.onnx_path(nisqa_weights, cache)
    assert not path.exists()
    x, sr = mono(testdata, "audio/silero_vad/test.wav")  # 60 s: several windows, and lengths not exported
    feats = [nisqa.segments(nisqa.melspec_db(x[int(a * sr) : int((a + 10) * sr)], sr)) for a in (0, 12, 30, 45)]
    theirs = nisqa.predict(feats, nisqa_weights)
    ours = nisqa.predict(feats, nisqa_weights, cache)
    assert path.is_file() and [p.name for p in cache.iterdir()] == [path.name]  # no temporary file left
    mtime = path.stat().st_mtime_ns
    for a, b in zip(ours, theirs, strict=True):
        assert np.allclose(list(vars(a).values()), list(vars(b).values()), atol=1e-4)
    short = nisqa.segments(nisqa.melspec_db(x[: 2 * sr], sr))
    assert nisqa.predict([short], nisqa_weights, cache)[0].mos == pytest.approx(
        nisqa.predict([short], nisqa_weights)[0].mos, abs=1e-4
    )
    nisqa._onnx_model.cache_clear()
    nisqa.predict(feats[:1], nisqa_weights, cache)
    assert path.stat().st_mtime_ns == mtime  # loaded, not exported again
    assert nisqa.unavailable_reason(nisqa_weights, cache) is None


def test_nisqa_export_made_once_when_legs_ask_at_the_same_time(nisqa_weights: Path, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    x = np.random.default_rng(4).normal(0, 0.1, 8000 * 3).astype(np.float32)
    segs = nisqa.segments(nisqa.melspec_db(x, 8000))
    with ThreadPoolExecutor(2) as pool:
        scores = list(pool.map(lambda _: nisqa.predict([segs], nisqa_weights, tmp_path), range(2)))
    assert scores[0] == scores[1]
    assert [p.name for p in tmp_path.iterdir()] == [nisqa.onnx_path(nisqa_weights, tmp_path).name]


def test_nisqa_runs_on_pytorch_when_the_export_cannot_be_written(nisqa_weights: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cache = blocker / "models"  # cannot be created
    x = np.random.default_rng(3).normal(0, 0.1, 16000 * 3).astype(np.float32)
    segs = nisqa.segments(nisqa.melspec_db(x, 16000))
    assert nisqa.onnx_model(nisqa_weights, cache) is None
    assert nisqa.predict([segs], nisqa_weights, cache) == nisqa.predict([segs], nisqa_weights)


def test_nisqa_rejects_too_short_audio(nisqa_weights: Path) -> None:
    with pytest.raises(ValueError, match="too short"):
        nisqa.score_audio(np.zeros(100, np.float32), 8000, nisqa_weights)
