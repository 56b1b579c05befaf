"""Speech activity per leg with Silero VAD (ONNX, the model faster-whisper ships; 16 kHz input)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from callqa import models

VAD_RATE = 16000


@dataclass(frozen=True)
class VadOptions:
    """Silero's own defaults, except a 100 ms minimum silence so short pauses split turns."""

    threshold: float = 0.5
    min_speech_ms: int = 250
    min_silence_ms: int = 100
    speech_pad_ms: int = 30


@dataclass(frozen=True)
class VadResult:
    segments: list[tuple[float, float]]
    speech_s: float
    options: VadOptions


def detect_speech(audio16k: np.ndarray, options: VadOptions) -> VadResult:
    """Speech segments (seconds) in 16 kHz mono audio."""
    if audio16k.size < 512:
        return VadResult([], 0.0, options)
    from faster_whisper.vad import VadOptions as FwOptions
    from faster_whisper.vad import get_speech_timestamps

    models.silero_vad()  # load (once) through the registry so a missing package is a ModelError
    stamps = get_speech_timestamps(
        np.ascontiguousarray(audio16k, dtype=np.float32),
        FwOptions(
            threshold=options.threshold,
            min_speech_duration_ms=options.min_speech_ms,
            min_silence_duration_ms=options.min_silence_ms,
            speech_pad_ms=options.speech_pad_ms,
        ),
        sampling_rate=VAD_RATE,
    )
    segments = [(s["start"] / VAD_RATE, s["end"] / VAD_RATE) for s in stamps]
    return VadResult(segments, sum(e - s for s, e in segments), options)
