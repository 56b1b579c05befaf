"""Benchmark: full default analysis of a 3-minute two-leg 8 kHz G.711 call.

    python bench/bench_pipeline.py [--nisqa-weights PATH] [--reference-python PATH] [--runs N]

Builds the call from the bundled example legs (looped to 180 s, u-law WAV), then prints:
- warm wall time per call (median of N runs, models loaded) and per stage, without and with NISQA;
- peak RSS of a fresh process that loads the models and analyses the call once;
- with --reference-python (an interpreter that has speechmos + librosa installed), the time of speechmos's own
  ``dnsmos.run`` on the same two legs, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
RATE = 8000
SECONDS = 180


def make_call(out_dir: Path) -> list[Path]:
    from callqa.audio.decode import decode_file

    paths = []
    for who in ("agent", "customer"):
        x = decode_file(REPO / "examples" / f"call-{who}.wav", 3600).samples[0]
        x = np.tile(x, int(np.ceil(SECONDS * RATE / x.size)))[: SECONDS * RATE]
        path = out_dir / f"bench-{who}.wav"
        with av.open(str(path), "w", format="wav") as c:
            stream = c.add_stream("pcm_mulaw", rate=RATE, layout="mono")
            frame = av.AudioFrame.from_ndarray((x * 32767).astype(np.int16)[None], format="s16", layout="mono")
            frame.sample_rate = RATE
            for p in [*stream.encode(frame), *stream.encode(None)]:
                c.mux(p)
        paths.append(path)
    return paths


def timed_runs(paths: list[Path], weights: Path | None, runs: int) -> tuple[float, dict[str, float]]:
    from callqa.config import AnalysisSettings, Settings
    from callqa.service.recordings import analyze_recording

    settings = Settings(analysis=AnalysisSettings(nisqa=weights is not None), nisqa_weights=weights)
    analyze_recording(paths, settings)  # warm-up: loads the models
    walls, stages = [], []
    for _ in range(runs):
        t = time.perf_counter()
        report, _ = analyze_recording(paths, settings)
        walls.append(time.perf_counter() - t)
        stages.append(report.timings.model_dump())
    median = {k: statistics.median(s[k] for s in stages) for k in stages[0]}
    return statistics.median(walls), median


RSS_SCRIPT = """
import resource, sys
from pathlib import Path
from callqa.config import AnalysisSettings, Settings
from callqa.service.recordings import analyze_recording
w = Path(sys.argv[3]) if len(sys.argv) > 3 else None
analyze_recording([Path(sys.argv[1]), Path(sys.argv[2])], Settings(analysis=AnalysisSettings(nisqa=w is not None),
              nisqa_weights=w))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

REFERENCE_SCRIPT = """
import json, sys, time
import numpy as np, soundfile as sf
from scipy.signal import resample_poly
from speechmos import dnsmos
legs = []
for p in sys.argv[1:]:
    x, sr = sf.read(p)
    legs.append(resample_poly(x, 2, 1))
dnsmos.run(legs[0][:16000 * 10], 16000)  # load the models outside the timing
t = time.perf_counter()
scores = [dnsmos.run(x, 16000) for x in legs]
print(json.dumps({"seconds": time.perf_counter() - t, "ovrl": [float(s["ovrl_mos"]) for s in scores]}))
"""


def peak_rss_mb(paths: list[Path], weights: Path | None) -> float:
    args = [sys.executable, "-c", RSS_SCRIPT, *map(str, paths), *([str(weights)] if weights else [])]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=600).stdout
    return int(out.strip().splitlines()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nisqa-weights", type=Path)
    ap.add_argument("--reference-python", help="python with speechmos + librosa, to time upstream dnsmos.run")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_call(Path(tmp))
        print(f"call: 2 legs x {SECONDS} s, 8 kHz G.711 u-law; {args.runs} warm runs, median")
        wall, stages = timed_runs(paths, None, args.runs)
        print(f"{'default analysis (no NISQA)':34} {wall:6.2f} s   target <= 1.50 s")
        print("  per stage (summed over legs, legs run in parallel): "
              + ", ".join(f"{k} {v:.2f}" for k, v in stages.items() if k != "total_s"))  # fmt: skip
        print(f"{'peak RSS, fresh process':34} {peak_rss_mb(paths, None):6.0f} MB  target < 500 MB")
        if args.nisqa_weights:
            wall_n, stages_n = timed_runs(paths, args.nisqa_weights, args.runs)
            print(f"{'with NISQA':34} {wall_n:6.2f} s   adds {wall_n - wall:.2f} s (target <= 1.00 s)")
            print(f"{'peak RSS with NISQA':34} {peak_rss_mb(paths, args.nisqa_weights):6.0f} MB")
        if args.reference_python:
            out = subprocess.run([args.reference_python, "-c", REFERENCE_SCRIPT, *map(str, paths)],
                                 capture_output=True, text=True, check=True, timeout=3600).stdout  # fmt: skip
            ref = json.loads(out.strip().splitlines()[-1])
            print(f"{'speechmos dnsmos.run, both legs':34} {ref['seconds']:6.2f} s   "
                  f"(callqa's DNSMOS stage {stages['dnsmos_s']:.2f} s; whole callqa analysis is "
                  f"{ref['seconds'] / wall:.0f}x faster)")  # fmt: skip


if __name__ == "__main__":
    main()
