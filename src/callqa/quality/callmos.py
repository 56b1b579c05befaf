"""The call MOS: a calibrated estimate of what a listener hears on the phone, on the P.862 (PESQ) scale.

DNSMOS and NISQA were trained on wideband and internet speech; on telephone speech through codecs and loss their
scores correlate only loosely with P.862. The call MOS maps what the report already measures on a leg (DNSMOS
SIG/BAK/OVRL/P.808, NISQA's MOS and dimensions when NISQA runs, levels, noise floor, clipping, and two signal
measures computed here: the audio bandwidth and the share of speech lost in dropouts) to P.862 with a small
model fitted on a labelled corpus of telephone conditions (``bench/mos_corpus.py``, ``bench/mos_fit.py``,
``docs/mos.md``). The model ships as plain data (``callmos_model.json``: gradient-boosted regression trees as
tables) and is evaluated here with NumPy. Two variants: with NISQA's outputs and without them.

``cause`` says what explains a low score on a leg: ``network`` (loss, late packets), ``endpoint`` (noise,
level, clipping, band limiting, the codec chain, with a clean network) or ``both``, with the figures as evidence.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

import numpy as np

from callqa.report import CallMos, CallMosWindow, LegReport

DNSMOS_WINDOW_S = 9.01
SPECTRUM_S = 60.0  # spectra, flat tops: from the first minute of speech
DROPOUT_FRAME_S = 0.005
DROPOUT_DB = 30.0  # a stretch at the noise floor this far below the sound on both sides is a dropout


def bandwidth_hz(x: np.ndarray, sr: int, speech: list[tuple[float, float]]) -> float | None:
    """The audio bandwidth: the highest frequency where the long-term spectrum of the speech (or of the whole
    leg without speech) is within 30 dB of its peak, from 32 ms frames; None for silence."""
    y = _speech_samples(x, sr, speech) if speech else np.asarray(x[: int(SPECTRUM_S * sr)], np.float64)
    return _bandwidth(_long_term_spectrum(y, sr), sr)


def _long_term_spectrum(y: np.ndarray, sr: int) -> np.ndarray | None:
    """Mean power spectrum of ``y`` in Hann-windowed 32 ms frames (256 samples at 8 kHz, else 512), or None when
    ``y`` is shorter than a frame."""
    n = 256 if sr <= 8000 else 512
    if y.size < n:
        return None
    frames = y[: y.size // n * n].reshape(-1, n).astype(np.float64)
    return np.asarray(np.mean(np.abs(np.fft.rfft(frames * np.hanning(n), axis=1)) ** 2, axis=0))


def _bandwidth(spec: np.ndarray | None, sr: int) -> float | None:
    if spec is None or not np.any(spec > 0):
        return None
    n = 2 * (spec.size - 1)
    db = 10 * np.log10(spec + 1e-20)
    above = np.nonzero(db > db.max() - 30.0)[0]
    return float(above.max() * sr / n)


def dropout_ratio(x: np.ndarray, sr: int, speech: list[tuple[float, float]]) -> float:
    """Audio lost in dropouts, as a share of the speech time: stretches of 15-300 ms down at the line's noise
    floor that begin and end abruptly (30 dB within 5 ms on both sides), as lost packets played as silence cut
    into words; a talker's pauses fade out and in instead, and pauses between sentences last longer."""
    speech_s = sum(b - a for a, b in speech)
    n = int(DROPOUT_FRAME_S * sr)
    if speech_s <= 0 or x.size < 4 * n:
        return 0.0
    db = 10 * np.log10(_frame_power(x, n) + 1e-12)
    floor = float(np.percentile(db, 5))
    low = db < max(floor + 10.0, -100.0)
    edges = np.diff(np.concatenate([[0], low.astype(np.int8), [0]]))
    lost = 0
    for a, b in zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0], strict=True):
        if not 3 <= b - a <= 60 or a == 0 or b >= db.size:
            continue
        inside = float(np.mean(db[a:b]))
        if db[a - 1] > inside + DROPOUT_DB and db[b] > inside + DROPOUT_DB:
            lost += int(b - a)
    return round(min(1.0, lost * DROPOUT_FRAME_S / speech_s), 4)


