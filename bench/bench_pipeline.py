"""Benchmark: full analysis of 3-minute two-leg 8 kHz G.711 calls, real speech and synthetic.

    python bench/bench_pipeline.py [--nisqa-weights PATH] [--runs 5] [--reference-venv DIR | --no-reference]
                                   [--baseline SRC_DIR] [--repeat N]

Calls (see ``bench_calls.py``): real speech built from the shared reference recordings (``../shared/testdata``,
``CALLQA_SHARED`` overrides it; without them only the synthetic call is measured, and the bench says so), and
the bundled synthetic call looped to 3 minutes.

For each call, without and with NISQA, a fresh process (``--worker``) analyses the call once cold (models loaded
in that run) and then ``--runs`` times warm; printed: cold wall, median warm wall and CPU time (all threads),
per-stage wall times of the median run (summed over legs; legs run in parallel), its CPU time per stage
(``instrument_cpu``: decode, levels, resampling, VAD, DNSMOS, NISQA, call MOS features, report building with the
detectors and conversation metrics, and the rest), and the process's peak RSS. Then the
cold CLI (``callqa analyze --no-cache``, a new interpreter, model loading included) on the real call.

Reference: upstream NISQA's own code (``nisqa`` from PyPI, its ``nisqaModel`` in ``predict_file`` mode, whole
leg in one pass) scores the same two legs in a virtualenv made under the temp dir (or ``--reference-venv``),
run from this process; the ratio is its time over callqa's warm analysis with NISQA, measured in the same run.
``pip install torch==2.13.0 nisqa`` does not resolve (nisqa 2.0 pins torch 2.2.1 and numpy 1.26), so the venv
gets torch 2.13.0 with nisqa's imports (librosa, pandas, matplotlib, ...) and nisqa itself without its pins.

``--baseline SRC_DIR`` also runs every worker with another checkout's ``src`` (e.g. the parent commit in a git
worktree), alternating baseline and current ``--repeat`` times, and prints current/baseline ratios: on a shared
machine only figures measured side by side are comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_calls  # noqa: E402

REPO = bench_calls.REPO
STAGES = ("decode_s", "levels_s", "vad_s", "dnsmos_s", "nisqa_s")
CPU_STAGES = ("decode", "levels", "resample", "vad", "dnsmos", "nisqa", "callmos", "report", "other")


def instrument_cpu() -> dict[str, float]:
    """Wrap the pipeline's stage functions to add up their CPU time per stage (seconds, summed over legs).

    Stages that run in the legs' pool threads on one core each (levels, resampling, Silero VAD with one ONNX
    Runtime thread, NISQA, the call MOS features) are timed with the calling thread's CPU clock, so the two legs
    running at once do not count each other's time; DNSMOS runs alone (one leg at a time on ONNX Runtime's two
    threads) and is timed with the process's clock. ``other`` is what the run's process CPU time leaves."""
    import collections

    from callqa import pipeline
    from callqa.service import recordings

    cpu: dict[str, float] = collections.defaultdict(float)

    def wrap(owner: object, name: str, stage: str, clock=time.thread_time) -> None:  # type: ignore[no-untyped-def]
        f = getattr(owner, name, None)
        if f is None:  # an older checkout (--baseline) without this function
            return

        def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
            c = clock()
            try:
                return f(*args, **kwargs)
            finally:
                cpu[stage] += clock() - c

        setattr(owner, name, timed)

    wrap(recordings, "legs_from_files", "decode")
    for name in ("measure_levels", "detect_silences", "level_timeline", "noise_floor_dbfs", "sound_segments",
                 "active_level_dbfs"):  # fmt: skip
        wrap(pipeline, name, "levels")
    wrap(pipeline, "resample", "resample")
    wrap(pipeline.vad, "detect_speech", "vad")
    wrap(pipeline.dnsmos, "score", "dnsmos", time.process_time)
    wrap(pipeline.nisqa, "score_leg", "nisqa")
    wrap(pipeline.callmos, "call_mos", "callmos")
    for name in ("_leg_report", "_speech"):
        wrap(pipeline, name, "report")
    wrap(pipeline.detectors, "run_detectors", "report")
    return cpu


REFERENCE_PACKAGES = ["torch==2.13.0", "librosa", "pandas", "matplotlib", "seaborn", "tqdm", "pyyaml", "scipy"]


def worker(paths: list[Path], weights: Path | None, models_dir: Path, runs: int, changes: dict[str, str]
           ) -> dict[str, object]:  # fmt: skip
    """Run in a fresh process: one cold analysis, then ``runs`` warm ones."""
    t = time.perf_counter()
    from callqa.config import AnalysisSettings, Settings

    try:
        from callqa.service.recordings import analyze_recording
    except ImportError:  # a --baseline checkout from before the service package
        from callqa.service import analyze_files as analyze_recording  # type: ignore[attr-defined,no-redef]

    cpu = instrument_cpu()
    analysis = AnalysisSettings.model_validate({**changes, "nisqa": weights is not None})
    settings = Settings(analysis=analysis, nisqa_weights=weights, models_dir=models_dir)
    c = time.process_time()
    report, _ = analyze_recording(paths, settings)
    cold = {"wall": time.perf_counter() - t, "cpu": time.process_time() - c}
    rows = []
    for _ in range(runs):
        cpu.clear()
        t, c = time.perf_counter(), time.process_time()
        report, _ = analyze_recording(paths, settings)
        total = time.process_time() - c
        stages = {k: cpu.get(k, 0.0) for k in CPU_STAGES[:-1]}
        stages["other"] = total - sum(stages.values())
        rows.append({"wall": time.perf_counter() - t, "cpu": total, "stage_cpu": stages,
                     **report.timings.model_dump()})  # fmt: skip
    median = sorted(rows, key=lambda r: r["wall"])[len(rows) // 2]
    scores = {
        leg.role: {"dnsmos_ovrl": leg.mos.dnsmos.ovrl if leg.mos.dnsmos else None,
                   "nisqa_mos": leg.mos.nisqa.mos if leg.mos.nisqa else None}
        for leg in report.legs
    }  # fmt: skip
    return {"cold": cold, "median": median, "walls": [r["wall"] for r in rows],
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "scores": scores}  # fmt: skip


def compiled_copy(src: Path, dest: Path) -> Path:
    """A copy of the source tree ``src`` with its bytecode compiled."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(dest)], check=True, env=env)
    return dest


