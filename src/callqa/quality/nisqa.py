"""NISQA v2 (Mittag et al., Interspeech 2021): MOS plus noisiness, coloration, discontinuity and loudness.

An independent implementation of the published NISQA_DIM architecture, written to load the upstream checkpoint
(``nisqa.tar``; CC BY-NC-SA weights, never bundled): a 6-layer CNN over 15-frame log-mel segments, two self-
attention layers, and one attention-pooling head per output. Inference runs on ONNX Runtime: the model is exported
from the user's checkpoint once, at run time, into the models cache directory (the export is derived from the CC
BY-NC-SA weights, so it is never shipped); PyTorch (the ``nisqa`` extra) is needed only for that export, or to run
the model directly where the cache directory cannot be written. Features follow the upstream recipe at the file's
native rate: magnitude mel spectrogram, n_fft 4096, 20 ms Hann window, 10 ms hop, 48 Slaney mel bands up to 20 kHz,
20*log10 with a 1e-4 floor and 80 dB range. A pass takes at most 1300 segments (~52 s); longer legs are scored on
windows over speech and averaged.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from callqa.digest import sha256_file
from callqa.errors import ModelError
from callqa.quality import vad
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


def unavailable_reason(weights: Path | None, cache_dir: Path | None = None) -> str | None:
    """Why NISQA cannot run (missing weights, or PyTorch missing and no export of the weights in ``cache_dir``),
    or None when it can."""
    if weights is None:
        return "no NISQA weights configured (run 'callqa models fetch nisqa' or pass --nisqa-weights PATH)"
    if not Path(weights).is_file():
        return f"NISQA weights not found at {weights}"
    exported = cache_dir is not None and onnx_path(Path(weights), cache_dir).is_file()
    if not exported and importlib.util.find_spec("torch") is None:
        return "PyTorch is not installed (install the 'nisqa' extra) and the weights have no ONNX export yet"
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
    from scipy import fft

    xp = np.pad(np.asarray(x, dtype=np.float32), (pad, pad), mode="reflect")
    n_frames = 1 + (xp.size - N_FFT) // hop
    # The window is zero outside the centred ``win`` samples of each n_fft frame: transform only those samples,
    # zero-padded to n_fft. Moving them to the start of the frame changes the phase of every bin, not its magnitude.
    left = (N_FFT - win) // 2
    frames = np.lib.stride_tricks.as_strided(
        xp[left:], shape=(n_frames, win), strides=(xp.strides[0] * hop, xp.strides[0]), writeable=False
    )
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)).astype(np.float32)
    magnitude = np.abs(fft.rfft(frames * window, n=N_FFT, axis=1))
    mel = magnitude @ mel_filterbank(sr, N_FFT, N_MELS, FMAX).T.astype(np.float32)
    db = 20.0 * np.log10(np.maximum(mel, 1e-4))
    return np.maximum(db, db.max() - 80.0).T


def segments(spec: np.ndarray) -> np.ndarray:
    """Overlapping 15-frame segments every 4 frames: (n, 1, 48, 15)."""
    n = spec.shape[1] - (SEG_LEN - 1)
    if n < 1:
        raise ValueError("audio too short for NISQA (needs 15 frames)")
    idx = np.arange(0, n, SEG_HOP)[:, None] + np.arange(SEG_LEN)[None, :]
    return np.ascontiguousarray(spec[:, idx].transpose(1, 0, 2)[:, None], dtype=np.float32)


def adaptive_bins(n_in: int, n_out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive-pooling bins [floor(i n / m), ceil((i + 1) n / m)) for ``n_in`` -> ``n_out``."""
    return [(i * n_in // n_out, -(-(i + 1) * n_in // n_out)) for i in range(n_out)]


def uniform_bins(bins: list[tuple[int, int]]) -> tuple[int, int] | None:
    """(kernel, stride) when the bins are an ordinary pooling's (equal lengths, equal steps), else None."""
    kernel = bins[0][1] - bins[0][0]
    stride = bins[1][0] - bins[0][0] if len(bins) > 1 else 1
    regular = all(e - b == kernel and b == i * stride for i, (b, e) in enumerate(bins))
    return (kernel, max(stride, 1)) if regular else None


def _build_model() -> Any:
    """NISQA_DIM as torch modules whose parameter names match the upstream checkpoint."""
    import torch
    from torch import nn

    def pool(x: Any, size: tuple[int, int]) -> Any:
        """adaptive_max_pool2d (the same values) as ordinary max pooling where its bins are regular and as maxima
        over slices where they are not: ONNX has no adaptive pooling to sizes that do not divide."""
        bins = [adaptive_bins(int(x.shape[2]), size[0]), adaptive_bins(int(x.shape[3]), size[1])]
        regular = [uniform_bins(b) for b in bins]
        kernel = tuple(r[0] if r else 1 for r in regular)
        stride = tuple(r[1] if r else 1 for r in regular)
        if kernel != (1, 1) or stride != (1, 1):
            x = nn.functional.max_pool2d(x, kernel, stride)
        for axis, (b, r) in enumerate(zip(bins, regular, strict=True), start=2):
            if r is None:
                x = torch.cat([x.narrow(axis, i, j - i).amax(dim=axis, keepdim=True) for i, j in b], dim=axis)
        return x

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

        def attend(self, x: Any) -> Any:
            """``self_attn(x, x, x)`` (one head) written out, so that an export keeps the time length dynamic."""
            a = self.self_attn
            q, k, v = nn.functional.linear(x.transpose(0, 1), a.in_proj_weight, a.in_proj_bias).chunk(3, dim=-1)
            weights = torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(1, 2), dim=-1)
            return a.out_proj(weights @ v).transpose(0, 1)

        def forward(self, x: Any) -> Any:  # x: (time, batch, d), post-norm transformer encoder layer
            x = self.norm1(x + self.attend(x))
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


EXPORT_VERSION = 2  # bump when the exported graph changes: a new file name, so no stale export is used


def onnx_path(weights: Path, cache_dir: Path) -> Path:
    """Where the ONNX export of these weights lives: named by the checkpoint's hash."""
    return Path(cache_dir) / f"nisqa-dim-{file_sha256(Path(weights))[:16]}-v{EXPORT_VERSION}.onnx"


def export_onnx(weights: Path, dest: Path) -> Path:
    """Export the checkpoint's model to ONNX (dynamic windows and segments), written atomically to ``dest``."""
    import warnings

    import torch

    model = load_model(Path(weights))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(f".tmp{os.getpid()}")
    example = torch.zeros(1, 60, 1, N_MELS, SEG_LEN)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notices
            torch.onnx.export(model, (example,), str(tmp), input_names=["segments"], output_names=["scores"],
                              dynamic_axes={"segments": {0: "windows", 1: "time"}}, opset_version=17,
                              dynamo=False)  # fmt: skip
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


_EXPORT_LOCK = threading.Lock()


def onnx_model(weights: Path, cache_dir: Path) -> Any:
    """The session for these weights, made once per process even when legs ask for it at the same time (the
    exporter is not thread-safe)."""
    with _EXPORT_LOCK:
        return _onnx_model(weights, cache_dir)


@lru_cache
def _onnx_model(weights: Path, cache_dir: Path) -> Any:
    """An ONNX Runtime session of the model (one thread: legs run in parallel), exporting it first if needed.
    None when the export cannot be made (a read-only cache directory, or the ``onnx`` package missing): then the
    PyTorch model runs directly."""
    from callqa import model_loaders

    path = onnx_path(weights, cache_dir)
    if not path.is_file():
        try:
            export_onnx(weights, path)
        except (OSError, RuntimeError, ImportError):  # the exporter raises RuntimeError without ``onnx``
            return None
    return model_loaders.onnx_session(path, threads=1)


def predict(batch: list[np.ndarray], weights: Path, cache_dir: Path | None = None) -> list[NisqaScores]:
    """Scores for equal-length segment arrays (each (n, 1, 48, 15)), one forward pass: on ONNX Runtime with
    the export in ``cache_dir``, else with PyTorch."""
    x = np.stack(batch)
    session = onnx_model(Path(weights), Path(cache_dir)) if cache_dir is not None else None
    if session is not None:
        out = session.run(None, {"segments": x})[0]
    else:
        import torch

        model = load_model(Path(weights))
        with torch.inference_mode():
            out = model(torch.from_numpy(x)).numpy()
    return [NisqaScores(*(float(v) for v in row)) for row in out]


def score_audio(x: np.ndarray, sr: int, weights: Path, cache_dir: Path | None = None) -> NisqaScores:
    """One pass over the whole signal (at most ~52 s), as upstream scores a file."""
    segs = segments(melspec_db(x, sr))
    if segs.shape[0] > MAX_SEGMENTS:
        raise ValueError(f"{segs.shape[0]} segments exceed NISQA's {MAX_SEGMENTS}: window the audio")
    return predict([segs], weights, cache_dir)[0]


def speech_windows(
    duration_s: float, speech: list[tuple[float, float]], window_s: float, max_windows: int
) -> list[tuple[float, float]]:
    """Disjoint windows of ``window_s`` holding the most speech, at most ``max_windows``, in time order."""
    starts = np.arange(0.0, max(duration_s - window_s, 0.0) + 1e-9, 1.0)
    cover = vad.speech_overlap(starts, starts + window_s, speech)
    chosen: list[float] = []
    for i in np.argsort(cover, kind="stable")[::-1]:
        if cover[i] <= 0 or len(chosen) == max_windows:
            break
        if all(abs(starts[i] - c) >= window_s for c in chosen):
            chosen.append(float(starts[i]))
    return [(s, min(s + window_s, duration_s)) for s in sorted(chosen)]


def score_leg(
    x: np.ndarray,
    sr: int,
    speech: list[tuple[float, float]],
    weights: Path | None,
    window_s: float,
    max_windows: int,
    cache_dir: Path | None = None,
) -> Nisqa:
    """NISQA for one leg: one pass when it fits, else windows over speech averaged (timeline included)."""
    if weights is None:
        raise ModelError("no NISQA weights")
    duration = x.size / sr
    if duration * 100 / SEG_HOP < MAX_SEGMENTS * 0.98:
        s = score_audio(x, sr, weights, cache_dir)
        return Nisqa(mos=s.mos, noisiness=s.noisiness, coloration=s.coloration,
                     discontinuity=s.discontinuity, loudness=s.loudness)  # fmt: skip
    spans = speech_windows(duration, speech, window_s, max_windows)
    feats = [segments(melspec_db(x[int(a * sr) : int(a * sr) + int(window_s * sr)], sr)) for a, _ in spans]
    n = min(f.shape[0] for f in feats)
    scores = predict([f[:n] for f in feats], weights, cache_dir)
    windows = [
        NisqaWindow(start_s=a, end_s=b, mos=s.mos, noisiness=s.noisiness, coloration=s.coloration,
                    discontinuity=s.discontinuity, loudness=s.loudness)
        for (a, b), s in zip(spans, scores, strict=True)
    ]  # fmt: skip
    mean = {k: float(np.mean([getattr(w, k) for w in windows])) for k in DIMENSIONS}
    return Nisqa(**mean, windows=windows)
