"""Fit the call MOS on the corpus of ``mos_corpus.py`` and write it as data into the package.

    python bench/mos_fit.py --corpus /tmp/callqa-mos/corpus.jsonl --testdata ../shared/testdata \
        --nisqa-weights nisqa.tar [--write]

Two variants, with NISQA's outputs and without them, each a small gradient-boosted tree ensemble (scikit-learn
fits it; the package evaluates the exported tables with NumPy). Validation: fitted on the ``fit`` partition,
scored on the ``held`` partition (speakers and condition families never seen in fitting); then scored on the
shared PESQ-labelled pairs (``mos_shared.py``), which are never fitted on. With ``--write`` the model refitted on
the whole corpus replaces ``src/callqa/quality/callmos_model.json`` and the scatter plot ``docs/mos_scatter.png``
is redrawn. Figures are printed as Markdown for ``docs/mos.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import pearsonr, spearmanr

from callqa.quality import callmos

REPO = Path(__file__).resolve().parents[1]
MODEL_PATH = REPO / "src" / "callqa" / "quality" / "callmos_model.json"
PLOT_PATH = REPO / "docs" / "mos_scatter.png"
ALL = list(callmos.derived({}).keys())
# periodicity and LPC gain help the variant without NISQA in leave-one-family-out and leave-one-speaker-out
# validation and not the one with it (whose NISQA dimensions already see noise and coloration): docs/mos.md
VOICE = ["periodicity", "lpc_gain_db"]
VARIANTS = {
    "with_nisqa": [f for f in ALL if f not in VOICE],
    "without_nisqa": [f for f in ALL if not f.startswith("nisqa_")],
}
PARAMS = {"n_estimators": 300, "learning_rate": 0.05, "max_depth": 3, "min_samples_leaf": 8, "subsample": 0.8}
RAW = {"DNSMOS OVRL": "dnsmos_ovrl", "DNSMOS SIG": "dnsmos_sig", "DNSMOS P.808": "dnsmos_p808",
       "NISQA MOS": "nisqa_mos"}  # fmt: skip


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def matrix(rows: list[dict[str, Any]], names: list[str]) -> np.ndarray:
    return np.array([[callmos.derived(r["features"])[n] for n in names] for r in rows], np.float64)


def fit(rows: list[dict[str, Any]], names: list[str], seed: int = 0) -> dict[str, Any]:
    """One variant fitted on ``rows``, as the plain tables ``callmos.predict`` evaluates."""
    from sklearn.ensemble import GradientBoostingRegressor

    x = matrix(rows, names)
    fill = np.nanmedian(x, axis=0)
    fill = np.where(np.isnan(fill), 0.0, fill)
    x = np.where(np.isnan(x), fill, x)
    y = np.array([r["pesq_nb"] for r in rows])
    gbr = GradientBoostingRegressor(random_state=seed, **PARAMS).fit(x, y)  # type: ignore[arg-type]
    trees = []
    for est in gbr.estimators_[:, 0]:
        t = est.tree_
        trees.append({"feature": t.feature.tolist(), "threshold": [round(float(v), 6) for v in t.threshold],
                      "left": t.children_left.tolist(), "right": t.children_right.tolist(),
                      "value": [round(float(v), 6) for v in t.value[:, 0, 0]]})  # fmt: skip
    return {"features": names, "fill": [round(float(v), 6) for v in fill],
            "base": round(float(gbr.init_.constant_[0][0]), 6), "learning_rate": PARAMS["learning_rate"],
            "range": [1.0, 4.55], "trees": trees}  # fmt: skip


def predict(variant: dict[str, Any], rows: list[dict[str, Any]]) -> np.ndarray:
    return np.array([callmos.predict(variant, callmos.derived(r["features"])) for r in rows])


def stats(pred: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    ok = ~np.isnan(pred)
    p, s = pearsonr(pred[ok], y[ok])[0], spearmanr(pred[ok], y[ok])[0]
    return float(p), float(s), float(np.sqrt(np.mean((pred[ok] - y[ok]) ** 2)))


def raw_values(rows: list[dict[str, Any]], key: str) -> np.ndarray:
    return np.array([r["features"].get(key) if r["features"].get(key) is not None else math.nan for r in rows])


def table(title: str, rows: list[dict[str, Any]], model: dict[str, Any]) -> list[str]:
    y = np.array([r["pesq_nb"] for r in rows])
    with_nisqa = [r for r in rows if r["features"].get("nisqa_mos") is not None]
    lines = [f"**{title}** ({len(rows)} clips)", "", "| score | clips | Pearson | Spearman | RMSE vs P.862 |",
             "|---|---|---|---|---|"]  # fmt: skip
    for label, key in RAW.items():
        v = raw_values(rows, key)
        p, s, e = stats(v, y)
        lines.append(f"| raw {label} | {int(np.sum(~np.isnan(v)))} | {p:.3f} | {s:.3f} | {e:.2f} |")
    for name, variant in model["variants"].items():
        sub = with_nisqa if name == "with_nisqa" else rows
        p, s, e = stats(predict(variant, sub), np.array([r["pesq_nb"] for r in sub]))
        lines.append(f"| **call MOS {name}** | {len(sub)} | **{p:.3f}** | {s:.3f} | {e:.2f} |")
    if len(with_nisqa) < len(rows):
        # the shipped behaviour: with NISQA where it ran on the leg, without where it did not
        pred = np.array([callmos.score(r["features"], [], model)[1] for r in rows])
        p, s, e = stats(pred, y)
        lines.append(f"| **call MOS as shipped** (variant per clip) | {len(rows)} | **{p:.3f}** | {s:.3f} | {e:.2f} |")
    return lines + [""]


def shared_rows(testdata: Path, nisqa_weights: Path | None, models_dir: Path | None) -> list[dict[str, Any]]:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import mos_shared

    from callqa.config import AnalysisSettings, Settings
    from callqa.pipeline import Leg, analyze_legs

    settings = Settings(analysis=AnalysisSettings(transcribe=False), nisqa_weights=nisqa_weights,
                        **({"models_dir": models_dir} if models_dir else {}))  # fmt: skip
    out = []
    for pair in mos_shared.pairs(testdata):
        leg = analyze_legs([Leg("caller", pair.name, pair.degraded, pair.sample_rate)], settings).legs[0]
        out.append({"name": pair.name, "pesq_nb": pair.pesq_nb,
                    "features": callmos.leg_features(leg, pair.degraded, pair.sample_rate)})  # fmt: skip
    return out


def scatter(rows: list[dict[str, Any]], model: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.array([r["pesq_nb"] for r in rows])
    shipped = np.array([callmos.score(r["features"], [], model)[1] for r in rows])
    no_nisqa = predict(model["variants"]["without_nisqa"], rows)
    panels = [("raw DNSMOS OVRL", raw_values(rows, "dnsmos_ovrl")), ("raw NISQA MOS", raw_values(rows, "nisqa_mos")),
              ("call MOS without NISQA", no_nisqa), ("call MOS (with NISQA where it ran)", shipped)]  # fmt: skip
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.2), sharey=True)
    for ax, (label, v) in zip(axes, panels, strict=True):
        ok = ~np.isnan(v)
        p, s, _ = stats(v, y)
        ax.scatter(v[ok], y[ok], s=9, alpha=0.6)
        ax.plot([1, 4.5], [1, 4.5], color="grey", lw=0.8)
        ax.set_title(f"{label}\nPearson {p:.3f}, Spearman {s:.3f}", fontsize=10)
        ax.set_xlabel("predicted MOS")
        ax.set_xlim(0.8, 4.7)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("P.862 MOS-LQO (pesq, narrowband)")
    fig.suptitle(f"Held-out clips ({len(rows)}): speakers and condition families not seen in fitting", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def group_cv(fit_rows: list[dict[str, Any]], key: str) -> None:
    """Leave one group (``speaker`` or ``family``) out at a time within the fitting partition."""
    for name, names in VARIANTS.items():
        rows = [r for r in fit_rows if name == "without_nisqa" or r["features"].get("nisqa_mos") is not None]
        y, pred = np.array([r["pesq_nb"] for r in rows]), np.zeros(len(rows))
        for group in sorted({r[key] for r in rows}):
            idx = [i for i, r in enumerate(rows) if r[key] == group]
            variant = fit([r for r in rows if r[key] != group], names)
            pred[idx] = predict(variant, [rows[i] for i in idx])
        p, s, e = stats(pred, y)
        print(f"leave-one-{key}-out, {name}: Pearson {p:.3f}, Spearman {s:.3f}, RMSE {e:.2f} ({len(rows)} clips)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--testdata", type=Path, default=None, help="score the shared PESQ-labelled pairs too")
    ap.add_argument("--nisqa-weights", type=Path, default=None)
    ap.add_argument("--models-dir", type=Path, default=None)
    ap.add_argument("--speaker-cv", action="store_true", help="also leave one fitting speaker out at a time")
    ap.add_argument("--family-cv", action="store_true", help="also leave one fitting condition family out at a time")
    ap.add_argument("--drop-speakers", default="", help="leave out the talkers whose names start with these "
                    "comma-separated prefixes (to measure what they add); never with --write")  # fmt: skip
    ap.add_argument("--dump-shared", type=Path, default=None, help="keep the shared pairs' features in this file")
    ap.add_argument("--drop-inputs", default="", help="fit without these comma-separated inputs (to measure what "
                    "they add); never with --write")  # fmt: skip
    ap.add_argument("--write", action="store_true", help="write the refitted model and the scatter plot")
    args = ap.parse_args()
    rows = load(args.corpus)
    drop = tuple(p for p in args.drop_speakers.split(",") if p)
    if (drop or args.drop_inputs) and args.write:
        ap.error("--drop-speakers and --drop-inputs are for measuring; the shipped model uses everything")
    if drop:
        rows = [r for r in rows if not r["speaker"].startswith(drop)]
    for name in (n for n in args.drop_inputs.split(",") if n):
        if name not in ALL:
            ap.error(f"no input {name!r}; the inputs are {', '.join(ALL)}")
        for names in VARIANTS.values():
            if name in names:
                names.remove(name)
    fit_rows = [r for r in rows if r["partition"] == "fit"]
    held = [r for r in rows if r["partition"] == "held"]

    def both(train: list[dict[str, Any]]) -> dict[str, Any]:
        return {"variants": {name: fit([r for r in train if name == "without_nisqa"
                                         or r["features"].get("nisqa_mos") is not None], names)
                             for name, names in VARIANTS.items()}}  # fmt: skip

    print(f"corpus: {len(rows)} clips, {len(fit_rows)} fit, {len(held)} held out")
    print(f"fit speakers: {sorted({r['speaker'] for r in fit_rows})}")
    print(f"held speakers: {sorted({r['speaker'] for r in held})}")
    print(f"fit families: {sorted({r['family'] for r in fit_rows})}")
    print(f"held families: {sorted({r['family'] for r in held})}\n")
    validation = both(fit_rows)
    if args.family_cv:
        group_cv(fit_rows, "family")
    if args.speaker_cv:
        group_cv(fit_rows, "speaker")
    print("\n".join(table("Held-out split (fitted on the fit partition only)", held, validation)))
    if args.write:
        scatter(held, validation, PLOT_PATH)
        print(f"wrote {PLOT_PATH.relative_to(REPO)}")
    final = both(rows)
    body = json.dumps(final["variants"], sort_keys=True)
    final = {"version": f"1.{hashlib.sha256(body.encode()).hexdigest()[:10]}",
             "fitted_on": f"{len(rows)} clips of bench/mos_corpus.py (seed {rows[0]['seed']})",
             "target": "P.862 narrowband MOS-LQO (pesq package)", **final}  # fmt: skip
    if args.testdata is not None:
        shared = shared_rows(args.testdata, args.nisqa_weights, args.models_dir)
        if args.dump_shared is not None:
            args.dump_shared.write_text(json.dumps(shared))
        print("\n".join(table("Shared PESQ-labelled pairs (never fitted on), final model", shared, final)))
        print("| pair | P.862 | DNSMOS OVRL | NISQA | call MOS |\n|---|---|---|---|---|")
        for r in shared:
            f = r["features"]
            nisqa = f"{f['nisqa_mos']:.2f}" if f.get("nisqa_mos") is not None else "-"
            print(f"| {r['name']} | {r['pesq_nb']:.2f} | {f['dnsmos_ovrl']:.2f} | {nisqa} | "
                  f"{callmos.score(f, [], final)[1]:.2f} |")  # fmt: skip
    if args.write:
        MODEL_PATH.write_text(json.dumps(final, separators=(",", ":")) + "\n")
        print(f"\nwrote {MODEL_PATH.relative_to(REPO)} version {final['version']}")


if __name__ == "__main__":
    main()