def run_worker(src: Path, paths: list[Path], weights: Path | None, models_dir: Path, runs: int,
               changes: list[str]) -> dict:  # fmt: skip
    args = [sys.executable, __file__, "--worker", "--runs", str(runs), "--models-dir", str(models_dir),
            *(["--nisqa-weights", str(weights)] if weights else []), *[f"--set={c}" for c in changes],
            *map(str, paths)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(args, capture_output=True, text=True, timeout=1800, env=env)
    if out.returncode:
        raise SystemExit(f"worker failed ({src}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cold_cli(src: Path, paths: list[Path], weights: Path | None, models_dir: Path, tmp: Path, changes: list[str]
             ) -> tuple[float, float]:  # fmt: skip
    """Wall and CPU time of ``callqa analyze --no-cache`` in a new interpreter (imports, model loading)."""
    env = {**os.environ, "PYTHONPATH": str(src), "CALLQA_DB": str(tmp / "cli.sqlite3"),
           "CALLQA_MODELS_DIR": str(models_dir)}  # fmt: skip
    env.update({f"CALLQA_ANALYSIS__{k.upper()}": v for k, v in (c.split("=", 1) for c in changes)})
    args = [sys.executable, "-m", "callqa.cli", "analyze", "--no-cache", "--json", *map(str, paths)]
    args += ["--nisqa-weights", str(weights)] if weights else ["--no-nisqa"]
    t, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(args, capture_output=True, check=True, timeout=600, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return time.perf_counter() - t, cpu


REFERENCE_SCRIPT = """
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import torch
from nisqa.NISQA_model import nisqaModel
weights, legs = sys.argv[1], sys.argv[2:]
def score(path):
    args = {"mode": "predict_file", "pretrained_model": weights, "deg": path, "output_dir": None,
            "ms_channel": None, "tr_bs_val": 1, "tr_num_workers": 0, "tr_parallel": False,
            "ms_max_segments": 20000}
    m = nisqaModel(args)
    df = m.predict()
    return {k: float(df[k].iloc[0]) for k in ("mos_pred", "noi_pred", "dis_pred", "col_pred", "loud_pred")}
score(legs[0])  # warm-up: imports, librosa's first calls
t, c = time.perf_counter(), time.process_time()
scores = [score(p) for p in legs]
print(json.dumps({"seconds": time.perf_counter() - t, "cpu": time.process_time() - c, "scores": scores,
                  "torch_threads": torch.get_num_threads()}))
"""


def reference_venv(path: Path | None, tmp: Path) -> Path:
    """A virtualenv with upstream NISQA: reused when ``path`` already has one, else created (under ``tmp``)."""
    venv = path or tmp / "nisqa-reference"
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import nisqa.NISQA_model, torch"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"creating the upstream NISQA reference virtualenv in {venv} (torch 2.13.0 + nisqa)...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run(pip + REFERENCE_PACKAGES, check=True, timeout=3600)
    subprocess.run(pip + ["--no-deps", "nisqa"], check=True, timeout=600)  # its pins conflict with torch 2.13
    subprocess.run(probe, check=True)
    return python


def run_reference(python: Path, weights: Path, paths: list[Path], tmp: Path) -> dict:
    legs = []
    for p in paths:  # NISQA reads files with librosa: give it 16-bit PCM copies of the G.711 legs
        pcm = tmp / f"{p.stem}-pcm16.wav"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(p), "-c:a", "pcm_s16le", str(pcm)], check=True)
        legs.append(str(pcm))
    out = subprocess.run([str(python), "-c", REFERENCE_SCRIPT, str(weights), *legs], capture_output=True,
                         text=True, timeout=3600, cwd=tmp)  # fmt: skip
    if out.returncode:
        raise SystemExit(f"upstream NISQA failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def fmt_row(name: str, r: dict) -> str:
    m = r["median"]
    stages = " ".join(f"{m[k]:5.2f}" for k in STAGES)
    cpu = " ".join(f"{m['stage_cpu'][k]:5.2f}" for k in CPU_STAGES)
    return (f"{name:26} {r['cold']['wall']:6.2f} {m['wall']:6.2f} {m['cpu']:6.2f}  {stages}  "
            f"{r['rss_mb']:6.0f}\n{'':26}   CPU s by stage: {cpu}")  # fmt: skip


HEADER = (f"{'call':26} {'cold':>6} {'warm':>6} {'cpu':>6}  {'dec':>5} {'lvl':>5} {'vad':>5} {'dns':>5} "
          f"{'nisqa':>5}  {'RSS MB':>6}\n{'':26}   CPU s by stage: "
          + " ".join(f"{k[:5]:>5}" for k in CPU_STAGES))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nisqa-weights", type=Path, help="NISQA nisqa.tar (default: ../shared/models/nisqa)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--reference-venv", type=Path, help="reuse (or create here) the upstream NISQA virtualenv")
    ap.add_argument("--no-reference", action="store_true", help="skip upstream NISQA")
    ap.add_argument("--baseline", type=Path, help="another checkout's src/ to compare with, alternating")
    ap.add_argument("--repeat", type=int, default=1, help="alternations with --baseline")
    ap.add_argument("--only", choices=["real", "synthetic"], help="one call only")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="an analysis setting for every run, e.g. --set dnsmos_max_windows=1")  # fmt: skip
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--models-dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("legs", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        changes = dict(c.split("=", 1) for c in args.set)
        print(json.dumps(worker(args.legs, args.nisqa_weights, args.models_dir, args.runs, changes)))
        return
    shared = bench_calls.shared_dir()
    weights = args.nisqa_weights or shared / "models" / "nisqa" / "nisqa.tar"
    if not weights.is_file():
        print(f"NISQA weights not found at {weights}: measuring without NISQA only")
        weights = None
    src = REPO / "src"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        calls: dict[str, list[Path]] = {}
        real = bench_calls.make_real_call(tmp, shared) if args.only != "synthetic" else None
        if real is not None:
            calls["real"] = real
        elif args.only != "synthetic":
            print(f"shared recordings not found under {shared / 'testdata'} (set CALLQA_SHARED): "
                  "no real-speech call, the synthetic call only")  # fmt: skip
        if args.only != "real":
            calls["synthetic"] = bench_calls.make_synthetic_call(tmp)
        # Each source tree is measured from a byte-compiled copy, as an installed package runs (pip compiles it):
        # with PYTHONDONTWRITEBYTECODE set, a checkout would be compiled again by every new interpreter.
        src = compiled_copy(src, tmp / "src-current")
        baseline = compiled_copy(args.baseline, tmp / "src-baseline") if args.baseline else None
        models_dir = tmp / "models"
        t = time.perf_counter()  # Silero VAD's matrix-product graph is derived once, as a user's first run does
        prep_vad = [sys.executable, "-c", "import sys; from pathlib import Path; from callqa import model_loaders; "
                    "model_loaders.silero_vad_session(Path(sys.argv[1]))", str(models_dir)]  # fmt: skip
        subprocess.run(prep_vad, check=True, env={**os.environ, "PYTHONPATH": str(src)})
        print(f"Silero VAD graph derived (once, into the models dir): {time.perf_counter() - t:.1f} s")
        if weights is not None:  # the NISQA export is made once per weights, as a user's first run makes it
            t = time.perf_counter()
            prep = [
                sys.executable,
                "-c",
                "import sys; from pathlib import Path; from callqa.quality import nisqa; "
                "nisqa.onnx_model(Path(sys.argv[1]), Path(sys.argv[2]))",
                str(weights),
                str(models_dir),
            ]
            subprocess.run(prep, check=True, env={**os.environ, "PYTHONPATH": str(src)})
            print(f"NISQA ONNX export from the weights (once, into the models dir): {time.perf_counter() - t:.1f} s")
        if args.set:
            print("analysis settings changed for every run: " + ", ".join(args.set))
        print(f"2 legs x {bench_calls.SECONDS} s, 8 kHz G.711 u-law; cold = first analysis in a fresh process "
              f"(models loaded); warm = median of {args.runs} runs; cpu = process CPU time of that run (all "
              "threads); stages in s, summed over legs; peak RSS of the process")  # fmt: skip
        results: dict[tuple[str, bool], dict] = {}
        base_results: dict[tuple[str, bool], list[dict]] = {}
        print(HEADER)
        for name, paths in calls.items():
            for use_nisqa in (False, True) if weights else (False,):
                key = (name, use_nisqa)
                w = weights if use_nisqa else None
                label = f"{name}{' + NISQA' if use_nisqa else ''}"
                if baseline:
                    cur_runs, base_runs = [], []
                    for _ in range(args.repeat):
                        base_runs.append(run_worker(baseline, paths, w, models_dir, args.runs, args.set))
                        cur_runs.append(run_worker(src, paths, w, models_dir, args.runs, args.set))
                        print(fmt_row(label + " (baseline)", base_runs[-1]))
                        print(fmt_row(label, cur_runs[-1]), flush=True)
                    base_results[key] = base_runs
                    results[key] = cur_runs[len(cur_runs) // 2]
                    ratio = statistics.median(
                        c["median"]["wall"] / b["median"]["wall"] for c, b in zip(cur_runs, base_runs, strict=True)
                    )
                    print(f"  current / baseline warm wall: {ratio:.2f} (median over {args.repeat} pairs)")
                else:
                    results[key] = run_worker(src, paths, w, models_dir, args.runs, args.set)
                    print(fmt_row(label, results[key]), flush=True)
        if "real" in calls:
            trees = [("baseline", baseline), ("current", src)] if baseline else [("", src)]
            for use_nisqa in (False, True) if weights else (False,):
                for _ in range(args.repeat if baseline else 1):
                    for name, tree in trees:
                        w = weights if use_nisqa else None
                        wall, cpu = cold_cli(tree, calls["real"], w, models_dir, tmp, args.set)
                        label = f"{' + NISQA' if use_nisqa else '':8}{f' ({name})' if name else ''}"
                        print(f"cold CLI, real call{label}: {wall:5.2f} s, {cpu:5.2f} s CPU  "
                              "(callqa analyze --no-cache, new interpreter)")  # fmt: skip
        if weights is not None and not args.no_reference and "real" in calls:
            python = reference_venv(args.reference_venv, tmp)
            ref = run_reference(python, weights, calls["real"], tmp)
            ours = results[("real", True)]
            print(f"upstream NISQA (nisqaModel predict_file, whole legs, {ref['torch_threads']} torch threads), "
                  f"real call: {ref['seconds']:.2f} s wall, {ref['cpu']:.2f} s CPU")  # fmt: skip
            print(f"  callqa's whole analysis with NISQA is {ref['seconds'] / ours['median']['wall']:.1f}x faster "
                  f"(NISQA stage alone: {ours['median']['nisqa_s']:.2f} s summed over legs)")  # fmt: skip
            print("  NISQA MOS upstream (whole leg) vs callqa (windows over speech): "
                  + ", ".join(f"{r['mos_pred']:.2f} vs {v['nisqa_mos']:.2f}"
                              for r, v in zip(ref["scores"], ours["scores"].values(), strict=True)))  # fmt: skip
        if args.reference_venv is None:
            shutil.rmtree(tmp / "nisqa-reference", ignore_errors=True)


if __name__ == "__main__":
    main()