def high_band_db(x: np.ndarray, sr: int, speech: list[tuple[float, float]]) -> float | None:
    """Speech energy in 2.5-3.5 kHz relative to 0.3-2.5 kHz, dB (codecs at low rates and band limits thin the
    upper band); None without speech."""
    return _high_band(_long_term_spectrum(_speech_samples(x, sr, speech), sr), sr)


def _high_band(spec: np.ndarray | None, sr: int) -> float | None:
    if spec is None:
        return None
    n = 2 * (spec.size - 1)
    f = np.arange(spec.size) * sr / n
    low, high = spec[(f >= 300) & (f < 2500)].sum(), spec[(f >= 2500) & (f < 3500)].sum()
    if low <= 0:
        return None
    return round(float(10 * np.log10(high / low + 1e-12)), 2)


def _frames(x: np.ndarray, n: int, chunk: int = 4096) -> list[np.ndarray]:
    """``x`` in frames of ``n`` samples (a partial last frame dropped), float64, in chunks of ``chunk`` frames: a
    long leg is never copied whole."""
    count = x.size // n
    return [np.asarray(x[i * n : min(count, i + chunk) * n], np.float64).reshape(-1, n) for i in range(0, count, chunk)]


def _frame_power(x: np.ndarray, n: int) -> np.ndarray:
    return np.concatenate([np.mean(f**2, axis=1) for f in _frames(x, n)] or [np.zeros(0)])


def _speech_samples(x: np.ndarray, sr: int, speech: list[tuple[float, float]], limit_s: float = 60.0) -> np.ndarray:
    parts, total = [], 0
    for a, b in speech:
        seg = x[int(a * sr) : int(b * sr)][: max(0, int(limit_s * sr) - total)]
        parts.append(seg)
        total += seg.size
        if total >= limit_s * sr:
            break
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)


def top_spread_db(x: np.ndarray, sr: int, speech: list[tuple[float, float]]) -> float | None:
    """How far the loudest 0.1% of speech samples rise above the loudest 1%, dB: speech has peaks well above
    its 99th percentile, a clipped waveform is flat on top (near 0 dB) at whatever level it was clipped and
    later scaled, which the report's clipping ratio (full scale only) does not see; None without speech."""
    return _top_spread(_speech_samples(x, sr, speech))


def _top_spread(speech_samples: np.ndarray) -> float | None:
    y = np.abs(speech_samples)
    if y.size < 1000:
        return None
    p99, p999 = np.percentile(y, [99.0, 99.9])
    return round(float(20 * np.log10((p999 + 1e-9) / (p99 + 1e-9))), 3)


