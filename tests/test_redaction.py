"""Redaction of transcripts and of the kept audio."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from callqa.audio.decode import decode_file
from callqa.config import AnalysisSettings, Settings
from callqa.report import Utterance, Word
from callqa.service.recordings import analyze_recording, leg_audio_path
from callqa.speech.redaction import TONE_HZ, redact_utterance, spoken_number_runs


def utterance(text: str) -> Utterance:
    words = [Word(word=w, start_s=i * 0.5, end_s=i * 0.5 + 0.4, probability=0.9) for i, w in enumerate(text.split())]
    return Utterance(leg="customer", start_s=0.0, end_s=words[-1].end_s, text=text, words=words, confidence=0.9)


def test_spoken_and_written_numbers() -> None:
    said = "my card is 4539. One 488, zero three four three six four six seven. Thanks."
    assert spoken_number_runs(said.split()) == [(3, 13, "[CARD]")]
    misheard = "four five three nine one four eight eight zero three four three six four six eight"
    assert spoken_number_runs(misheard.split()) == [(0, 15, "[NUMBER]")]  # 16 digits failing Luhn: not a card
    assert spoken_number_runs(["I", "waited", "for", "two", "hours", "on", "the", "3rd"]) == []
    u = redact_utterance(utterance(said))
    assert u.text == "my card is [CARD] Thanks." and "4539." not in [w.word for w in u.words]
    assert [(s.start_s, s.end_s) for s in u.redacted] == [(1.5, 6.9)]
    mail = redact_utterance(utterance("write to jane.doe@example.com or call +44 20 7946 0958 today"))
    assert mail.text == "write to [EMAIL] or call [PHONE] today" and len(mail.redacted) == 2
    plain = utterance("nothing to hide here")
    assert redact_utterance(plain) == plain


def test_card_read_out_is_masked_in_transcript_and_audio(tmp_path: Path) -> None:
    """A customer reads a card number (espeak-ng); the stored transcript and the kept audio carry no trace."""
    rate = 8000
    said = tmp_path / "said.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "140", "-w", str(said),
                    "Hello, my card number is 4 5 3 9, 1 4 8 8, 0 3 4 3, 6 4 6 7. Thanks."], check=True)  # fmt: skip
    x = decode_file(said, 3600)
    from callqa.audio.resample import resample

    customer = resample(x.samples[0], x.sample_rate, rate)
    agent = np.zeros_like(customer)
    for name, y in (("agent", agent), ("customer", customer)):
        with wave.open(str(tmp_path / f"{name}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes((np.clip(y, -1, 1) * 32767).astype("<i2").tobytes())
    settings = Settings(db=tmp_path / "s.sqlite3", analysis=AnalysisSettings(
        nisqa=False, dnsmos=False, transcribe=True, redact_audio=True))  # fmt: skip
    report, _ = analyze_recording([tmp_path / "agent.wav", tmp_path / "customer.wav"], settings,
                              audio_dir=tmp_path / "audio")  # fmt: skip
    [u] = [u for u in report.transcript if u.leg == "customer"]
    assert "[CARD]" in u.text and not any(ch.isdigit() for ch in u.text), u.text
    assert not any(ch.isdigit() for w in u.words for ch in w.word)
    [span] = u.redacted
    kept = decode_file(leg_audio_path(tmp_path / "audio", report.id, 1, "customer"), 3600).samples[0]
    piece = kept[int(span.start_s * rate) + 80 : int(span.end_s * rate) - 80]
    spectrum = np.abs(np.fft.rfft(piece))
    assert abs(np.argmax(spectrum) * rate / piece.size - TONE_HZ) < 5  # a pure 1 kHz tone
    assert 20 * np.log10(np.sqrt(np.mean(piece**2))) == pytest.approx(-20.0, abs=0.5)
    before = kept[: int(span.start_s * rate) - 800]
    diff = np.abs(before - customer[: before.size])
    assert diff.max() < 4 / 32767, (diff.max(), np.argmax(diff) / rate)  # the rest untouched (16-bit twice)
