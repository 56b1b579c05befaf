"""Plain WAV files read directly give exactly FFmpeg's samples; other files go to FFmpeg."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from callqa.audio import decode, riff
from callqa.errors import LimitError

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is installed by .ci/run")


def with_ffmpeg(path: Path, monkeypatch: pytest.MonkeyPatch) -> decode.DecodedAudio:
    with monkeypatch.context() as m:
        m.setattr(decode, "read_wav", lambda *_: None)
        return decode.decode_file(path, 3600)


def assert_same(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert riff.read_wav(path, 3600) is not None, f"{path} should be read directly"
    ours, theirs = decode.decode_file(path, 3600), with_ffmpeg(path, monkeypatch)
    assert (ours.sample_rate, ours.codec, ours.samples.dtype) == (theirs.sample_rate, theirs.codec, np.float32)
    assert np.array_equal(ours.samples, theirs.samples)


def test_shared_wav_recordings_equal_ffmpeg(testdata: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = sorted((testdata / "audio").rglob("*.wav"))
    assert len(files) >= 12  # mono and stereo, 8 to 48 kHz
    for f in files:
        assert_same(f, monkeypatch)


@needs_ffmpeg
@pytest.mark.parametrize("codec", ["pcm_mulaw", "pcm_alaw", "pcm_s16le"])
def test_g711_and_pcm_written_by_ffmpeg(testdata: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        codec: str) -> None:  # fmt: skip
    """FFmpeg's own WAV files (with its LIST chunk before the data), mono and stereo, whole and truncated."""
    src = testdata / "audio/faster_whisper/stereo_diarization.wav"
    for channels in (1, 2):
        f = tmp_path / f"{codec}-{channels}.wav"
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), "-ar", "8000", "-ac", str(channels), "-c:a", codec,
                        str(f)], check=True, timeout=60)  # fmt: skip
        assert b"LIST" in f.read_bytes()[:200]
        assert_same(f, monkeypatch)
        cut = tmp_path / f"cut-{codec}-{channels}.wav"
        cut.write_bytes(f.read_bytes()[:-3001])  # a truncated recording, ending inside a frame
        assert_same(cut, monkeypatch)
        assert decode.decode_file(cut, 3600).codec == codec


def _wav(path: Path, tag: int, bits: int, payload: bytes, channels: int = 1, extensible_tag: int | None = None) -> Path:
    align = channels * bits // 8
    if extensible_tag is None:
        fmt = struct.pack("<HHIIHH", tag, channels, 8000, 8000 * align, align, bits)
    else:
        guid = struct.pack("<H", extensible_tag) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt = struct.pack("<HHIIHHHHI", tag, channels, 8000, 8000 * align, align, bits, 22, bits, 4) + guid
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(payload)) + payload
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def test_extensible_pcm_is_read_and_other_kinds_go_to_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pcm = (np.sin(np.arange(8000) / 5) * 12000).astype("<i2")
    ext = _wav(tmp_path / "ext.wav", riff.EXTENSIBLE, 16, pcm.tobytes(), extensible_tag=riff.PCM)
    assert_same(ext, monkeypatch)
    assert np.array_equal(decode.decode_file(ext, 60).samples[0], pcm / np.float32(32768))
    float_wav = _wav(tmp_path / "float.wav", 3, 32, (pcm / 32768).astype("<f4").tobytes())
    assert riff.read_wav(float_wav, 60) is None  # IEEE float: FFmpeg decodes it
    assert decode.decode_file(float_wav, 60).samples.shape == (1, 8000)
    assert riff.read_wav(_wav(tmp_path / "24.wav", riff.PCM, 24, b"\x00" * 300), 60) is None
    (tmp_path / "not.wav").write_bytes(b"RIFX" + b"\x00" * 100)
    assert riff.read_wav(tmp_path / "not.wav", 60) is None


def test_limit_is_checked_before_reading(tmp_path: Path) -> None:
    f = _wav(tmp_path / "long.wav", riff.ULAW, 8, b"\xff" * 8000 * 30)
    with pytest.raises(LimitError, match="lasts 30 s, over the 10 s limit"):
        decode.decode_file(f, 10)
    assert decode.decode_file(f, 30).duration_s == 30.0


def test_a_file_ending_inside_its_format_chunk_is_refused_clearly(tmp_path: Path) -> None:
    """Found by the atheris target: a fmt chunk that declares 16 bytes where the file has fewer. It is not
    read directly, and decoding it ends in a typed error (exit 2 / HTTP 422), not a struct error."""
    from callqa.errors import InputError

    path = tmp_path / "cut.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", 100) + b"WAVEfmt " + struct.pack("<I", 16) + b"\x01\x00\x01\x00")
    assert riff.read_wav(path, 3600) is None
    with pytest.raises(InputError):
        decode.decode_file(path, 3600)
