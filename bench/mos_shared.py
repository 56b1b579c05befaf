"""The PESQ-labelled pairs of the shared reference set, which the call MOS is checked against and never fitted on.

The reference set's published PESQ pair (``audio/pesq``: speech and the same speech in babble at 0 dB), the
ViSQOL pairs (a transcoded and a badly degraded, misaligned clip with their references), and pjproject's codec
test input through the codecs its PESQ tests use (PCMA, PCMU, G.722, GSM), with each reference itself as a clean
case. Each pair is labelled by the ``pesq`` package (P.862 narrowband) at run time.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from callqa.audio.decode import decode_file
from callqa.audio.resample import resample

HERE = Path(__file__).resolve().parent


def _corpus():  # type: ignore[no-untyped-def]
    """``mos_corpus`` (the codec round trips and the PESQ labelling), loaded from beside this file."""
    if "mos_corpus" in sys.modules:
        return sys.modules["mos_corpus"]
    spec = importlib.util.spec_from_file_location("mos_corpus", HERE / "mos_corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mos_corpus"] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Pair:
    name: str
    degraded: np.ndarray  # float32 mono
    sample_rate: int
    pesq_nb: float


def _mono16(testdata: Path, name: str) -> np.ndarray:
    d = decode_file(testdata / name, 3600)
    return resample(d.samples.mean(axis=0), d.sample_rate, 16000).astype(np.float64)


def pairs(testdata: Path) -> list[Pair]:
    corpus = _corpus()
    out = []
    for ref_name, deg_name in [
        ("audio/pesq/speech.wav", "audio/pesq/speech_bab_0dB.wav"),
        ("audio/visqol/clean_speech_CA01_01.wav", "audio/visqol/clean_speech_transcoded_CA01_01.wav"),
        ("audio/visqol/alignment_reference.wav", "audio/visqol/alignment_degraded.wav"),
    ]:
        ref, deg = _mono16(testdata, ref_name), _mono16(testdata, deg_name)
        out.append(Pair(Path(ref_name).name, ref.astype(np.float32), 16000, corpus.pesq_scores(ref, ref, 16000)[0]))
        out.append(Pair(Path(deg_name).name, deg.astype(np.float32), 16000, corpus.pesq_scores(ref, deg, 16000)[0]))
    ref = _mono16(testdata, "audio/pjproject/input.8.wav")
    for codec in ("pcm_alaw", "pcm_mulaw", "g722", "gsm"):
        y, sr = corpus.codec_roundtrip(ref, 16000, codec)
        out.append(Pair(f"input.8.wav {codec}", y.astype(np.float32), sr, corpus.pesq_scores(ref, y, sr)[0]))
    return out
