"""Benchmark: the HTTP service under load against the same analyses run directly in one process.

    python bench/bench_service.py [--calls 50] [--clients 50] [--workers 1]

Makes N distinct 3-minute two-leg 8 kHz u-law calls (the bundled example looped, each shifted and with its own
faint noise, so no two share a cache key), then:
1. direct: a fresh process analyses them one after another (models loaded first): calls per second;
2. service: ``callqa serve`` under uvicorn on 127.0.0.1; N concurrent clients each POST one call to
   /analyze?wait=600 (following 202s and 429 Retry-After if they come); throughput, errors, lost jobs;
   meanwhile a probe GETs a stored report (/calls/{id}) every 100 ms: latency percentiles under load;
3. idle: 1000 sequential cached GET /calls/{id}: latency percentiles.
Prints the figures and the throughput ratio (target: service >= 90% of direct; cached GET p99 < 20 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
RATE, SECONDS = 8000, 180


def make_calls(out_dir: Path, n: int) -> list[list[Path]]:
    from callqa.audio.decode import decode_file

    legs = {who: decode_file(REPO / "examples" / f"call-{who}.wav", 3600).samples[0] for who in ("agent", "customer")}
    rng = np.random.default_rng(7)
    calls = []
    for i in range(n):
        paths = []
        for who, x in legs.items():
            y = np.tile(np.roll(x, i * 997), int(np.ceil(SECONDS * RATE / x.size)))[: SECONDS * RATE]
            y = y + rng.normal(0, 1e-4, y.size)
            path = out_dir / f"call{i:03d}-{who}.wav"
            with av.open(str(path), "w", format="wav") as c:
                stream = c.add_stream("pcm_mulaw", rate=RATE, layout="mono")
                pcm = (np.clip(y, -1, 1) * 32767).astype(np.int16)[None]
                frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
                frame.sample_rate = RATE
                for p in [*stream.encode(frame), *stream.encode(None)]:
                    c.mux(p)
            paths.append(path)
        calls.append(paths)
    return calls


DIRECT = """
import json, sys, time
from pathlib import Path
from callqa.config import AnalysisSettings, Settings
from callqa.service.recordings import analyze_recording
from callqa import model_loaders
calls = json.loads(sys.argv[1])
settings = Settings(analysis=AnalysisSettings(nisqa=False))
model_loaders.silero_vad(); model_loaders.dnsmos_sessions()
t = time.perf_counter()
for legs in calls:
    analyze_recording([Path(p) for p in legs], settings)
print(time.perf_counter() - t)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def client(http: httpx.AsyncClient, legs: list[Path], auth: dict[str, str], out: dict[str, object]) -> None:
    files = [("files", (p.name, p.read_bytes(), "audio/wav")) for p in legs]
    while True:
        r = await http.post("/analyze?wait=600", headers=auth, files=files)
        if r.status_code == 429:
            await asyncio.sleep(float(r.headers.get("retry-after", "1")))
            out["retries_429"] = int(out.get("retries_429", 0)) + 1  # type: ignore[call-overload]
            continue
        break
    while r.status_code == 202:
        r = await http.get(f"/jobs/{r.json()['id']}?wait=600", headers=auth)
        if r.json().get("status") == "done":
            break
    out[str(legs[0])] = r.status_code


async def probe(http: httpx.AsyncClient, call_id: str, auth: dict[str, str], stop: asyncio.Event,
                latencies: list[float]) -> None:  # fmt: skip
    while not stop.is_set():
        t = time.perf_counter()
        r = await http.get(f"/calls/{call_id}", headers=auth)
        if r.status_code == 200:
            latencies.append((time.perf_counter() - t) * 1000)
        await asyncio.sleep(0.1)


async def load(base: str, calls: list[list[Path]], clients: int, auth: dict[str, str],
               warm_id: str) -> dict[str, object]:  # fmt: skip
    limits = httpx.Limits(max_connections=clients + 5)
    async with httpx.AsyncClient(base_url=base, timeout=900, limits=limits) as http:
        results: dict[str, object] = {}
        under_load: list[float] = []
        stop = asyncio.Event()
        probe_task = asyncio.create_task(probe(http, warm_id, auth, stop, under_load))
        sem = asyncio.Semaphore(clients)

        async def one(legs: list[Path]) -> None:
            async with sem:
                await client(http, legs, auth, results)

        t = time.perf_counter()
        await asyncio.gather(*(one(legs) for legs in calls))
        wall = time.perf_counter() - t
        stop.set()
        await probe_task
        idle = []
        for _ in range(1000):
            t0 = time.perf_counter()
            r = await http.get(f"/calls/{warm_id}", headers=auth)
            idle.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200
        jobs = (await http.get("/metrics", headers=auth)).text
    codes = [v for k, v in results.items() if k != "retries_429"]
    return {"wall": wall, "codes": codes, "retries_429": results.get("retries_429", 0), "under_load": under_load,
            "idle": idle, "metrics": jobs}  # fmt: skip


