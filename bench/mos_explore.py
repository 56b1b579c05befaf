"""Measure candidate inputs and model families for the call MOS on the corpus of ``mos_corpus.py``.

For each configuration: leave-one-family-out and leave-one-speaker-out Pearson inside the fitting partition
(what chooses), and the held-out Pearson (fitted on the fitting partition; speakers and condition families
never seen in fitting), printed side by side. Nothing is written into the package.

    python bench/mos_explore.py --corpus /tmp/callqa-mos/corpus.jsonl --what kinds    # model families
    python bench/mos_explore.py --corpus /tmp/callqa-mos/corpus.jsonl --what inputs   # candidate measures
    python bench/mos_explore.py --corpus /tmp/callqa-mos/corpus.jsonl --what drop-one # each input left out
    python bench/mos_explore.py --corpus /tmp/callqa-mos/corpus.jsonl --what diagnose # held-out per family/talker

The candidate measures are computed from the audio and the leg report kept beside each clip and cached in
``<corpus folder>/explore_features.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import butter, sosfilt
from scipy.stats import pearsonr

from callqa.audio.resample import resample
from callqa.quality import callmos
from callqa.report import LegReport

ALL = list(callmos.derived({}).keys())
WITH = [f for f in ALL if f not in ("periodicity", "lpc_gain_db")]
WITHOUT = [f for f in ALL if not f.startswith("nisqa_")]
RATIOS = ["sig_minus_bak", "ovrl_minus_sig", "nisqa_minus_dnsmos", "col_minus_noi", "dis_minus_mos", "col_minus_mos",
          "noi_minus_mos", "loud_minus_mos", "nisqa_min_dim"]  # fmt: skip
TALKER = ["f0_hz", "tilt_db_oct", "cpp", "voiced_share"]
BARK = ["bark_snr_mean", "bark_snr_p25", "bark_snr_lowhigh"]
OTHER = ["per_iqr", "flat_med", "mod_ratio", "db_std", "flux", "tilt_per_f0"]
# the direction in which each input may move the estimate (the monotonic trees)
MONOTONIC = {**{k: 1 for k in ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808", "nisqa_mos", "nisqa_noi",
                               "nisqa_col", "nisqa_dis", "snr_db", "band_snr_db", "top_spread_db", "bandwidth_hz",
                               "periodicity")},
             **{k: -1 for k in ("dropout_ratio", "clipping_log", "echo_corr")}}  # fmt: skip


def candidate_measures(y: np.ndarray, sr: int, speech: list[tuple[float, float]]) -> dict[str, float]:
    """Talker-related and noise-shape measures of one clip (8 kHz analysis, 32 ms frames)."""
    x8 = y if sr == 8000 else resample(y, sr, 8000).astype(np.float64)
    s8 = callmos._speech_samples(x8, 8000, speech)
    out: dict[str, float] = {}
    n = 256
    if s8.size >= 10 * n:
        idx = np.arange(0, s8.size - n + 1, n // 2)
        fr = s8[idx[:, None] + np.arange(n)]
        fr = fr - fr.mean(axis=1, keepdims=True)
        db = 10 * np.log10(np.mean(fr**2, axis=1) + 1e-12)
        loud = db > np.percentile(db, 95) - 20
        fr, db = fr[loud], db[loud]
        ac = np.fft.irfft(np.abs(np.fft.rfft(fr, 2 * n, axis=1)) ** 2, axis=1)[:, :128]
        per = ac[:, 20:128].max(axis=1) / np.maximum(ac[:, 0], 1e-12)
        lag = 20 + ac[:, 20:128].argmax(axis=1)
        voiced = per > 0.5
        out["f0_hz"] = float(np.median(8000 / lag[voiced])) if voiced.sum() > 3 else math.nan
        out["voiced_share"] = float(voiced.mean())
        out["per_iqr"] = float(np.subtract(*np.percentile(per, [75, 25])))
        spec = np.abs(np.fft.rfft(fr * np.hanning(n), axis=1)) ** 2 + 1e-12
        f = np.arange(spec.shape[1]) * 8000 / n
        band = (f >= 300) & (f <= 3400)
        lt = 10 * np.log10(spec[:, band].mean(axis=0))
        out["tilt_db_oct"] = float(np.polyfit(np.log2(f[band]), lt, 1)[0])
        out["flat_med"] = float(
            np.median(np.exp(np.mean(np.log(spec[:, band]), axis=1)) / np.mean(spec[:, band], axis=1))
        )
        ceps = np.fft.irfft(np.log(spec), axis=1)[:, 20:128]  # cepstral peak prominence at pitch quefrencies
        q, pk = np.arange(20, 128), ceps.argmax(axis=1)
        line = np.array([np.polyval(np.polyfit(q, c, 1), q[p]) for c, p in zip(ceps, pk, strict=True)])
        out["cpp"] = float(np.median(ceps[np.arange(pk.size), pk] - line))
        out["db_std"] = float(np.std(db))
        out["flux"] = float(np.median(np.sqrt(np.mean(np.diff(10 * np.log10(spec[:, band]), axis=0) ** 2, axis=1))))
        env = sosfilt(butter(4, [300, 3400], "band", fs=8000, output="sos"), x8) ** 2
        env = np.sqrt(np.convolve(env, np.ones(80) / 80, "same"))[::80]
        env = env - env.mean()
        ms, fm = np.abs(np.fft.rfft(env * np.hanning(env.size))) ** 2, np.fft.rfftfreq(env.size, 0.01)
        out["mod_ratio"] = float(ms[(fm >= 2) & (fm <= 8)].sum() / max(ms[(fm >= 1) & (fm <= 32)].sum(), 1e-12))
    # per critical band: speech frames against the quietest frames, 0-40 dB, over 300-3400 Hz
    fr = x8[: x8.size // n * n].reshape(-1, n)
    spec = np.abs(np.fft.rfft(fr * np.hanning(n), axis=1)) ** 2
    p = spec.sum(axis=1)
    audible = p > 1e-10
    if audible.sum() >= 10:
        db = 10 * np.log10(p + 1e-20)
        loud = db > np.percentile(db[audible], 95) - 20
        quiet = audible & (db <= np.percentile(db[audible], 10))
        f = np.arange(spec.shape[1]) * 8000 / n
        bark = 13 * np.arctan(0.00076 * f) + 3.5 * np.arctan((f / 7500) ** 2)
        snrs = []
        for a in np.arange(np.floor(bark[f >= 300].min()), bark[f <= 3400].max(), 1.0):
            k = (bark >= a) & (bark < a + 1) & (f >= 300) & (f <= 3400)
            if k.any():
                s, q = spec[loud][:, k].sum(axis=1).mean(), spec[quiet][:, k].sum(axis=1).mean()
                snrs.append(float(np.clip(10 * np.log10(s / max(q, 1e-12)), 0, 40)))
        half = len(snrs) // 2
        out.update(bark_snr_mean=float(np.mean(snrs)), bark_snr_p25=float(np.percentile(snrs, 25)),
                   bark_snr_lowhigh=float(np.mean(snrs[:half]) - np.mean(snrs[half:])))  # fmt: skip
    return out


def load(corpus: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in corpus.read_text().splitlines() if line.strip()]
    cache = corpus.parent / "explore_features.json"
    got = json.loads(cache.read_text()) if cache.is_file() else {}
    for r in rows:
        key = str(r["clip"])
        if key not in got:
            base = corpus.parent / f"clip{r['clip']:04d}"
            leg = LegReport.model_validate_json(base.with_suffix(".json").read_text())
            y = np.load(base.with_suffix(".npy")).astype(np.float64) / 32767
            got[key] = candidate_measures(y, r["sample_rate"], [(s.start_s, s.end_s) for s in leg.speech_segments])
        r["extra"] = got[key]
    cache.write_text(json.dumps(got))
    return rows


def vector(r: dict[str, Any], names: list[str]) -> list[float]:
    d, e = callmos.derived(r["features"]), r["extra"]

    def g(k: str) -> float:
        v = r["features"].get(k)
        return float(v) if v is not None else math.nan

    ratios = {"sig_minus_bak": g("dnsmos_sig") - g("dnsmos_bak"), "ovrl_minus_sig": g("dnsmos_ovrl") - g("dnsmos_sig"),
              "nisqa_minus_dnsmos": g("nisqa_mos") - g("dnsmos_ovrl"), "col_minus_noi": g("nisqa_col") - g("nisqa_noi"),
              "dis_minus_mos": g("nisqa_dis") - g("nisqa_mos"), "col_minus_mos": g("nisqa_col") - g("nisqa_mos"),
              "noi_minus_mos": g("nisqa_noi") - g("nisqa_mos"), "loud_minus_mos": g("nisqa_loud") - g("nisqa_mos"),
              "nisqa_min_dim": min(g("nisqa_noi"), g("nisqa_col"), g("nisqa_dis")),
              "tilt_per_f0": e.get("tilt_db_oct", math.nan) / e["f0_hz"] if e.get("f0_hz") else math.nan}  # fmt: skip
    return [d[n] if n in d else ratios[n] if n in ratios else float(e.get(n, math.nan)) for n in names]


def estimator(kind: str, names: list[str]) -> Any:
    from sklearn.ensemble import GradientBoostingRegressor, HistGradientBoostingRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    common = {"random_state": 0, "learning_rate": 0.05, "subsample": 0.8}
    return {
        "gbm": lambda: GradientBoostingRegressor(n_estimators=300, max_depth=3, min_samples_leaf=8, **common),
        "gbm_fast": lambda: GradientBoostingRegressor(n_estimators=100, max_depth=3, min_samples_leaf=8,
                                                      **{**common, "learning_rate": 0.15}),  # fmt: skip
        "gbm_4_leaves": lambda: GradientBoostingRegressor(n_estimators=300, max_leaf_nodes=4, min_samples_leaf=15,
                                                          **common),  # fmt: skip
        "gbm_stumps": lambda: GradientBoostingRegressor(n_estimators=400, max_depth=1, min_samples_leaf=10, **common),
        "monotonic": lambda: HistGradientBoostingRegressor(max_leaf_nodes=4, learning_rate=0.05, max_iter=300,
                                                           min_samples_leaf=15, random_state=0,
                                                           monotonic_cst=[MONOTONIC.get(n, 0) for n in names]),
        "ridge": lambda: make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 3, 20))),
    }[kind]()  # fmt: skip


def fit_predict(kind: str, names: list[str], train: list[dict[str, Any]], test: list[dict[str, Any]]) -> np.ndarray:
    if kind == "trees_and_ridge":  # the mean of the two
        return (fit_predict("gbm", names, train, test) + fit_predict("ridge", names, train, test)) / 2
    x = np.array([vector(r, names) for r in train])
    fill = np.nanmedian(x, axis=0)
    fill = np.where(np.isnan(fill), 0.0, fill)
    xt = np.array([vector(r, names) for r in test])
    model = estimator(kind, names).fit(np.where(np.isnan(x), fill, x), [r["pesq_nb"] for r in train])
    return np.clip(model.predict(np.where(np.isnan(xt), fill, xt)), 1.0, 4.55)


def measure(rows: list[dict[str, Any]], kind: str, names: list[str]) -> dict[str, float]:
    fit_rows = [r for r in rows if r["partition"] == "fit"]
    held = [r for r in rows if r["partition"] == "held"]
    out = {}
    for key in ("family", "speaker"):
        pred = np.zeros(len(fit_rows))
        for group in sorted({r[key] for r in fit_rows}):
            idx = [i for i, r in enumerate(fit_rows) if r[key] == group]
            pred[idx] = fit_predict(kind, names, [r for r in fit_rows if r[key] != group], [fit_rows[i] for i in idx])
        out[key] = float(pearsonr(pred, [r["pesq_nb"] for r in fit_rows])[0])
    out["held"] = float(pearsonr(fit_predict(kind, names, fit_rows, held), [r["pesq_nb"] for r in held])[0])
    return out


def diagnose(rows: list[dict[str, Any]]) -> None:
    fit_rows = [r for r in rows if r["partition"] == "fit" and r["features"].get("nisqa_mos") is not None]
    held = [r for r in rows if r["partition"] == "held" and r["features"].get("nisqa_mos") is not None]
    pred, y = fit_predict("gbm", WITH, fit_rows, held), np.array([r["pesq_nb"] for r in held])
    err = pred - y
    print(f"held-out Pearson {pearsonr(pred, y)[0]:.3f} (with NISQA, {len(held)} clips)")
    for key in ("family", "speaker"):
        groups = np.array([r[key] for r in held])
        for g in sorted(set(groups)):
            i = groups == g
            print(f"  {key} {g:14s} {i.sum():3d} clips: Pearson {pearsonr(pred[i], y[i])[0]:.2f}, mean error "
                  f"{err[i].mean():+.2f}, P.862 sd {y[i].std():.2f}")  # fmt: skip
        fixed = pred - np.array([err[groups == g].mean() for g in groups])
        print(f"  each {key}'s mean error removed (needs the labels: a diagnosis only): {pearsonr(fixed, y)[0]:.3f}")
    print("P.862 / DNSMOS OVRL / NISQA per talker, mean over near-transparent (clean, G.711, G.722, level) and GSM:")
    for families in (("clean", "g711", "g722", "level"), ("gsm",)):
        for speaker in sorted({r["speaker"] for r in rows if r["family"] in families}):
            sub = [
                r["features"] | {"p": r["pesq_nb"]} for r in rows if r["family"] in families and r["speaker"] == speaker
            ]
            mean = {k: np.mean([s[k] for s in sub]) for k in ("p", "dnsmos_ovrl", "nisqa_mos")}
            print(f"  {'/'.join(families):22s} {speaker:14s} {len(sub):3d} clips: {mean['p']:.2f} / "
                  f"{mean['dnsmos_ovrl']:.2f} / {mean['nisqa_mos']:.2f} "
                  f"(upper band {np.nanmedian([s['high_band_db'] for s in sub]):.1f} dB)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--what", choices=["kinds", "inputs", "drop-one", "diagnose"], required=True)
    ap.add_argument("--variant", choices=["with_nisqa", "without_nisqa"], default="with_nisqa", help="for drop-one")
    args = ap.parse_args()
    rows = load(args.corpus)
    if args.what == "diagnose":
        diagnose(rows)
        return
    configs: list[tuple[str, str, list[str]]] = []
    if args.what == "kinds":
        for kind in ("gbm", "gbm_4_leaves", "gbm_stumps", "monotonic", "ridge", "trees_and_ridge"):
            configs += [(kind, "with_nisqa", WITH), (kind, "without_nisqa", WITHOUT)]
    elif args.what == "inputs":
        extras = {"model ratios": RATIOS, "talker": TALKER, "band SNR": BARK, "all measures": TALKER + BARK + OTHER}
        for label, more in extras.items():
            configs += [("gbm", f"with_nisqa + {label}", WITH + more),
                        ("gbm", f"without_nisqa + {label}", WITHOUT + [m for m in more if "nisqa" not in m
                                                                        and m not in RATIOS[2:]])]  # fmt: skip
    else:
        names = WITH if args.variant == "with_nisqa" else WITHOUT
        configs = [("gbm_fast", f"{args.variant} all", names)]
        configs += [("gbm_fast", f"{args.variant} - {n}", [m for m in names if m != n]) for n in names]
    for kind, label, names in configs:
        sub = rows if label.startswith("without") else [r for r in rows if r["features"].get("nisqa_mos") is not None]
        t0 = time.perf_counter()
        m = measure(sub, kind, names)
        print(f"{kind:12s} {label:36s} family-out {m['family']:.3f} speaker-out {m['speaker']:.3f} | held-out "
              f"{m['held']:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
