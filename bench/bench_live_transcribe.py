"""Benchmark: live transcription of N concurrent calls fed in real time.

    python bench/bench_live_transcribe.py [--calls 20] [--seconds 60]

Each call is the bundled example call (agent and customer legs, 8 kHz, 41 s), looped to ``--seconds``; the
calls start spread over the 41 s, as independent calls would be (identical calls started together would end
their utterances all at once). A feeder thread delivers every direction's
audio in 20 ms chunks paced by the wall clock, as RTP would arrive, into one LiveTranscriber with the default
model. Prints how many final segments were published and their latency: from the arrival of an utterance's
last audio to its publication (the VAD's 0.5 s end-of-utterance silence included). Target: p95 <= 2 s at 20
calls on 2 cores.
"""

from __future__ import annotations

import argparse
import resource
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--partials", type=float, default=1.5, help="partial every N s while speaking; 0 = off")
    ap.add_argument("--beam", type=int, default=2, help="beam size of the live decoder")
    ap.add_argument("--min-silence", type=float, default=0, help="end-of-utterance silence, s (0 = the default)")
    ap.add_argument("--early", type=float, default=-1, help="decode after this much silence (0 = off, -1 = default)")
    ap.add_argument("--batch", type=int, default=0, help="Whisper windows encoded together (0 = the default)")
    args = ap.parse_args()
    from callqa.audio.decode import decode_file
    from callqa.speech.live import LiveOptions, LiveTranscriber

    rate, chunk = 8000, 160
    legs = {}
    for who in ("agent", "customer"):
        x = decode_file(REPO / "examples" / f"call-{who}.wav", 3600).samples[0]
        legs[who] = np.tile(x, int(np.ceil(args.seconds * rate / x.size)))[: int(args.seconds * rate)]
    events: list[dict] = []
    lock = threading.Lock()

    def publish(event: dict) -> None:
        with lock:
            events.append(event)

    live = LiveTranscriber(
        publish,
        LiveOptions(
            partial_every_s=args.partials,
            vad=replace(LiveOptions().vad, min_silence_ms=int(1000 * args.min_silence))
            if args.min_silence
            else LiveOptions().vad,
            speculate_after_s=LiveOptions().speculate_after_s if args.early < 0 else args.early,
            transcribe=replace(
                LiveOptions().transcribe,
                beam_size=args.beam,
                batch_size=args.batch or LiveOptions().transcribe.batch_size,
            ),
        ),
    )
    cycle = decode_file(REPO / "examples" / "call-agent.wav", 3600).duration_s
    offsets = [k * cycle / args.calls for k in range(args.calls)]  # independent calls: spread over the script
    total = args.seconds + offsets[-1]
    t0 = time.time()
    step = chunk / rate
    n = 0
    while True:
        due = t0 + n * step
        now = time.time()
        if due > now:
            time.sleep(due - now)
        t = n * step
        if t > total:
            break
        for k, off in enumerate(offsets):
            i = int(round((t - off) * rate))
            if 0 <= i < legs["agent"].size:
                for who, x in legs.items():
                    live.feed(f"call-{k}", who, x[i : i + chunk], rate, t - off)
        n += 1
    behind = time.time() - (t0 + n * step)
    for k in range(args.calls):
        live.end_call(f"call-{k}")
    live.close(120)
    finals = [e for e in events if e["type"] == "final"]
    lat = np.array([e["latency_s"] for e in finals])
    expected = args.calls * 6 * args.seconds / 41.0
    print(f"{args.calls} concurrent calls x {args.seconds:.0f} s fed in real time (feeder {behind:+.2f} s behind "
          f"at the end), tiny.en int8 beam {args.beam}, partials every {args.partials:g} s")  # fmt: skip
    print(f"final segments: {len(finals)} (about {expected:.0f} utterances spoken), partials: "
          f"{sum(e['type'] == 'partial' for e in events)}")  # fmt: skip
    if lat.size:
        print(f"final latency: p50 {np.percentile(lat, 50):.2f} s  p95 {np.percentile(lat, 95):.2f} s  "
              f"max {lat.max():.2f} s  (target p95 <= 2 s)")  # fmt: skip
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
