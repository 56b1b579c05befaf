"""Benchmark: N calls through the HTTP API with 1, 2 and 4 worker processes, on the queue (PostgreSQL + RabbitMQ,
``callqa worker``) and on the default (SQLite, the service's in-process pool).

    python bench/bench_scale.py [--calls 500] [--seconds 20] [--workers 1,2,4] [--backends postgresql,sqlite]

Makes N distinct two-leg 8 kHz calls of ``--seconds`` from the bundled example recordings (each shifted and with
its own faint noise, so no two share a cache key). For each backend and worker count: a fresh store (a new SQLite
file, or a new PostgreSQL database and queue), ``callqa serve`` on 127.0.0.1 and, for the queue, one
``callqa worker --processes W``; the workers load their models first (a warm-up call, not counted); then one
client uploads every call (POST /analyze, 202 each, 429s retried) while the workers run. Figures from the job rows:
throughput (calls / (last job done - first job created)), latency per job (created -> done) p50/p95, jobs lost
(accepted but not done: must be 0), the load average before and after, and the CPU seconds of the workers per
call. Needs PostgreSQL (CALLQA_BENCH_PG, default postgresql://postgres@127.0.0.1:5432/postgres) and RabbitMQ
(CALLQA_BENCH_AMQP, default amqp://guest:guest@127.0.0.1:5672/%2F) for the queue rows.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from bench_service import free_port, make_calls, wait_ready  # noqa: E402 - the same generated calls and wait

PG = os.environ.get("CALLQA_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP = os.environ.get("CALLQA_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of these processes and their children so far."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    seen: set[str] = set()
    todo = [str(p) for p in pids]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            continue
        todo += subprocess.run(["pgrep", "-P", p], capture_output=True, text=True).stdout.split()
    return total


def post(base: str, auth: dict[str, str], legs: list[Path], wait: float = 0) -> httpx.Response:
    files = [("files", (p.name, p.read_bytes(), "audio/wav")) for p in legs]
    while True:
        r = httpx.post(f"{base}/analyze?wait={wait}", headers=auth, files=files, timeout=900)
        if r.status_code != 429:
            return r
        time.sleep(float(r.headers.get("retry-after", "1")))


def run(backend: str, workers: int, calls: list[list[Path]], warm: list[list[Path]], tmp: Path) -> dict[str, Any]:
    from callqa.api.keys import KeyStore
    from callqa.db import close_pools
    from callqa.store import Store

    env = {**os.environ, "CALLQA_ANALYSIS__NISQA": "false", "CALLQA_API__RATE_PER_MINUTE": "1000000",
           "CALLQA_API__QUEUE_MAX": str(len(calls) + 10), "CALLQA_WORK_DIR": str(tmp / f"{backend}{workers}"),
           "CALLQA_LLM__PROVIDER": "offline"}  # fmt: skip
    dbname = ""
    queue = f"callqa-bench-{secrets.token_hex(4)}"
    if backend == "sqlite":
        db: str = str(tmp / f"bench{workers}.sqlite3")
        env |= {"CALLQA_DB": db, "CALLQA_API__WORKERS": str(workers)}
    else:
        import psycopg

        dbname = f"callqa_bench_{secrets.token_hex(4)}"
        with psycopg.connect(PG, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {dbname}")
        db = PG.rsplit("/", 1)[0] + "/" + dbname
        env |= {"CALLQA_DB": db, "CALLQA_BROKER": AMQP, "CALLQA_QUEUE_NAME": queue, "CALLQA_API__WORKERS": str(workers)}
    store = Store(db)
    auth = {"Authorization": f"Bearer {KeyStore(store).create('write', 'bench')}"}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cli = [sys.executable, "-m", "callqa.cli"]
    procs = [subprocess.Popen([*cli, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]  # fmt: skip
    if backend != "sqlite":
        procs.append(subprocess.Popen([*cli, "worker", "--processes", str(workers)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
    try:
        wait_ready(base, auth)
        for legs in warm[:workers]:  # every worker loads its models (not counted)
            r = post(base, auth, legs)
            assert r.status_code in (200, 202), r.text
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with store.connect() as conn:
                if conn.execute("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')").fetchone()[0] == 0:
                    break
            time.sleep(0.2)
        with store.connect() as conn:
            warm_ids = {r[0] for r in conn.execute("SELECT id FROM jobs").fetchall()}
        load_before = os.getloadavg()
        cpu0 = cpu_s([p.pid for p in procs])
        t0 = time.time()
        accepted = []
        for legs in calls:
            r = post(base, auth, legs)
            assert r.status_code == 202, r.text
            accepted.append(r.json()["id"])
        submit_s = time.time() - t0
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            with store.connect() as conn:
                left = conn.execute("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')").fetchone()[0]
            if left == 0:
                break
            time.sleep(0.5)
        cpu = cpu_s([p.pid for p in procs]) - cpu0
        load_after = os.getloadavg()
        with store.connect() as conn:
            rows = [r for r in conn.execute("SELECT id, status, created_at, updated_at, worker FROM jobs").fetchall()
                    if r[0] not in warm_ids]  # fmt: skip
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        close_pools()
        if dbname:
            import pika
            import psycopg

            with psycopg.connect(PG, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
            conn_ = pika.BlockingConnection(pika.URLParameters(AMQP))
            ch = conn_.channel()
            for q in (queue, f"{queue}.DQ", f"{queue}.XQ"):
                ch.queue_delete(q)
            conn_.close()
    done = [r for r in rows if r[1] == "done"]
    lat = [r[3] - r[2] for r in done]
    span = max(r[3] for r in done) - min(r[2] for r in rows) if done else float("nan")
    return {"backend": backend, "workers": workers, "calls": len(accepted), "done": len(done),
            "failed": sum(r[1] == "failed" for r in rows), "lost": len(accepted) - len(done),
            "calls_per_s": len(done) / span, "per_hour": 3600 * len(done) / span, "submit_s": submit_s,
            "p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
            "cpu_per_call": cpu / max(1, len(done)), "ran_on": len({r[4] for r in rows if r[4]}),
            "load_before": load_before, "load_after": load_after}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--seconds", type=int, default=20, help="length of each generated call")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--backends", default="postgresql,sqlite")
    args = ap.parse_args()
    import bench_service

    bench_service.SECONDS = args.seconds
    counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="callqa-bench-") as tmp_name:
        tmp = Path(tmp_name)
        every = make_calls(tmp, args.calls + max(counts))
        warm, calls = every[: max(counts)], every[max(counts) :]
        print(f"{len(calls)} distinct {args.seconds}-s two-leg calls; {os.cpu_count()} cores; "
              f"load average at start {os.getloadavg()[0]:.2f}")  # fmt: skip
        print(f"{'backend':<11} {'workers':>7} {'done':>5} {'lost':>4} {'failed':>6} {'calls/s':>8} {'calls/h':>8} "
              f"{'p50 s':>7} {'p95 s':>7} {'CPU s/call':>10} {'submit s':>8} {'ran on':>6}  "
              "load avg before -> after")  # fmt: skip
        for backend in args.backends.split(","):
            for w in counts:
                r = run(backend, w, calls, warm, tmp)
                print(f"{r['backend']:<11} {r['workers']:>7} {r['done']:>5} {r['lost']:>4} {r['failed']:>6} "
                      f"{r['calls_per_s']:>8.2f} {r['per_hour']:>8.0f} {r['p50']:>7.1f} {r['p95']:>7.1f} "
                      f"{r['cpu_per_call']:>10.2f} {r['submit_s']:>8.1f} {r['ran_on'] or '-':>6}  "
                      f"{r['load_before'][0]:.2f} -> {r['load_after'][0]:.2f}",
                      flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