def band_snr_db(x: np.ndarray, sr: int, speech: list[tuple[float, float]]) -> float | None:
    """Speech-to-noise ratio within the telephone band (300-3400 Hz), dB: the speech segments' mean power
    against the quietest frames (5th percentile of 32 ms frames, digital silence left out). Hum and rumble
    below the band count little, as a handset's receive response and P.862's filter weigh them; None without
    speech or a measurable floor."""
    n = 256 if sr <= 8000 else 512
    if not speech or x.size < 4 * n:
        return None
    f = np.arange(n // 2 + 1) * sr / n
    keep, window = (f >= 300) & (f <= 3400), np.hanning(n)
    band = np.concatenate([
        (np.abs(np.fft.rfft(frames * window, axis=1)) ** 2)[:, keep].sum(axis=1) for frames in _frames(x, n)
    ])  # fmt: skip
    t = (np.arange(band.size) + 0.5) * n / sr
    inside = np.zeros(band.size, bool)
    for a, b in speech:
        inside |= (t >= a) & (t < b)
    audible = band > 1e-10
    if not inside.any() or not audible.any():
        return None
    floor = float(np.percentile(band[audible], 5))
    return round(float(10 * np.log10(np.mean(band[inside]) / max(floor, 1e-10))), 2)


def echo_correlation(x: np.ndarray, sr: int) -> float:
    """The strongest normalised autocorrelation of the leg at lags of 30-400 ms: a talker's own voice coming back
    (line or acoustic echo) correlates there; speech alone hardly does. The first 30 s, FFT-based."""
    y = np.asarray(x[: int(30 * sr)], np.float64)
    y = y - y.mean() if y.size else y
    lo, hi = int(0.03 * sr), int(0.4 * sr)
    if y.size < 2 * hi or not np.any(y):
        return 0.0
    n = 1 << int(np.ceil(np.log2(2 * y.size)))
    spec = np.fft.rfft(y, n)
    ac = np.fft.irfft(spec * np.conj(spec), n)[: hi + 1]
    return round(float(np.max(np.abs(ac[lo:hi])) / ac[0]), 4)


VOICE_FRAME = 256  # 32 ms at 8 kHz
LPC_ORDER = 10


def _levinson_gain(r: np.ndarray) -> np.ndarray:
    """Prediction gain (dB) of the order ``r.shape[1] - 1`` linear predictor of each row of autocorrelations
    ``r`` (Levinson-Durbin, all rows at once): the frame's power over the power of its prediction error."""
    order = r.shape[1] - 1
    a = np.zeros((r.shape[0], order + 1))
    a[:, 0] = 1.0
    err = r[:, 0].copy()
    for i in range(1, order + 1):
        k = -np.sum(a[:, :i] * r[:, i:0:-1], axis=1) / np.maximum(err, 1e-12)
        a[:, 1 : i + 1] = a[:, 1 : i + 1] + k[:, None] * a[:, i - 1 :: -1][:, :i]
        err = err * (1.0 - k**2)
    return np.asarray(10 * np.log10(r[:, 0] / np.maximum(err, 1e-12 * r[:, 0])))


def voice_measures(x: np.ndarray, sr: int, speech: list[tuple[float, float]]) -> tuple[float | None, float | None]:
    """(periodicity, LPC gain in dB) of the loud speech frames (32 ms at 8 kHz, within 20 dB of the loudest 5%),
    medians over the first minute of speech; (None, None) without enough speech.

    Periodicity is a frame's strongest normalised autocorrelation at pitch lags (2.5-16 ms): clean voiced speech
    repeats itself closely from one pitch period to the next; noise, coding noise and concealment artefacts in
    the waveform lower it. The LPC gain is how much of a frame a 10th-order linear predictor explains: noise
    and a thin spectrum lower it, the post-filters of low-rate CELP codecs (AMR-NB, G.723.1) raise it."""
    return _voice(_speech_samples(x, sr, speech), sr)


def _voice(y: np.ndarray, sr: int) -> tuple[float | None, float | None]:
    if sr != 8000 and y.size:
        from callqa.audio.resample import resample

        y = resample(y, sr, 8000).astype(np.float64)
    n, hop = VOICE_FRAME, VOICE_FRAME // 2
    if y.size < 10 * n:
        return None, None
    idx = np.arange(0, y.size - n + 1, hop)
    frames = y[idx[:, None] + np.arange(n)]
    frames = frames - frames.mean(axis=1, keepdims=True)
    db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    frames = frames[db > np.percentile(db, 95) - 20.0]
    lo, hi = 20, 128  # 2.5-16 ms: pitch from 62.5 to 400 Hz
    ac = np.fft.irfft(np.abs(np.fft.rfft(frames, 2 * n, axis=1)) ** 2, axis=1)[:, :hi]
    ac = ac[ac[:, 0] > 0]
    if ac.shape[0] < 5:
        return None, None
    periodicity = float(np.median(ac[:, lo:hi].max(axis=1) / ac[:, 0]))
    r = ac[:, : LPC_ORDER + 1] * np.exp(
        -0.5 * (2 * np.pi * 60 / 8000 * np.arange(LPC_ORDER + 1)) ** 2
    )  # 60 Hz lag window
    r[:, 0] *= 1.0001  # white-noise correction (-40 dB), as speech codecs condition their LPC analysis
    return round(periodicity, 4), round(float(np.median(_levinson_gain(r))), 3)


def leg_features(leg: LegReport, x: np.ndarray, sr: int) -> dict[str, float | None]:
    """The measured inputs of the call MOS for one leg (raw, before the model's derived features)."""
    speech = [(s.start_s, s.end_s) for s in leg.speech_segments]
    d, q, lv = leg.mos.dnsmos, leg.mos.nisqa, leg.levels
    y = _speech_samples(x, sr, speech)  # the first minute of speech and its spectrum, shared by four measures
    spec = _long_term_spectrum(y, sr)
    periodicity, lpc_gain = _voice(y, sr)
    return {
        "dnsmos_sig": d.sig if d else None,
        "dnsmos_bak": d.bak if d else None,
        "dnsmos_ovrl": d.ovrl if d else None,
        "dnsmos_p808": d.p808 if d else None,
        "nisqa_mos": q.mos if q else None,
        "nisqa_noi": q.noisiness if q else None,
        "nisqa_col": q.coloration if q else None,
        "nisqa_dis": q.discontinuity if q else None,
        "nisqa_loud": q.loudness if q else None,
        "rms_dbfs": lv.rms_dbfs,
        "peak_dbfs": lv.peak_dbfs,
        "clipping_ratio": lv.clipping_ratio,
        "active_dbfs": lv.active_dbfs,
        "noise_floor_dbfs": leg.noise_floor_dbfs,
        "speech_ratio": leg.speech_ratio,
        "sample_rate": float(sr),
        "bandwidth_hz": _bandwidth(spec, sr) if speech else bandwidth_hz(x, sr, speech),
        "dropout_ratio": dropout_ratio(x, sr, speech),
        "high_band_db": _high_band(spec, sr),
        "top_spread_db": _top_spread(y),
        "echo_corr": echo_correlation(x, sr),
        "band_snr_db": band_snr_db(x, sr, speech),
        "periodicity": periodicity,
        "lpc_gain_db": lpc_gain,
    }


def window_features(leg: LegReport) -> list[dict[str, float]]:
    """Per DNSMOS window: its span and scores, with the NISQA window that overlaps it most (when NISQA ran)."""
    out = []
    d, q = leg.mos.dnsmos, leg.mos.nisqa
    for w in d.windows if d else []:
        a, b = w.start_s, min(w.start_s + DNSMOS_WINDOW_S, leg.duration_s)
        row = {"start_s": a, "end_s": b, "dnsmos_sig": w.sig, "dnsmos_bak": w.bak, "dnsmos_ovrl": w.ovrl,
               "dnsmos_p808": w.p808}  # fmt: skip
        if q and q.windows:
            best = max(q.windows, key=lambda n: min(b, n.end_s) - max(a, n.start_s))
            row.update(nisqa_mos=best.mos, nisqa_noi=best.noisiness, nisqa_col=best.coloration,
                       nisqa_dis=best.discontinuity, nisqa_loud=best.loudness)  # fmt: skip
        out.append(row)
    return out


def derived(raw: dict[str, Any]) -> dict[str, float]:
    """The model's inputs from the raw features: missing ones stay NaN (the model fills them)."""

    def f(name: str) -> float:
        v = raw.get(name)
        return float(v) if v is not None else math.nan

    active, floor = f("active_dbfs"), f("noise_floor_dbfs")
    return {
        "dnsmos_sig": f("dnsmos_sig"),
        "dnsmos_bak": f("dnsmos_bak"),
        "dnsmos_ovrl": f("dnsmos_ovrl"),
        "dnsmos_p808": f("dnsmos_p808"),
        "nisqa_mos": f("nisqa_mos"),
        "nisqa_noi": f("nisqa_noi"),
        "nisqa_col": f("nisqa_col"),
        "nisqa_dis": f("nisqa_dis"),
        "nisqa_loud": f("nisqa_loud"),
        "snr_db": min(active - floor, 80.0) if not (math.isnan(active) or math.isnan(floor)) else math.nan,
        "clipping_log": math.log10(f("clipping_ratio") + 1e-6),
        "bandwidth_hz": f("bandwidth_hz"),
        # under 3% of the speech time, dropouts cannot be told from abrupt word edges (synthetic or gated speech:
        # the test suite's espeak calls reach 2.2%; no clip of the corpus without loss reaches 1%)
        "dropout_ratio": max(0.0, f("dropout_ratio") - 0.03),
        "high_band_db": f("high_band_db"),
        "top_spread_db": f("top_spread_db"),
        "echo_corr": f("echo_corr"),
        "band_snr_db": min(f("band_snr_db"), 80.0),
        "periodicity": f("periodicity"),
        "lpc_gain_db": f("lpc_gain_db"),
    }


@lru_cache
def model() -> dict[str, Any]:
    """The fitted model (``callmos_model.json`` in this package)."""
    text = resources.files("callqa.quality").joinpath("callmos_model.json").read_text()
    return dict(json.loads(text))


def version() -> str:
    return str(model()["version"])


def _tree_predict(tree: dict[str, list[Any]], x: np.ndarray) -> float:
    feature, threshold, left, right, value = (tree[k] for k in ("feature", "threshold", "left", "right", "value"))
    node = 0
    while left[node] >= 0:
        node = left[node] if x[feature[node]] <= threshold[node] else right[node]
    return float(value[node])


def predict(variant: dict[str, Any], inputs: dict[str, float]) -> float:
    """One variant of the model on one set of derived inputs (missing ones filled with the fitting medians)."""
    names = variant["features"]
    x = np.array([inputs.get(n, math.nan) for n in names], np.float64)
    fill = np.asarray(variant["fill"], np.float64)
    x = np.where(np.isnan(x), fill, x).astype(np.float32).astype(np.float64)  # the trees compare float32 inputs
    y = float(variant["base"]) + float(variant["learning_rate"]) * sum(_tree_predict(t, x) for t in variant["trees"])
    lo, hi = variant["range"]
    return float(min(max(y, lo), hi))


def score(raw: dict[str, Any], windows: list[dict[str, float]], fitted: dict[str, Any] | None = None
          ) -> tuple[str, float, list[tuple[float, float, float]]]:  # fmt: skip
    """(variant used, leg MOS, per-window (start, end, MOS)) for a leg's raw features, by the packaged model or
    by ``fitted`` (the fitting script's)."""
    m = fitted if fitted is not None else model()
    name = "with_nisqa" if raw.get("nisqa_mos") is not None else "without_nisqa"
    variant = m["variants"][name]
    value = predict(variant, derived(raw))
    timeline = []
    for w in windows:
        per = {**raw, **{k: v for k, v in w.items() if k not in ("start_s", "end_s")}}
        timeline.append((w["start_s"], w["end_s"], predict(variant, derived(per))))
    return name, value, timeline


def call_mos(leg: LegReport, x: np.ndarray, sr: int, low_mos: float, thresholds: CauseThresholds) -> CallMos | None:
    """The leg's call MOS with its timeline and, when it (or the network MOS) is low, the cause."""
    if leg.mos.dnsmos is None:
        return None  # the model's inputs are DNSMOS at least
    raw = leg_features(leg, x, sr)
    name, value, timeline = score(raw, window_features(leg))
    out = CallMos(
        value=round(value, 2),
        model=f"callmos {name}",
        version=version(),
        windows=[CallMosWindow(start_s=round(a, 3), end_s=round(b, 3), mos=round(v, 2)) for a, b, v in timeline],
        inputs={k: (round(v, 4) if isinstance(v, float) else v) for k, v in raw.items() if v is not None},
    )
    out.cause, out.cause_evidence = cause(leg, raw, value, low_mos, thresholds)
    return out


class CauseThresholds:
    """Where a measure starts to explain a low score (the settings that say so, see ``AnalysisSettings``)."""

    def __init__(self, loss: float, low_level_dbfs: float, clipping_ratio: float, snr_db: float = 20.0,
                 dropouts: float = 0.02, top_spread_db: float = 1.5, network_mos: float = 4.0) -> None:  # fmt: skip
        self.loss, self.low_level_dbfs, self.clipping_ratio = loss, low_level_dbfs, clipping_ratio
        self.snr_db, self.dropouts, self.top_spread_db, self.network_mos = snr_db, dropouts, top_spread_db, network_mos


Cause = Literal["network", "endpoint", "both"]


def cause(leg: LegReport, raw: dict[str, Any], value: float, low_mos: float, t: CauseThresholds
          ) -> tuple[Cause | None, dict[str, Any]]:  # fmt: skip
    """``network``, ``endpoint``, ``both`` or None (nothing low to explain), and the figures behind it."""
    evidence: dict[str, Any] = {"call_mos": round(value, 2)}
    network: list[str] = []
    rtp = leg.rtp
    if rtp is not None and rtp.expected > 0:
        loss = (max(rtp.lost, 0) + rtp.jitter_buffer_discards) / rtp.expected
        evidence.update(network_mos=rtp.network_mos, packet_loss=round(loss, 4), lost=rtp.lost,
                        late_discarded=rtp.jitter_buffer_discards, max_loss_burst=rtp.max_loss_burst,
                        max_jitter_ms=rtp.max_jitter_ms)  # fmt: skip
        if max(rtp.lost, 0) / rtp.expected >= t.loss:
            network.append("packet loss")
        if rtp.jitter_buffer_discards / rtp.expected >= t.loss:
            network.append("late packets (jitter)")
        if rtp.network_mos is not None and rtp.network_mos < t.network_mos and not network:
            network.append("network MOS")
    dropouts = float(raw.get("dropout_ratio") or 0.0)
    evidence["dropout_ratio"] = dropouts
    if rtp is None and dropouts >= t.dropouts:
        network.append("dropouts in the audio (lost packets)")
    endpoint: list[str] = []
    active, floor, band_snr = raw.get("active_dbfs"), raw.get("noise_floor_dbfs"), raw.get("band_snr_db")
    if active is not None and floor is not None:
        evidence.update(active_dbfs=active, noise_floor_dbfs=floor, snr_db=round(active - floor, 1))
    snr = band_snr if band_snr is not None else evidence.get("snr_db")
    if band_snr is not None:
        evidence["band_snr_db"] = band_snr
    if snr is not None and snr < t.snr_db:
        endpoint.append("background noise")
    if active is not None and active < t.low_level_dbfs:
        endpoint.append("low speech level")
    spread = raw.get("top_spread_db")
    if raw.get("clipping_ratio", 0.0) > t.clipping_ratio or (spread is not None and spread < t.top_spread_db):
        endpoint.append("clipping")
        evidence.update(clipping_ratio=raw.get("clipping_ratio"), top_spread_db=spread)
    for key in ("echo_corr", "bandwidth_hz", "dnsmos_bak", "nisqa_noi", "nisqa_col", "nisqa_dis"):
        if raw.get(key) is not None:
            evidence[key] = raw[key]
    low = value < low_mos
    net_low = rtp is not None and rtp.network_mos is not None and rtp.network_mos < low_mos
    if not (low or net_low):
        return None, {}
    if not network and not endpoint:
        endpoint.append("the codec chain or the talker's side (the network is clean)")
    evidence["network_reasons"], evidence["endpoint_reasons"] = network, endpoint
    if network and endpoint:
        return "both", evidence
    return ("network" if network else "endpoint"), evidence
