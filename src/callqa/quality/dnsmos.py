"""DNSMOS P.835 (SIG, BAK, OVRL) and P.808 without a reference, from the ONNX models shipped in ``speechmos``.

Follows Microsoft's DNSMOS reference procedure (DNS Challenge ``dnsmos_local.py``): 16 kHz audio, 9.01 s windows
with a 1 s hop (audio shorter than a window is repeated to fill it), the P.835 model on raw samples with its
polynomial calibration, the P.808 model on a 120-band log-mel spectrogram, and the mean over windows.
The mel features are computed here with NumPy (same filterbank and dB scaling as librosa) and no librosa.
Long legs are scored on at most ``max_windows`` windows, picked where the leg has the most speech.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from callqa import model_loaders
from callqa.quality import vad

SR = 16000
WINDOW_S = 9.01
WINDOW = int(WINDOW_S * SR)  # 144160 samples
N_FFT = 321
HOP = 160
N_MELS = 120

# P.835 calibration polynomials (highest power first), as published with the DNSMOS models
_P_SIG = np.poly1d([-0.08397278, 1.22083953, 0.0052439])
_P_BAK = np.poly1d([-0.13166888, 1.60915514, -0.39604546])
_P_OVR = np.poly1d([-0.06766283, 1.11546468, 0.04602535])


@dataclass(frozen=True)
class DnsmosOptions:
    """``upstream_windows`` reproduces the reference script's window set exactly: it computes window ends as
    ``int((i + 9.01) * 16000)``, which float rounding makes one sample short from i = 7 on, and then skips
    those windows. Parity checks turn it on; analyses score the windows with the most speech instead."""

    hop_s: float = 1.0
    max_windows: int = 3
    upstream_windows: bool = False


@dataclass(frozen=True)
class DnsmosResult:
    sig: float
    bak: float
    ovrl: float
    p808: float
    windows: list[tuple[float, float, float, float, float]] = field(default_factory=list)  # start, sig..p808


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    mel = f / (200.0 / 3)
    log_part = f >= 1000.0
    mel[log_part] = 15.0 + np.log(f[log_part] / 1000.0) / (np.log(6.4) / 27.0)
    return mel


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f = m * (200.0 / 3)
    log_part = m >= 15.0
    f[log_part] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m[log_part] - 15.0))
    return f


@lru_cache
def mel_filterbank(sr: int = SR, n_fft: int = N_FFT, n_mels: int = N_MELS, fmax: float | None = None) -> np.ndarray:
    """Slaney-normalised triangular mel filters, shape (n_mels, n_fft // 2 + 1)."""
    fmax = sr / 2.0 if fmax is None else fmax
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([fmax]))[0], n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights


def stft_power(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT|^2 with a periodic Hann window, centred frames, zero padding: shape (frames, n_fft // 2 + 1)."""
    pad = n_fft // 2
    xp = np.pad(x.astype(np.float64), (pad, pad))
    n_frames = 1 + (xp.size - n_fft) // hop
    frames = np.lib.stride_tricks.as_strided(
        xp, shape=(n_frames, n_fft), strides=(xp.strides[0] * hop, xp.strides[0]), writeable=False
    )
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    spec = np.fft.rfft(frames * window, axis=1)
    return spec.real**2 + spec.imag**2


def p808_features(segment: np.ndarray) -> np.ndarray:
    """The P.808 model's input for one window: (900, 120) log-mel, dB re the window's maximum, top 80 dB."""
    mel = stft_power(segment[:-HOP], N_FFT, HOP) @ mel_filterbank().T
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    db -= db.max()
    db = np.maximum(db, -80.0)
    return ((db + 40.0) / 40.0).astype(np.float32)


def window_starts(n_samples: int, hop_s: float, upstream: bool = False) -> list[int]:
    """Start sample of every window (audio is assumed already repeated to one window at least)."""
    n_hops = int(np.floor(n_samples / SR) - WINDOW_S) + 1
    starts = []
    for i in range(max(n_hops, 0)):
        start = int(i * hop_s * SR)
        if upstream and int((i * hop_s + WINDOW_S) * SR) - start < WINDOW:
            continue
        if start + WINDOW <= n_samples:
            starts.append(start)
    return starts


def pick_windows(starts: list[int], speech: list[tuple[float, float]], max_windows: int) -> list[int]:
    """At most ``max_windows`` starts, the windows holding most speech first, avoiding overlap where possible."""
    if len(starts) <= max_windows:
        return starts
    first = np.asarray(starts, np.int64)
    cover = vad.speech_overlap(first / SR, (first + WINDOW) / SR, speech).tolist()
    ranked = [s for _, s in sorted(zip((-c for c in cover), starts, strict=True))]
    chosen: list[int] = []
    for s in ranked:
        if all(abs(s - c) >= WINDOW for c in chosen):
            chosen.append(s)
        if len(chosen) == max_windows:
            break
    for s in ranked:  # a leg too short for disjoint windows: fill with the best overlapping ones
        if len(chosen) == max_windows:
            break
        if s not in chosen:
            chosen.append(s)
    return sorted(chosen)


def score(
    audio16k: np.ndarray, options: DnsmosOptions, speech: list[tuple[float, float]] | None = None
) -> DnsmosResult:
    """DNSMOS of 16 kHz mono audio in [-1, 1]."""
    audio = np.asarray(audio16k, dtype=np.float32)
    if audio.size == 0:
        raise ValueError("DNSMOS needs at least one sample")
    while audio.size < WINDOW:  # the reference doubles short audio until it fills a window
        audio = np.concatenate([audio, audio])
    candidates = window_starts(audio.size, options.hop_s, options.upstream_windows)
    starts = pick_windows(candidates, speech or [], options.max_windows)
    primary, p808 = model_loaders.dnsmos_sessions()
    # P.835 one window at a time (its activations take ~130 MB a window); P.808 is small: all windows in one run
    last = len(starts) - 1  # its run hands the arena back: held memory does not add to later stages' peaks
    release = model_loaders.arena_release()
    raw = [primary.run(None, {"input_1": audio[None, s : s + WINDOW]}, release if i == last else None)[0][0]
           for i, s in enumerate(starts)]  # fmt: skip
    feats = np.stack([p808_features(audio[s : s + WINDOW]) for s in starts])
    p808_scores = p808.run(None, {"input_1": feats})[0][:, 0]
    rows = [
        (start / SR, float(_P_SIG(sig_raw)), float(_P_BAK(bak_raw)), float(_P_OVR(ovr_raw)), float(p))
        for start, (sig_raw, bak_raw, ovr_raw), p in zip(starts, raw, p808_scores, strict=True)
    ]
    mean = np.mean(np.array([r[1:] for r in rows]), axis=0)
    return DnsmosResult(float(mean[0]), float(mean[1]), float(mean[2]), float(mean[3]), rows)
