"""Capture sites: how fast a site spools calls and how fast a backlog drains into the central service.

    python bench/bench_sites.py [--calls 500] [--audio-calls 20] [--audio-minutes 3]

Makes ``--calls`` captured calls (``bench/gen_capture.py``, 10 s each, statistics only) with a site name, then:
spools them (fsync per call), delivers the backlog to a central service under uvicorn on 127.0.0.1 (its write
rate limit raised so the figure is the service's, not the limiter's), and does the same for ``--audio-calls``
calls each with two kept legs of ``--audio-minutes`` of 8 kHz audio. Prints calls/s, MB/s and CPU time of this
process (the central service runs in it too, on threads), with the load average.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_capture  # noqa: E402

from callqa.api.keys import KeyStore  # noqa: E402
from callqa.api.main import create_app  # noqa: E402
from callqa.audio.wav import write_wav  # noqa: E402
from callqa.config import ApiSettings, Settings, SiteSettings  # noqa: E402
from callqa.service.captures import analyze_capture  # noqa: E402
from callqa.service.outbox import Outbox, Sender  # noqa: E402
from callqa.store import Store  # noqa: E402


def reports(tmp: Path, n: int):  # type: ignore[no-untyped-def]
    rng = random.Random(1)
    packets = [p for i in range(n) for p in gen_capture.call_packets(i, 1_700_000_000.0 + i, 10.0, rng)]
    path = tmp / "calls.pcap"
    gen_capture.write_pcap(path, sorted(packets, key=lambda p: p[0]))
    out, _ = analyze_capture(path, Settings(db=tmp / "site.sqlite3"), stats_only=True)
    return [r.model_copy(update={"site": "bench"}) for r in out]


def central(tmp: Path) -> tuple[str, str, object]:
    import uvicorn

    settings = Settings(db=tmp / "central.sqlite3", api=ApiSettings(rate_per_minute=10**7, max_upload_bytes=2**30))
    key = KeyStore(Store(settings.db)).create("write", "bench")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings, provider=None), host="127.0.0.1", port=port,
                                           log_level="warning"))  # fmt: skip
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", key, server


def measure(label: str, box: Outbox, items: list, url: str, key: str) -> None:  # type: ignore[type-arg]
    t0, c0 = time.perf_counter(), time.process_time()
    for report, legs in items:
        box.put(report, legs)
    t1, c1 = time.perf_counter(), time.process_time()
    size = box.bytes
    sender = Sender(box, url, key, SiteSettings(retry_min_s=0.1, retry_max_s=1)).start()
    sender.close(drain_s=3600)
    t2, c2 = time.perf_counter(), time.process_time()
    n = len(items)
    print(f"{label}: {n} calls, spool {size / 1e6:.1f} MB ({size / n / 1e3:.1f} kB a call)")
    print(f"  spooled   {n / (t1 - t0):8.1f} calls/s  {size / 1e6 / (t1 - t0):7.1f} MB/s  "
          f"wall {t1 - t0:.2f} s, CPU {c1 - c0:.2f} s")  # fmt: skip
    print(f"  delivered {n / (t2 - t1):8.1f} calls/s  {size / 1e6 / (t2 - t1):7.1f} MB/s  "
          f"wall {t2 - t1:.2f} s, CPU {c2 - c1:.2f} s (site and central)  stored {sender.sent}, "
          f"left {len(box.pending())}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--audio-calls", type=int, default=20)
    ap.add_argument("--audio-minutes", type=float, default=3.0)
    args = ap.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        made = reports(tmp, args.calls + args.audio_calls)
        url, key, server = central(tmp)
        box = Outbox(tmp / "outbox", 2**40)
        measure("reports only", box, [(r, []) for r in made[: args.calls]], url, key)
        rng = np.random.default_rng(1)
        n = int(args.audio_minutes * 60 * 8000)
        with_audio = []
        for r in made[args.calls :]:
            legs = [write_wav(tmp / "legs" / r.id / f"{i}-{role}.wav", rng.uniform(-0.3, 0.3, n), 8000)
                    for i, role in enumerate(("caller", "callee"))]  # fmt: skip
            # a statistics-only report has no legs: give it two so the central side takes the audio
            with_audio.append((r.model_copy(update={"legs": [_leg(role, args.audio_minutes) for role in
                                                             ("caller", "callee")]}), legs))  # fmt: skip
        measure(f"with two {args.audio_minutes:g}-minute legs of audio", box, with_audio, url, key)
        box.close()
        server.should_exit = True  # type: ignore[attr-defined]
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _leg(role: str, minutes: float):  # type: ignore[no-untyped-def]
    from callqa.report import LegReport, Levels, Mos

    return LegReport(role=role, source=f"live:bench/{role}", sample_rate=8000, duration_s=minutes * 60,  # type: ignore[arg-type]
                     levels=Levels(rms_dbfs=-20, peak_dbfs=-10, clipping_ratio=0), speech_ratio=0.5,
                     speech_s=minutes * 30, speech_segments=[], silences=[], mos=Mos())  # fmt: skip


if __name__ == "__main__":
    main()
