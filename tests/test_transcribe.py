"""Transcription against the shared reference transcripts, compared with faster-whisper run directly."""

from __future__ import annotations

import csv
import subprocess
from functools import lru_cache
from pathlib import Path

import jiwer
import numpy as np
import pytest
from conftest import EXAMPLE_TURNS, TESTDATA, write_wav

from callqa import model_loaders
from callqa.audio.decode import decode_file
from callqa.audio.resample import resample
from callqa.config import AnalysisSettings, Settings
from callqa.service.recordings import analyze_recording
from callqa.speech.transcribe import pack, pieces

REPO = Path(__file__).resolve().parents[1]
NORMALISE = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(),
                           jiwer.Strip(), jiwer.ReduceToListOfListOfWords()])  # fmt: skip


def wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(reference, hypothesis or "<empty>", reference_transform=NORMALISE,
                           hypothesis_transform=NORMALISE))  # fmt: skip


def rows() -> list[dict[str, str]]:
    table = TESTDATA / "tables" / "transcripts.tsv"
    if not table.is_file():
        return []
    with open(table, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@lru_cache
def direct(path: Path, channel: str) -> str:
    """faster-whisper with the same model, straight on the whole file (or one channel of it)."""
    audio = decode_file(path, 3600)
    x = audio.samples[{"left": 0, "right": 1}[channel]] if channel in ("left", "right") else audio.samples.mean(0)
    segments, _ = model_loaders.whisper().transcribe(resample(x, audio.sample_rate, 16000), language="en", beam_size=5)
    return " ".join(s.text.strip() for s in segments)


def settings(tmp: Path, **analysis: object) -> Settings:
    return Settings(
        db=tmp / "s.sqlite3", analysis=AnalysisSettings(nisqa=False, dnsmos=False, transcribe=True, **analysis)
    )  # type: ignore[arg-type]


@pytest.mark.parametrize("row", rows(), ids=lambda r: f"{Path(r['local_path']).name}:{r['channel']}")
def test_wer_no_worse_than_faster_whisper_directly(row: dict[str, str], testdata: Path, tmp_path: Path) -> None:
    path = testdata / row["local_path"]
    source = path
    if row["channel"] == "mono-mix":  # the reference is of both channels mixed: analyse that mix, one leg
        audio = decode_file(path, 3600)
        source = write_wav(tmp_path / "mix.wav", audio.samples.mean(0), audio.sample_rate)
    report, _ = analyze_recording([source], settings(tmp_path))
    leg = {"left": "left", "right": "right"}.get(row["channel"], "mixed")
    ours = " ".join(u.text for u in report.transcript if u.leg == leg)
    reference_wer, ours_wer = (
        wer(row["reference_transcript"], direct(path, row["channel"])),
        wer(row["reference_transcript"], ours),
    )
    print(f"{path.name} {row['channel']}: ours {ours_wer:.3f} direct {reference_wer:.3f} | {ours}")
    assert ours_wer <= reference_wer + 1e-9, (ours, direct(path, row["channel"]))
    assert ours_wer <= 0.5  # tiny.en on read speech: sanity bound


def test_speech_buried_in_babble_is_not_transcribed(testdata: Path, tmp_path: Path) -> None:
    """Speech at 0 dB SNR in babble (the PESQ test file): Whisper's guesses are too uncertain to keep."""
    report, _ = analyze_recording([testdata / "audio/pesq/speech_bab_0dB.wav"], settings(tmp_path))
    assert report.transcript == [] and any(f.code == "no_transcript" for f in report.findings)


def test_stereo_channels_are_two_speakers_with_their_words(testdata: Path, tmp_path: Path) -> None:
    report, _ = analyze_recording([testdata / "audio/faster_whisper/stereo_diarization.wav"], settings(tmp_path))
    by_leg = {leg: " ".join(u.text for u in report.transcript if u.leg == leg) for leg in ("left", "right")}
    assert wer("He began a confused complaint against the wizard, who had vanished behind the curtain on the left.",
               by_leg["left"]) == 0.0  # fmt: skip
    assert wer("The horizon seems extremely distant.", by_leg["right"]) == 0.0
    for u in report.transcript:
        assert u.words and all(u.start_s - 0.05 <= w.start_s <= w.end_s <= u.end_s + 0.05 for w in u.words)


SCRIPT = EXAMPLE_TURNS  # (start second, speaker, text) of the bundled example call


def test_example_call_dialogue_in_order_with_speakers(tmp_path: Path) -> None:
    """The bundled call (made from the script above): each turn on the right leg at the right time."""
    ex = REPO / "examples"
    report, _ = analyze_recording([ex / "call-agent.wav", ex / "call-customer.wav"], settings(tmp_path))
    assert [u.leg for u in report.transcript] == [r for _, r, _ in SCRIPT]
    for u, (t, _, _) in zip(report.transcript, SCRIPT, strict=True):
        assert abs(u.start_s - t) < 0.5, (u.start_s, t)
    for u, (_, _, text) in zip(report.transcript, SCRIPT, strict=True):
        assert wer(text, u.text) <= 0.35, (text, u.text)  # synthetic speech through G.711 at 8 kHz
    conv = report.conversation
    assert conv is not None and conv.turns == 6 and conv.overtalk_count == 0
    assert conv.longest_silence_s == pytest.approx(13.1, abs=0.3)  # the scripted dead air
    agent, customer = conv.sides
    assert agent.talk_ratio > customer.talk_ratio and agent.turns == customer.turns == 3
    assert agent.words == sum(len(u.words) for u in report.transcript if u.leg == "agent")
    assert 100 < agent.words_per_minute < 250  # type: ignore[operator]
    assert report.models["whisper"].startswith("tiny.en") and report.timings.transcribe_s > 0


def _tones(rate: int, seconds: float, freqs: list[tuple[float, float]], on: float, off: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    x = np.zeros_like(t)
    period = on + off
    for i, (f1, f2) in enumerate(freqs * int(seconds / period + 1)):
        a, b = int(i * period * rate), int((i * period + on) * rate)
        if a >= t.size:
            break
        x[a:b] = 0.25 * (np.sin(2 * np.pi * f1 * t[a:b]) + np.sin(2 * np.pi * f2 * t[a:b]))
    return x


@pytest.mark.parametrize("kind", ["silence", "noise", "dtmf", "music", "german"])
def test_no_invented_words(kind: str, tmp_path: Path) -> None:
    rate, seconds = 8000, 20.0
    rng = np.random.default_rng(3)
    n = int(rate * seconds)
    if kind == "german":  # a language the English-only model does not know: nothing, rather than made-up English
        said = tmp_path / "said.wav"
        subprocess.run(
            [
                "espeak-ng",
                "-v",
                "de",
                "-s",
                "150",
                "-w",
                str(said),
                "Guten Tag, ich möchte meine "
                "Rechnung bezahlen. Können Sie mir bitte helfen? Vielen Dank für Ihre Geduld.",
            ],
            check=True,
        )
        audio = decode_file(said, 3600)
        x = np.zeros(n)
        y = resample(audio.samples[0], audio.sample_rate, rate)[: n - rate]
        x[rate : rate + y.size] = y
    elif kind == "silence":
        x = np.zeros(n)
    elif kind == "noise":
        x = 0.1 * rng.standard_normal(n)
    elif kind == "dtmf":
        x = _tones(rate, seconds, [(697, 1209), (770, 1336), (852, 1477), (941, 1633)], 0.2, 0.1)
    else:  # a melody of chords with harmonics, like hold music
        t = np.arange(n) / rate
        notes = [261.6, 329.6, 392.0, 523.3, 392.0, 329.6]
        f = np.repeat(notes, int(np.ceil(n / len(notes))))[:n]
        x = sum(0.15 / k * np.sin(2 * np.pi * k * np.cumsum(f) / rate) for k in (1, 2, 3)) * (0.6 + 0.4 * np.sin(t))
    path = write_wav(tmp_path / f"{kind}.wav", np.stack([x, 0.5 * x[::-1]]), rate)
    report, _ = analyze_recording([path], settings(tmp_path))
    words = " ".join(u.text for u in report.transcript)
    speech = sum(leg.speech_s for leg in report.legs)
    assert words == "", f"{kind}: invented {words!r}"
    if speech >= 2.0:  # the VAD heard something: the report says nothing was recognised
        assert any(f.code == "no_transcript" for f in report.findings)


def test_speech_is_packed_into_whisper_windows() -> None:
    speech = [(0.0, 4.0), (5.0, 9.0), (20.0, 25.0), (25.5, 70.0)]
    spans = pieces(speech, pad_s=0.4, duration_s=80.0)
    assert spans[:3] == [(0.0, 4.4), (4.6, 9.4), (19.6, 49.6)] and spans[-1] == (49.6, 70.4)
    windows = pack(0, spans, gap_s=0.6)
    assert all(w.length_s <= 30.0 for w in windows)
    assert [len(w.pieces) for w in windows] == [2, 1, 1]  # 4.4 + 0.6 + 4.8 s, then the long segment split
    w = windows[0]
    assert w.pieces == [(0.0, 0.0, 4.4), (5.0, 4.6, pytest.approx(4.8))]
    assert w.to_leg(6.0, w.piece_at(6.0)) == 5.6  # window time -> leg time
    assert w.piece_at(4.6) == 0 and w.piece_at(4.8) == 1  # the gap is shared between its neighbours
    assert sum(n for w in windows for _, _, n in w.pieces) >= sum(b - a for a, b in speech)
    assert pack(0, [], 0.6) == []
