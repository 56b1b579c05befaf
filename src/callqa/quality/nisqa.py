"""NISQA v2 (Mittag et al., Interspeech 2021): MOS plus noisiness, coloration, discontinuity and loudness.

An independent implementation of the published NISQA_DIM architecture, written to load the upstream
checkpoint (``nisqa.tar``; CC BY-NC-SA weights, never bundled): a 6-layer CNN over 15-frame log-mel segments,
two self-attention layers, and one attention-pooling head per output. Needs the optional ``nisqa`` extra
(PyTorch). Features follow the upstream recipe at the file's native rate: magnitude mel spectrogram, n_fft 4096,
20 ms Hann window, 10 ms hop, 48 Slaney mel bands up to 20 kHz, 20*log10 with a 1e-4 floor and 80 dB range.
A pass takes at most 1300 segments (~52 s); longer legs are scored on windows over speech and averaged.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from callqa.digest import sha256_file
from callqa.errors import ModelError
from callqa.quality.dnsmos import mel_filterbank
from callqa.report import Nisqa, NisqaWindow

UPSTREAM_URL = "https://github.com/gabrielmittag/NISQA/raw/master/weights/nisqa.tar"
UPSTREAM_SHA256 = "7ec4cf937514dd3f8860b21e66fabd8ca87a168572675ef8d979c4c4ad2e805c"
N_FFT = 4096
N_MELS = 48
FMAX = 20000.0
SEG_LEN = 15
SEG_HOP = 4
MAX_SEGMENTS = 1300
DIMENSIONS = ("mos", "noisiness", "discontinuity", "coloration", "loudness")  # checkpoint output order


@dataclass(frozen=True)
class NisqaScores:
    mos: float
    noisiness: float
    discontinuity: float
    coloration: float
    loudness: float


def unavailable_reason(weights: Path | None) -> str | None:
    """Why NISQA cannot run (missing extra or weights), or None when it can."""
    if importlib.util.find_spec("torch") is None:
        return "PyTorch is not installed (install the 'nisqa' extra)"
    if weights is None:
        return "no NISQA weights configured (run 'callqa models fetch nisqa' or pass --nisqa-weights PATH)"
    if not Path(weights).is_file():
        return f"NISQA weights not found at {weights}"
    return None


def version(weights: Path | None) -> str:
    digest = file_sha256(Path(weights))[:12] if weights and Path(weights).is_file() else "none"
    return f"NISQA_DIM v2 (weights sha256 {digest})"


file_sha256 = lru_cache(sha256_file)  # weights do not change under a running process


def melspec_db(x: np.ndarray, sr: int) -> np.ndarray:
    """Log-mel spectrogram (48, frames) as NISQA was trained on (centred frames, reflect padding)."""
    hop, win = int(sr * 0.01), int(sr * 0.02)
    pad = N_FFT // 2
    if x.size <= pad:
        raise ValueError("audio too short for NISQA")
    xp = np.pad(x.astype(np.float64), (pad, pad), mode="reflect")
    n_frames = 1 + (xp.size - N_FFT) // hop
    frames = np.lib.stride_tricks.as_strided(
        xp, shape=(n_frames, N_FFT), strides=(xp.strides[0] * hop, xp.strides[0]), writeable=False
    )
    window = np.zeros(N_FFT)
    left = (N_FFT - win) // 2
    window[left : left + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    magnitude = np.abs(np.fft.rfft(frames * window, axis=1))
    mel = magnitude @ mel_filterbank(sr, N_FFT, N_MELS, FMAX).T
    db = 20.0 * np.log10(np.maximum(mel, 1e-4))
    return np.maximum(db, db.max() - 80.0).T


def segments(spec: np.ndarray) -> np.ndarray:
    """Overlapping 15-frame segments every 4 frames: (n, 1, 48, 15)."""
    n = spec.shape[1] - (SEG_LEN - 1)
    if n < 1:
        raise ValueError("audio too short for NISQA (needs 15 frames)")
    idx = np.arange(0, n, SEG_HOP)[:, None] + np.arange(SEG_LEN)[None, :]
    return np.ascontiguousarray(spec[:, idx].transpose(1, 0, 2)[:, None], dtype=np.float32)


def _build_model() -> Any:
    """NISQA_DIM as torch modules whose parameter names match the upstream checkpoint."""
    import torch
    from torch import nn

    class Cnn(nn.Module):
        """Six 3x3 conv layers with batch norm; adaptive max pooling to 24x7, 12x5, then 6x3; output 64*6."""

        def __init__(self) -> None:
            super().__init__()
            chans = [(1, 16), (16, 32), (32, 64), (64, 64), (64, 64), (64, 64)]
            for i, (cin, cout) in enumerate(chans, start=1):
                kernel, padding = ((3, 3), (1, 1)) if i < 6 else ((3, 3), (1, 0))
                setattr(self, f"conv{i}", nn.Conv2d(cin, cout, kernel, padding=padding))
                setattr(self, f"bn{i}", nn.BatchNorm2d(cout))

        def block(self, i: int, x: Any) -> Any:
            return torch.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))

        def forward(self, x: Any) -> Any:
            pool = nn.functional.adaptive_max_pool2d
            x = pool(self.block(1, x), (24, 7))
            x = pool(self.block(2, x), (12, 5))
            x = pool(self.block(4, self.block(3, x)), (6, 3))
            x = self.block(6, self.block(5, x))
            return x.flatten(1)  # (n, 64 * 6)

    class AttentionLayer(nn.Module):
        def __init__(self, d: int) -> None:
            super().__init__()
            self.self_attn = nn.MultiheadAttention(d, 1)
            self.linear1, self.linear2 = nn.Linear(d, d), nn.Linear(d, d)
            self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)

        def forward(self, x: Any) -> Any:  # x: (time, batch, d), post-norm transformer encoder layer
            x = self.norm1(x + self.self_attn(x, x, x, need_weights=False)[0])
            return self.norm2(x + self.linear2(torch.relu(self.linear1(x))))

    class TimeModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(384, 64)
            self.norm1 = nn.LayerNorm(64)
            self.layers = nn.ModuleList([AttentionLayer(64), AttentionLayer(64)])

        def forward(self, x: Any) -> Any:  # (batch, time, 384) -> (batch, time, 64)
            x = self.norm1(self.linear(x).transpose(0, 1))
            for layer in self.layers:
                x = layer(x)
            return x.transpose(0, 1)

    class AttentionPool(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear1, self.linear2, self.linear3 = nn.Linear(64, 128), nn.Linear(128, 1), nn.Linear(64, 1)

        def forward(self, x: Any) -> Any:  # (batch, time, 64) -> (batch, 1)
            weights = torch.softmax(self.linear2(torch.relu(self.linear1(x))), dim=1)
            return self.linear3((weights * x).sum(dim=1))

    class Wrap(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.model = inner

        def forward(self, *args: Any) -> Any:
            return self.model(*args)

    class NisqaDim(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cnn = Wrap(Cnn())
            self.time_dependency = Wrap(TimeModel())
            self.pool_layers = nn.ModuleList([Wrap(AttentionPool()) for _ in DIMENSIONS])

        def forward(self, segs: Any) -> Any:  # segs: (batch, time, 1, 48, 15), equal lengths
            b, t = segs.shape[:2]
            feats = self.cnn(segs.reshape(b * t, *segs.shape[2:])).reshape(b, t, -1)
            h = self.time_dependency(feats)
            return torch.cat([pool(h) for pool in self.pool_layers], dim=1)

    return NisqaDim()


@lru_cache
def load_model(weights: Path) -> Any:
    """The model with the checkpoint's weights, in eval mode; loaded once per process and path."""
    try:
        import torch
    except ImportError as exc:
        raise ModelError("NISQA needs PyTorch: install the 'nisqa' extra") from exc
    torch.set_num_threads(1)  # legs run in parallel threads, one core each
    try:
        checkpoint = torch.load(str(weights), map_location="cpu", weights_only=False)
        state = checkpoint["model_state_dict"]
        model = _build_model()
        model.load_state_dict({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")})
    except (OSError, KeyError, RuntimeError) as exc:
        raise ModelError(f"cannot load NISQA weights from {weights}: {exc}") from exc
    if checkpoint.get("args", {}).get("model") != "NISQA_DIM":
        raise ModelError(f"{weights} is not a NISQA_DIM checkpoint (need nisqa.tar, not the MOS-only model)")
    return model.eval()


def predict(batch: list[np.ndarray], weights: Path) -> list[NisqaScores]:
    """Scores for equal-length segment arrays (each (n, 1, 48, 15)), one forward pass."""
    import torch

    model = load_model(Path(weights))
    with torch.inference_mode():
        out = model(torch.from_numpy(np.stack(batch))).numpy()
    return [NisqaScores(*(float(v) for v in row)) for row in out]


def score_audio(x: np.ndarray, sr: int, weights: Path) -> NisqaScores:
    """One pass over the whole signal (at most ~52 s), as upstream scores a file."""
    segs = segments(melspec_db(x, sr))
    if segs.shape[0] > MAX_SEGMENTS:
        raise ValueError(f"{segs.shape[0]} segments exceed NISQA's {MAX_SEGMENTS}: window the audio")
    return predict([segs], weights)[0]


def speech_windows(
    duration_s: float, speech: list[tuple[float, float]], window_s: float, max_windows: int
) -> list[tuple[float, float]]:
    """Disjoint windows of ``window_s`` holding the most speech, at most ``max_windows``, in time order."""
    starts = np.arange(0.0, max(duration_s - window_s, 0.0) + 1e-9, 1.0)
    cover = [sum(max(0.0, min(s + window_s, e) - max(s, b)) for b, e in speech) for s in starts]
    chosen: list[float] = []
    for i in np.argsort(cover, kind="stable")[::-1]:
        if cover[i] <= 0 or len(chosen) == max_windows:
            break
        if all(abs(starts[i] - c) >= window_s for c in chosen):
            chosen.append(float(starts[i]))
    return [(s, min(s + window_s, duration_s)) for s in sorted(chosen)]


def score_leg(
    x: np.ndarray, sr: int, speech: list[tuple[float, float]], weights: Path | None, window_s: float, max_windows: int
) -> Nisqa:
    """NISQA for one leg: one pass when it fits, else windows over speech averaged (timeline included)."""
    if weights is None:
        raise ModelError("no NISQA weights")
    duration = x.size / sr
    if duration * 100 / SEG_HOP < MAX_SEGMENTS * 0.98:
        s = score_audio(x, sr, weights)
        return Nisqa(mos=s.mos, noisiness=s.noisiness, coloration=s.coloration,
                     discontinuity=s.discontinuity, loudness=s.loudness)  # fmt: skip
    spans = speech_windows(duration, speech, window_s, max_windows)
    feats = [segments(melspec_db(x[int(a * sr) : int(a * sr) + int(window_s * sr)], sr)) for a, _ in spans]
    n = min(f.shape[0] for f in feats)
    scores = predict([f[:n] for f in feats], weights)
    windows = [
        NisqaWindow(start_s=a, end_s=b, mos=s.mos, noisiness=s.noisiness, coloration=s.coloration,
                    discontinuity=s.discontinuity, loudness=s.loudness)
        for (a, b), s in zip(spans, scores, strict=True)
    ]  # fmt: skip
    mean = {k: float(np.mean([getattr(w, k) for w in windows])) for k in DIMENSIONS}
    return Nisqa(**mean, windows=windows)