def rss_tree_mb(pid: int) -> float:
    """Current RSS of a process and its children (MB)."""
    total = 0
    for p in [str(pid), *subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def wait_ready(base: str, auth: dict[str, str], timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/ready", headers=auth).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the service did not become ready")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="callqa-bench-") as tmp_name:
        tmp = Path(tmp_name)
        calls = make_calls(tmp, args.calls + 1)
        warm, calls = calls[0], calls[1:]
        print(f"{len(calls)} distinct 3-minute two-leg calls; {args.clients} clients; {args.workers} worker(s)")

        run = subprocess.run([sys.executable, "-c", DIRECT, json.dumps([[str(p) for p in c] for c in calls])],
                             capture_output=True, text=True, check=True)  # fmt: skip
        direct_s = float(run.stdout.strip().splitlines()[-1])
        print(
            f"direct, one process:   {direct_s:7.1f} s  {len(calls) / direct_s:.3f} calls/s  "
            f"({direct_s / len(calls):.2f} s a call)"
        )

        from callqa.api.keys import KeyStore
        from callqa.store import Store

        db = tmp / "service.sqlite3"
        token = KeyStore(Store(db)).create("write", "bench")
        auth = {"Authorization": f"Bearer {token}"}
        port = free_port()
        env = {**os.environ, "CALLQA_DB": str(db), "CALLQA_ANALYSIS__NISQA": "false",
               "CALLQA_API__WORKERS": str(args.workers), "CALLQA_API__RATE_PER_MINUTE": "100000"}  # fmt: skip
        server = subprocess.Popen([str(Path(sys.executable).parent / "callqa"), "serve", "--port", str(port)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base, auth, 120)
            files = [("files", (p.name, p.read_bytes(), "audio/wav")) for p in warm]
            warm_id = httpx.post(base + "/analyze?wait=600", headers=auth, files=files, timeout=600).json()["id"]
            peak = [0.0]

            async def watch(stop: asyncio.Event) -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], rss_tree_mb(server.pid))
                    await asyncio.sleep(0.5)

            async def both() -> dict[str, object]:
                stop = asyncio.Event()
                w = asyncio.create_task(watch(stop))
                res = await load(base, calls, args.clients, auth, warm_id)
                stop.set()
                await w
                return res

            res = asyncio.run(both())
        finally:
            server.terminate()
            server.wait(30)
        wall = float(res["wall"])  # type: ignore[arg-type]
        codes: list[int] = res["codes"]  # type: ignore[assignment]
        ok = sum(1 for c in codes if c == 200)
        print(
            f"service, {args.clients} clients: {wall:7.1f} s  {len(calls) / wall:.3f} calls/s  "
            f"answered {len(codes)}/{len(calls)}, 200 OK {ok}, errors {len(codes) - ok}, "
            f"429 retries {res['retries_429']}"
        )
        print(f"throughput ratio service/direct: {direct_s / wall:.1%}  (target >= 90%)")
        under: list[float] = res["under_load"]  # type: ignore[assignment]
        idle: list[float] = res["idle"]  # type: ignore[assignment]
        print(
            f"GET /calls/{{id}} under load: n={len(under)} p50 {pct(under, 50):.1f} ms  p99 {pct(under, 99):.1f} ms  "
            f"max {max(under, default=float('nan')):.1f} ms"
        )
        print(
            f"GET /calls/{{id}} idle:       n={len(idle)} p50 {pct(idle, 50):.1f} ms  p99 {pct(idle, 99):.1f} ms  "
            f"(target p99 < 20 ms)"
        )
        print(f"service peak RSS (main + workers): {peak[0]:.0f} MB")
        done = [line for line in str(res["metrics"]).splitlines() if line.startswith("callqa_jobs_total")]
        print("jobs: " + ", ".join(done) + f"; median of idle GETs {statistics.median(idle):.1f} ms")


if __name__ == "__main__":
    main()
