"""Recordings in, legs out: formats FFmpeg reads, two legs / stereo / mixed, roles, sample rates."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import calls
import numpy as np
import pytest
from conftest import write_wav

from callqa.config import Settings
from callqa.service.recordings import analyze_recording, infer_role, legs_from_files

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is installed by .ci/run")


def ffmpeg(src: Path, dst: Path, *args: str) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), *args, str(dst)], check=True, timeout=60)
    return dst


@needs_ffmpeg
@pytest.mark.parametrize(
    ("suffix", "args"),
    [
        (".wav", ["-ar", "8000", "-c:a", "pcm_mulaw"]),
        (".wav", ["-ar", "8000", "-c:a", "pcm_alaw"]),
        (".gsm", ["-ar", "8000", "-ac", "1", "-c:a", "libgsm"]),
        (".mp3", ["-ar", "8000", "-c:a", "libmp3lame", "-b:a", "32k"]),
        (".ogg", ["-c:a", "libvorbis"]),
        (".flac", ["-c:a", "flac"]),
        (".wav", ["-ar", "11025"]),
        (".wav", ["-ar", "44100"]),
    ],
)
def test_formats_decode_and_analyse(tmp_path: Path, settings: Settings, suffix: str, args: list[str]) -> None:
    src = write_wav(tmp_path / "speech.wav", calls.utterances(16000)[1][: int(4.2 * 16000)], 16000)  # 4.2 s
    f = ffmpeg(src, tmp_path / f"call{suffix}", *args)
    report, cached = analyze_recording([f], settings)
    (leg,) = report.legs
    assert not cached and leg.role == "mixed"
    assert leg.duration_s == pytest.approx(4.2, abs=0.08)  # codecs may pad a frame
    assert -30 < leg.levels.rms_dbfs < -15
    assert leg.speech_ratio > 0.6
    assert leg.mos.dnsmos is not None and 2.0 < leg.mos.dnsmos.ovrl < 4.5
    assert any("mixed recording" in w for w in report.warnings)


def test_stereo_gives_one_leg_per_channel(tmp_path: Path, settings: Settings) -> None:
    stereo = write_wav(tmp_path / "stereo.wav", np.vstack([calls.leg(12, [0.5]), calls.leg(12, [6.0], seed=1)]),
                       calls.RATE)  # fmt: skip
    legs, warnings = legs_from_files([stereo], settings)
    assert [(leg.role, leg.channel) for leg in legs] == [("left", 0), ("right", 1)]
    assert not warnings
    assert not np.array_equal(legs[0].samples, legs[1].samples)
    named, _ = legs_from_files([stereo], settings, ["agent", "customer"])
    assert [leg.role for leg in named] == ["agent", "customer"]


def test_stereo_with_identical_channels_is_mixed(tmp_path: Path, settings: Settings) -> None:
    x = calls.leg(5, [0.5])
    f = write_wav(tmp_path / "dual-mono.wav", np.vstack([x, x]), calls.RATE)
    legs, warnings = legs_from_files([f], settings)
    assert [leg.role for leg in legs] == ["mixed"] and warnings


def test_two_files_are_two_legs_with_roles_from_names(tmp_path: Path, settings: Settings) -> None:
    a = write_wav(tmp_path / "agent-in.wav", calls.leg(5, [0.5]), calls.RATE)
    c = write_wav(tmp_path / "customer-out.wav", calls.leg(5, [1.0], seed=1), calls.RATE)
    legs, warnings = legs_from_files([a, c], settings)
    assert [leg.role for leg in legs] == ["agent", "customer"] and not warnings
    x = write_wav(tmp_path / "x-in.wav", calls.leg(5, [0.5]), calls.RATE)
    y = write_wav(tmp_path / "x-out.wav", calls.leg(5, [0.5]), calls.RATE)
    assert [leg.role for leg in legs_from_files([x, y], settings)[0]] == ["caller", "callee"]


def test_infer_role() -> None:
    assert infer_role("/r/20240101-agent_42.wav", "caller") == "agent"
    assert infer_role("CUSTOMER.mp3", "callee") == "customer"
    assert infer_role("1234-in.wav", "caller") == "caller"


def test_bundled_example_is_a_two_leg_call_with_dead_air(settings: Settings) -> None:
    examples = Path(__file__).resolve().parents[1] / "examples"
    report, _ = analyze_recording([examples / "call-agent.wav", examples / "call-customer.wav"], settings)
    assert [leg.role for leg in report.legs] == ["agent", "customer"]
    assert all(leg.codec == "pcm_mulaw" and leg.sample_rate == 8000 for leg in report.legs)
    assert [f.code for f in report.findings] == ["dead_air"]
    assert report.verdict == "degraded"
