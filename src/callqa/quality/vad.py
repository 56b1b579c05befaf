"""Speech activity per leg with Silero VAD (ONNX, the model faster-whisper ships; 16 kHz input)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from callqa import model_loaders

VAD_RATE = 16000


@dataclass(frozen=True)
class VadOptions:
    """Silero's own defaults, except a 100 ms minimum silence so short pauses split turns."""

    threshold: float = 0.5
    min_speech_ms: int = 250
    min_silence_ms: int = 100
    speech_pad_ms: int = 30

    @property
    def min_speech_s(self) -> float:
        return self.min_speech_ms / 1000

    @property
    def min_silence_s(self) -> float:
        return self.min_silence_ms / 1000

    @property
    def pad_s(self) -> float:
        return self.speech_pad_ms / 1000


@dataclass(frozen=True)
class VadResult:
    segments: list[tuple[float, float]]
    speech_s: float
    options: VadOptions


FRAME = 512  # Silero's window at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous window the model sees with each window
# A whole leg is run through the model in blocks of this many windows (8.2 s): with the matrix-product graph,
# blocks of 256 took half the CPU time of blocks of 2048 (whose intermediates no longer fit in the caches) and a
# sixth of the memory (two legs at once, 3-minute real legs: 0.43 s vs 0.85 s CPU, 34 MB vs 222 MB peak growth)
BLOCK_FRAMES = 256


class StreamingVad:
    """Speech probability per 32 ms window, fed in chunks of any size, the LSTM state and the context carried
    between chunks: the same probabilities as faster-whisper's one-shot ``SileroVADModel.__call__`` (which
    carries them between its own batches), without holding copies of the whole input."""

    def __init__(self, min_frames: int = 1, cache_dir: Path | None = None) -> None:
        self.min_frames = min_frames  # run the model only once this many windows are waiting (fewer, larger runs)
        self.session = model_loaders.silero_vad_session(cache_dir)  # cache_dir: see silero_vad_session
        self.h = np.zeros((1, 1, 128), np.float32)
        self.c = np.zeros((1, 1, 128), np.float32)
        self.context = np.zeros(CONTEXT, np.float32)
        self.pending = np.zeros(0, np.float32)

    def feed(self, x16: np.ndarray) -> np.ndarray:
        self.pending = np.concatenate([self.pending, x16.astype(np.float32)])
        n = self.pending.size // FRAME
        if n < self.min_frames:
            return np.zeros(0, np.float32)
        frames = self.pending[: n * FRAME].reshape(n, FRAME)
        self.pending = self.pending[n * FRAME :]
        contexts = np.vstack([self.context[None], frames[:-1, -CONTEXT:]])
        self.context = frames[-1, -CONTEXT:].copy()
        out, self.h, self.c = self.session.run(None, {"input": np.hstack([contexts, frames]), "h": self.h,
                                                      "c": self.c})  # fmt: skip
        return np.asarray(out, np.float32).reshape(-1)


def speech_probabilities(audio16k: np.ndarray, cache_dir: Path | None = None) -> np.ndarray:
    """One probability per 32 ms window of the whole input, block by block; the input is zero-padded to the
    next window, by a whole window when it ends on a boundary (as faster-whisper pads it)."""
    vad = StreamingVad(cache_dir=cache_dir)
    step = BLOCK_FRAMES * FRAME
    probs = [vad.feed(audio16k[i : i + step]) for i in range(0, audio16k.size, step)]
    probs.append(vad.feed(np.zeros(FRAME - vad.pending.size, np.float32)))
    return np.concatenate(probs)


def detect_speech(audio16k: np.ndarray, options: VadOptions, cache_dir: Path | None = None) -> VadResult:
    """Speech segments (seconds) in 16 kHz mono audio (``cache_dir``: the models directory, where the faster
    graph of the model is kept, see ``model_loaders.silero_vad_session``)."""
    if audio16k.size < FRAME:
        return VadResult([], 0.0, options)
    stamps = speech_timestamps(speech_probabilities(audio16k, cache_dir), audio16k.size, options)
    segments = [(a / VAD_RATE, b / VAD_RATE) for a, b in stamps]
    return VadResult(segments, sum(e - s for s, e in segments), options)


def speech_timestamps(probs: np.ndarray, n_samples: int, options: VadOptions) -> list[tuple[int, int]]:
    """Speech (start, end) in samples from per-window probabilities: the hysteresis, minimum durations and
    padding of faster-whisper's ``get_speech_timestamps`` (1.2.1, without a maximum speech duration), which
    needs the whole input in memory at once. Tests compare the two on real recordings."""
    threshold = options.threshold
    neg_threshold = max(threshold - 0.15, 0.01)
    min_speech = VAD_RATE * options.min_speech_ms / 1000
    min_silence = VAD_RATE * options.min_silence_ms / 1000
    pad = VAD_RATE * options.speech_pad_ms / 1000
    speeches: list[list[int]] = []
    start, temp_end, triggered = 0, 0, False
    for i, p in enumerate(probs.tolist()):
        at = FRAME * i
        if p >= threshold and temp_end:
            temp_end = 0
        if p >= threshold and not triggered:
            triggered, start = True, at
            continue
        if p < neg_threshold and triggered:
            if not temp_end:
                temp_end = at
            if at - temp_end < min_silence:
                continue
            if temp_end - start > min_speech:
                speeches.append([start, temp_end])
            temp_end, triggered = 0, False
    if triggered and n_samples - start > min_speech:
        speeches.append([start, n_samples])
    for i, speech in enumerate(speeches):  # padding, split evenly where two segments are closer than 2 pads
        if i == 0:
            speech[0] = int(max(0, speech[0] - pad))
        if i != len(speeches) - 1:
            silence = speeches[i + 1][0] - speech[1]
            if silence < 2 * pad:
                speech[1] += int(silence // 2)
                speeches[i + 1][0] = int(max(0, speeches[i + 1][0] - silence // 2))
            else:
                speech[1] = int(min(n_samples, speech[1] + pad))
                speeches[i + 1][0] = int(max(0, speeches[i + 1][0] - pad))
        else:
            speech[1] = int(min(n_samples, speech[1] + pad))
    return [(a, b) for a, b in speeches]


def speech_overlap(starts: np.ndarray, ends: np.ndarray, speech: list[tuple[float, float]]) -> np.ndarray:
    """Seconds of speech inside each window [starts[i], ends[i]] (seconds), for choosing the windows a model
    scores. The segments are added in order, as a Python ``sum`` over them would, for every window at once."""
    starts, ends = np.asarray(starts, np.float64), np.asarray(ends, np.float64)
    cover = np.zeros(starts.shape, np.float64)
    for a, b in speech:
        cover += np.maximum(0.0, np.minimum(ends, b) - np.maximum(starts, a))
    return cover
