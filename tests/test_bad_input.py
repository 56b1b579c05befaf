"""Bad input gets a clear error, never a crash or a hang."""

from __future__ import annotations

import shutil
import subprocess
import tracemalloc
from pathlib import Path

import calls
import numpy as np
import pytest
from conftest import write_wav

from callqa.audio.decode import decode_file
from callqa.config import Settings
from callqa.errors import DecodeError, InputError, LimitError
from callqa.service.recordings import analyze_recording


def test_missing_file(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(InputError, match="not found"):
        analyze_recording([tmp_path / "nope.wav"], settings)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a regular file"):
        decode_file(tmp_path, 60)


def test_empty_file(tmp_path: Path, settings: Settings) -> None:
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(DecodeError, match="empty file"):
        analyze_recording([tmp_path / "empty.wav"], settings)


def test_non_audio_bytes(tmp_path: Path, settings: Settings) -> None:
    f = tmp_path / "notes.wav"
    f.write_bytes(b"this is a text file, not audio\n" * 50)
    with pytest.raises(DecodeError):
        analyze_recording([f], settings)
    g = tmp_path / "random.mp3"
    g.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    with pytest.raises(DecodeError):
        analyze_recording([g], settings)


def test_truncated_wav_keeps_what_decodes(tmp_path: Path, settings: Settings) -> None:
    data = write_wav(tmp_path / "speech.wav", calls.leg(4.2, [0.2]), calls.RATE).read_bytes()
    f = tmp_path / "cut.wav"
    f.write_bytes(data[: 44 + (len(data) - 44) // 2])  # header says 4.2 s, half the samples are there
    report, _ = analyze_recording([f], settings)
    assert report.legs[0].duration_s == pytest.approx(2.1, abs=0.01)
    header_only = tmp_path / "header.wav"
    header_only.write_bytes(data[:44])
    with pytest.raises(DecodeError):
        analyze_recording([header_only], settings)


def test_zero_second_leg(tmp_path: Path, settings: Settings) -> None:
    f = write_wav(tmp_path / "zero.wav", np.zeros(0), 8000)
    with pytest.raises(DecodeError, match="no audio samples"):
        analyze_recording([f], settings)


def test_very_short_leg_is_analysed(tmp_path: Path, settings: Settings) -> None:
    f = write_wav(tmp_path / "blip.wav", np.full(40, 0.1), 8000)  # 5 ms
    report, _ = analyze_recording([f], settings)
    assert report.legs[0].duration_s == pytest.approx(0.005)
    assert report.legs[0].speech_segments == []


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is installed by .ci/run")
def test_three_hour_leg_is_refused_quickly_with_bounded_memory(tmp_path: Path, settings: Settings) -> None:
    f = tmp_path / "3h.flac"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "10800",
                    "-c:a", "flac", str(f)], check=True, timeout=120)  # fmt: skip
    tracemalloc.start()
    with pytest.raises(LimitError, match="limit"):
        analyze_recording([f], settings)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 50 * 1024 * 1024  # refused from the header, not after decoding 3 hours


def test_limit_enforced_while_decoding(tmp_path: Path) -> None:
    # a raw stream has no declared duration: the limit is enforced as samples arrive
    f = tmp_path / "speech.gsm"
    a, b = calls.conversation(60.0)
    src = write_wav(tmp_path / "speech.wav", calls.leg(60, sorted(a + b)), calls.RATE)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), "-ar", "8000",
                    "-ac", "1", "-c:a", "libgsm", "-f", "gsm", str(f)], check=True, timeout=60)  # fmt: skip
    with pytest.raises(LimitError):
        decode_file(f, max_duration_s=10)
    assert decode_file(f, max_duration_s=120).duration_s == pytest.approx(60, abs=0.1)


def test_three_channels_refused(tmp_path: Path, settings: Settings) -> None:
    f = write_wav(tmp_path / "three.wav", np.zeros((3, 800)) + 0.01, 8000)
    with pytest.raises(InputError, match="3 channels"):
        analyze_recording([f], settings)


def test_too_many_files(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(InputError, match="two legs"):
        analyze_recording([tmp_path / "a.wav"] * 3, settings)
