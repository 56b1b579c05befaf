"""Detection benchmark: the labelled suite of bench/gen_oneway.py through the real analysis path (stereo files
through ``legs_from_files``, captures through ``analyze_capture``), scored per class.

    python bench/bench_detection.py [--per-class 12] [--seed 1] [--espeak-only] [--keep DIR] [--classes A,B]

``--keep DIR`` writes the suite there and keeps it; when DIR already holds one (labels.json) it is analysed
again without generating (e.g. to compare two versions of the detectors on the same calls).

Prints per class: calls, detection rate (the expected finding on the expected side), false alarms (a one-way
finding of warning or critical where none belongs, on the wrong side, or a wrong verdict), the median error of
``start_s`` against the moment the audio was lost; then the targets and whether they are met.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_oneway  # noqa: E402

from callqa.config import AnalysisSettings, Settings  # noqa: E402
from callqa.pipeline import analyze_legs  # noqa: E402
from callqa.report import CallReport  # noqa: E402
from callqa.service.captures import analyze_capture  # noqa: E402
from callqa.service.recordings import legs_from_files  # noqa: E402

TARGETS = {"one_way_detection": 0.99, "false_alarms": 0.01, "dominant_false_alarms": 0.01, "start_error_s": 3.0,
           "dead_air_detection": 0.98}  # fmt: skip


def analyse(path: Path, label: dict[str, Any], settings: Settings) -> CallReport:
    if label["kind"] == "capture":
        reports, _ = analyze_capture(path, settings, store=None, use_cache=False)
        (report,) = reports
        return report
    roles = None if label["mixed"] else ["agent", "customer"]
    legs, warnings = legs_from_files([path], settings, roles)  # type: ignore[list-item]
    return analyze_legs(legs, settings, warnings)


def judge(label: dict[str, Any], report: CallReport) -> dict[str, Any]:
    """detected (None where the class has nothing to detect), false_alarm, start_error_s."""
    one_way = [f for f in report.findings if f.code == "one_way_audio" and f.severity != "info"]
    out: dict[str, Any] = {"detected": None, "false_alarm": False, "start_error_s": None}
    if label["oneway"]:
        hit = [f for f in one_way if f.leg == label["oneway"]]
        out["detected"] = bool(hit) and report.verdict == "failed"
        out["false_alarm"] = any(f.leg != label["oneway"] for f in one_way)
        if hit and hit[0].start_s is not None:
            out["start_error_s"] = abs(hit[0].start_s - label["start_s"])
        return out
    out["false_alarm"] = bool(one_way)
    if label["dead_air"]:
        a, b = label["dead_air"]
        found = [f for f in report.findings if f.code == "dead_air" and f.start_s is not None and f.end_s is not None
                 and min(b, f.end_s) - max(a, f.start_s) >= 0.5 * (b - a)]  # fmt: skip
        out["detected"] = bool(found)
    elif label["mixed"]:
        out["detected"] = [leg.role for leg in report.legs] == ["mixed"] and any(
            "same signal" in w for w in report.warnings
        )
    elif label["no_media"]:
        out["detected"] = any(f.code == "no_media" and f.severity == "critical" for f in report.findings)
        out["detected"] = out["detected"] and report.verdict == "failed"
    elif label["loss"]:
        out["detected"] = any(f.code == "packet_loss" and f.leg == label["loss"] for f in report.findings)
    return out


def run(per_class: int, seed: int, espeak_only: bool, keep: Path | None, classes: list[str] | None = None) -> int:
    settings = Settings(analysis=AnalysisSettings(nisqa=False, dnsmos=False))
    with tempfile.TemporaryDirectory() as tmp:
        out = keep or Path(tmp)
        t0 = time.perf_counter()
        if keep is not None and (keep / "labels.json").is_file():  # a suite written before: analyse it again
            labels = [x for x in json.loads((keep / "labels.json").read_text()) if not classes or x["cls"] in classes]
        else:
            labels = [asdict(x) for x in gen_oneway.build(out, per_class, seed, espeak_only, classes)]
        t_gen = time.perf_counter() - t0
        rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        t0 = time.perf_counter()
        for label in labels:
            report = analyse(out / label["notes"]["file"], label, settings)
            result = judge(label, report)
            rows[label["cls"]].append(result)
            if result["false_alarm"] or result["detected"] is False:
                found = [(f.code, f.severity, f.leg, f.start_s) for f in report.findings]
                expected = f"{label['oneway'] or label['dead_air'] or ''} {label['start_s'] or ''}"
                print(f"  miss/false alarm {label['name']} ({label['variant'] or '-'}): expected {expected}; "
                      f"found {found}", flush=True)  # fmt: skip
        t_run = time.perf_counter() - t0
    print(
        f"\n{len(labels)} calls, generated in {t_gen:.0f} s, analysed in {t_run:.0f} s "
        f"({t_run / max(1, len(labels)):.2f} s per call), seed {seed}{', espeak only' if espeak_only else ''}\n"
    )
    print(f"{'class':22} {'calls':>5} {'detected':>9} {'false alarms':>13} {'median |start error| s':>23}")
    for cls in gen_oneway.CLASSES:
        r = rows.get(cls, [])
        if not r:
            continue
        det = [x["detected"] for x in r if x["detected"] is not None]
        errs = [x["start_error_s"] for x in r if x["start_error_s"] is not None]
        fa = sum(x["false_alarm"] for x in r)
        print(
            f"{cls:22} {len(r):5} {_rate(det):>9} {f'{fa}/{len(r)}':>13} "
            f"{(f'{statistics.median(errs):.2f}' if errs else '-'):>23}"
        )
    ow = [x for c in gen_oneway.ONE_WAY_CLASSES for x in rows.get(c, [])]
    neg = [x for c, r in rows.items() if c not in gen_oneway.ONE_WAY_CLASSES for x in r]
    dom = rows.get("dominant", []) + rows.get("cap_dominant", [])
    dead = rows.get("dead_air", []) + rows.get("cap_dead_air", [])
    errs = [x["start_error_s"] for x in ow if x["start_error_s"] is not None]
    figures = {
        "one_way_detection": sum(bool(x["detected"]) for x in ow) / max(1, len(ow)),
        "false_alarms": sum(x["false_alarm"] for x in rows_all(rows)) / max(1, len(rows_all(rows))),
        "dominant_false_alarms": sum(x["false_alarm"] for x in dom) / max(1, len(dom)),
        "start_error_s": statistics.median(errs) if errs else float("inf"),
        "dead_air_detection": sum(bool(x["detected"]) for x in dead) / max(1, len(dead)),
    }
    print(f"\none-way calls {len(ow)}, other calls {len(neg)}")
    failed = 0
    for key, target in TARGETS.items():
        value = figures[key]
        ok = value <= target if key in ("false_alarms", "dominant_false_alarms", "start_error_s") else value >= target
        failed += not ok
        sign = "<=" if key in ("false_alarms", "dominant_false_alarms", "start_error_s") else ">="
        print(f"{key:24} {value:7.3f}  target {sign} {target}  {'met' if ok else 'NOT MET'}")
    return 1 if failed else 0


def rows_all(rows: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [x for r in rows.values() for x in r]


def _rate(values: list[bool]) -> str:
    return f"{sum(values)}/{len(values)}" if values else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-class", type=int, default=12)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--espeak-only", action="store_true")
    ap.add_argument("--keep", type=Path, help="write the suite here and keep it (or analyse the one already there)")
    ap.add_argument("--classes", help="comma-separated classes (default: all)")
    args = ap.parse_args()
    classes = args.classes.split(",") if args.classes else None
    sys.exit(run(args.per_class, args.seed, args.espeak_only, args.keep, classes))


if __name__ == "__main__":
    main()
