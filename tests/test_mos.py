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


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_nisqa_matches_reference(testdata: Path, nisqa_weights: Path, row: dict[str, str]) -> None:
    x, sr = mono(testdata, row["file"])
    s = nisqa.score_audio(x, sr, nisqa_weights)
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


def test_nisqa_rejects_too_short_audio(nisqa_weights: Path) -> None:
    with pytest.raises(ValueError, match="too short"):
        nisqa.score_audio(np.zeros(100, np.float32), 8000, nisqa_weights)
