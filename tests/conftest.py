"""Shared fixtures. Reference recordings are read from ``../shared/testdata`` next to the repository
(override with CALLQA_SHARED); tests that need them skip when that folder does not exist."""

from __future__ import annotations

import importlib.util
import os
import wave
from pathlib import Path

import numpy as np
import pytest

from callqa.config import AnalysisSettings, Settings

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CALLQA_SHARED", REPO.parent / "shared"))
TESTDATA = SHARED / "testdata"
NISQA_WEIGHTS = SHARED / "models" / "nisqa" / "nisqa.tar"


def _example_turns() -> list[tuple[float, str, str]]:
    """(start second, speaker, text) of the bundled example call, from the script that made it."""
    spec = importlib.util.spec_from_file_location("make_example", REPO / "examples" / "make_example.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [(start, who, text) for start, who, _voice, text in module.TURNS]


EXAMPLE_TURNS = _example_turns()


@pytest.fixture(scope="session")
def testdata() -> Path:
    if not TESTDATA.is_dir():
        pytest.skip(f"shared reference data not found at {TESTDATA}")
    return TESTDATA


@pytest.fixture(scope="session")
def nisqa_weights() -> Path:
    pytest.importorskip("torch", reason="NISQA needs the 'nisqa' extra")
    if not NISQA_WEIGHTS.is_file():
        pytest.skip(f"NISQA weights not found at {NISQA_WEIGHTS}")
    return NISQA_WEIGHTS


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Default analysis, a private store, no NISQA (tests that want it pass the weights)."""
    return Settings(db=tmp_path / "store.sqlite3", models_dir=tmp_path / "models",
                    analysis=AnalysisSettings(nisqa=False))  # fmt: skip


def write_wav(path: Path, x: np.ndarray, rate: int) -> Path:
    """16-bit PCM WAV; ``x`` is (n,) or (channels, n) in [-1, 1]."""
    data = np.atleast_2d(x)
    pcm = np.clip(np.round(data.T * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(data.shape[0])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path
