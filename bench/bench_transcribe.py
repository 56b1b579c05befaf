"""Benchmark: transcription and conversation metrics of a 3-minute two-leg call, against the plain approach.

    python bench/bench_transcribe.py [--runs 3]

The call is the bench_pipeline call (the bundled example legs looped to 180 s, 8 kHz u-law). Prints, median of
N warm runs (model loaded):
- callqa: the transcription + conversation + rules stage (``timings.transcribe_s``) and the whole analysis
  with and without ``transcribe``;
- plain: faster-whisper with the same model (tiny.en, int8, word timestamps, beam 5) on each whole leg;
and the words each approach produced.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import make_call  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    from callqa import model_loaders
    from callqa.audio.decode import decode_file
    from callqa.audio.resample import resample
    from callqa.config import AnalysisSettings, Settings
    from callqa.service.recordings import analyze_recording

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_call(Path(tmp))
        plain_settings = Settings(db=Path(tmp) / "a.sqlite3", analysis=AnalysisSettings(nisqa=False))
        with_text = Settings(db=Path(tmp) / "b.sqlite3", analysis=AnalysisSettings(nisqa=False, transcribe=True))
        analyze_recording(paths, with_text)  # warm-up: loads every model
        stage, whole, base = [], [], []
        for _ in range(args.runs):
            t = time.perf_counter()
            report, _ = analyze_recording(paths, with_text)
            whole.append(time.perf_counter() - t)
            stage.append(report.timings.transcribe_s)
            t = time.perf_counter()
            analyze_recording(paths, plain_settings)
            base.append(time.perf_counter() - t)
        ours_words = sum(len(u.words) for u in report.transcript)

        model = model_loaders.whisper()
        legs = [resample(decode_file(p, 3600).samples[0], 8000, 16000) for p in paths]
        plain, plain_words = [], 0
        for _ in range(args.runs):
            t = time.perf_counter()
            plain_words = 0
            for x in legs:
                segments, _ = model.transcribe(x, language="en", beam_size=5, word_timestamps=True)
                plain_words += sum(len(s.words or []) for s in segments)
            plain.append(time.perf_counter() - t)
    m = statistics.median
    print(f"3-minute two-leg call, tiny.en int8, median of {args.runs} warm runs")
    print(f"callqa transcription + conversation stage: {m(stage):6.2f} s  ({ours_words} words)")
    print(f"callqa whole analysis with transcript:     {m(whole):6.2f} s  (without: {m(base):.2f} s, "
          f"difference {m(whole) - m(base):.2f} s)")  # fmt: skip
    print(f"plain faster-whisper on each whole leg:    {m(plain):6.2f} s  ({plain_words} words)")
    print(f"speed-up of the stage over the plain approach: {m(plain) / m(stage):.1f}x  (target: stage <= 6 s)")


if __name__ == "__main__":
    main()
