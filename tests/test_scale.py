"""The scaled-out deployment under faults: the HTTP API enqueues on RabbitMQ, several ``callqa worker`` processes
analyse and store in PostgreSQL (real servers on 127.0.0.1, a database and a queue of the test's own).

- a worker killed with SIGKILL in the middle of a job: the job runs again on another worker and its report is
  stored once;
- PostgreSQL restarted during a batch: every job finishes, none is lost or failed;
- the RabbitMQ broker restarted during a batch: the same (queued messages are durable, consumers reconnect).

Without the servers these skip, unless CALLQA_REQUIRE_POSTGRES / CALLQA_REQUIRE_RABBITMQ is set (as in CI).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import calls
import pytest
from conftest import write_wav
from fastapi.testclient import TestClient

from callqa.api.keys import KeyStore
from callqa.api.main import create_app
from callqa.config import AnalysisSettings, Settings
from callqa.store import Store

pytestmark = pytest.mark.slow
SRC = Path(__file__).resolve().parents[1] / "src"


def _calls(n: int, seconds: float, tmp: Path) -> list[tuple[bytes, bytes]]:
    """``n`` two-leg calls of distinct audio (each its own analysis), as WAV bytes."""
    a_turns, b_turns = calls.conversation(seconds)
    out = []
    for i in range(n):
        a = write_wav(tmp / "a.wav", calls.leg(seconds, a_turns, gain_db=-2.0 - i * 0.5, seed=i), calls.RATE)
        b = write_wav(tmp / "b.wav", calls.leg(seconds, b_turns, gain_db=-4.0 - i * 0.5, seed=i), calls.RATE)
        out.append((a.read_bytes(), b.read_bytes()))
    return out


class Cluster:
    """The API (in process) and worker processes (``callqa worker``) on one PostgreSQL database and queue."""

    def __init__(self, pg_url: str, amqp: tuple[str, str], tmp: Path) -> None:
        self.env = {**os.environ, "PYTHONPATH": str(SRC), "CALLQA_DB": pg_url, "CALLQA_BROKER": amqp[0],
                    "CALLQA_QUEUE_NAME": amqp[1], "CALLQA_WORK_DIR": str(tmp / "worker"),
                    "CALLQA_MODELS_DIR": str(tmp / "models"), "CALLQA_ANALYSIS__NISQA": "false",
                    "CALLQA_API__WORKER_NICE": "0", "CALLQA_LLM__PROVIDER": "offline"}  # fmt: skip
        self.settings = Settings(db=pg_url, broker=amqp[0], queue_name=amqp[1], work_dir=tmp / "api",
                                 models_dir=tmp / "models", analysis=AnalysisSettings(nisqa=False))  # fmt: skip
        self.store = Store(pg_url)
        self.auth = {"Authorization": f"Bearer {KeyStore(self.store).create('write')}"}
        self.workers: list[subprocess.Popen[bytes]] = []
        self.tmp = tmp
        self.logs = tmp / "logs"
        self.logs.mkdir()

    def start_workers(self, n: int) -> None:
        for i in range(n):
            log = open(self.logs / f"worker{len(self.workers)}-{i}.log", "wb")  # noqa: SIM115 - closed with the process
            self.workers.append(subprocess.Popen([sys.executable, "-m", "callqa.cli", "worker"], env=self.env,
                                                 stdout=log, stderr=subprocess.STDOUT))  # fmt: skip

    def stop(self) -> None:
        for p in self.workers:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.workers:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def jobs(self) -> list[tuple[Any, ...]]:
        with self.store.connect() as db:
            return db.execute("SELECT id, status, attempts, worker, report_id, error FROM jobs ORDER BY created_at")\
                .fetchall()  # fmt: skip

    def wait_done(self, n: int, timeout_s: float) -> list[tuple[Any, ...]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rows = self.jobs()
            if len(rows) == n and all(r[1] in ("done", "failed") for r in rows):
                return rows
            time.sleep(0.5)
        raise AssertionError(f"jobs not finished after {timeout_s} s: {self.jobs()}\n{self.worker_logs()}")

    def worker_logs(self) -> str:
        return "\n".join(f.read_text(errors="replace")[-3000:] for f in sorted(self.logs.iterdir()))


@pytest.fixture
def cluster(pg_url: str, amqp_queue: tuple[str, str], tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(pg_url, amqp_queue, tmp_path)
    try:
        yield c
    finally:
        c.stop()


def _submit(client: TestClient, cluster: Cluster, legs: list[tuple[bytes, bytes]]) -> list[str]:
    ids = []
    for i, (a, b) in enumerate(legs):
        r = client.post("/analyze", headers=cluster.auth,
                        files=[("files", (f"c{i}-agent.wav", a, "audio/wav")),
                               ("files", (f"c{i}-customer.wav", b, "audio/wav"))])  # fmt: skip
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    return ids


def _wait_under_way(cluster: Cluster, timeout_s: float = 240) -> None:
    """Until work is under way: a job done and at least two still queued (the moment a fault test strikes)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        statuses = [r[1] for r in cluster.jobs()]
        if "done" in statuses and statuses.count("queued") >= 2:
            return
        time.sleep(0.1)
    raise AssertionError(f"the batch did not get under way: {cluster.jobs()}\n{cluster.worker_logs()}")


def _server_start(cluster: Cluster) -> Any:
    with cluster.store.connect() as db:
        return db.execute("SELECT pg_postmaster_start_time()").fetchone()[0]


def _stored_once(cluster: Cluster, rows: list[tuple[Any, ...]]) -> None:
    with cluster.store.connect() as db:
        reports = db.execute("SELECT id, cache_key FROM reports").fetchall()
        files_left = db.execute("SELECT count(*) FROM job_files").fetchone()[0]
    assert sorted(r[0] for r in reports) == sorted(r[4] for r in rows)  # one report per job, none extra
    assert len({r[1] for r in reports}) == len(reports)
    assert files_left == 0  # the uploads leave the database with their jobs


def test_a_killed_worker_s_job_runs_again_and_is_stored_once(cluster: Cluster) -> None:
    legs = _calls(5, 30.0, cluster.tmp)
    cluster.start_workers(3)
    with TestClient(create_app(cluster.settings, provider=None)) as client:
        ids = _submit(client, cluster, legs)
        victim = None
        deadline = time.monotonic() + 240
        while victim is None and time.monotonic() < deadline:  # a job in progress, and the process running it
            for job_id, status, _attempts, worker, _report, _error in cluster.jobs():
                pid = int(worker.rsplit(":", 1)[1]) if worker else 0
                if status == "running" and pid in {p.pid for p in cluster.workers}:
                    os.kill(pid, signal.SIGKILL)
                    victim = job_id
                    break
            time.sleep(0.02)
        assert victim is not None, cluster.worker_logs()
        rows = cluster.wait_done(len(ids), 300)
        by_id = {r[0]: r for r in rows}
        if by_id[victim][2] == 1:  # it had ended between the look and the kill: nothing to re-run
            pytest.fail(f"the job ended before the kill could land; rerun (load too high?) {by_id[victim]}")
        assert [r[1] for r in rows] == ["done"] * len(ids), rows
        assert by_id[victim][2] == 2  # started twice: on the killed worker, then on another
        assert sum(p.poll() == -signal.SIGKILL for p in cluster.workers) == 1
        _stored_once(cluster, rows)
        got = client.get(f"/jobs/{victim}", headers=cluster.auth).json()
        assert got["status"] == "done" and got["report"]["id"] == by_id[victim][4]


def test_every_job_finishes_across_a_postgresql_restart(cluster: Cluster) -> None:
    ctl = shutil.which("pg_ctlcluster")
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if ctl is None or not versions or os.geteuid() != 0:
        pytest.skip("restarting PostgreSQL needs the local Debian cluster (pg_ctlcluster) and root")
    legs = _calls(6, 15.0, cluster.tmp)
    cluster.start_workers(2)
    with TestClient(create_app(cluster.settings, provider=None)) as client:
        ids = _submit(client, cluster, legs)
        _wait_under_way(cluster)
        started = _server_start(cluster)
        subprocess.run([ctl, "--skip-systemctl-redirect", versions[-1], "main", "restart"], check=True, timeout=120)
        assert _server_start(cluster) != started  # it did restart (with jobs in progress and queued)
        rows = cluster.wait_done(len(ids), 300)
        assert [r[1] for r in rows] == ["done"] * len(ids), (rows, cluster.worker_logs())
        _stored_once(cluster, rows)
        assert len(client.get("/calls", headers=cluster.auth).json()) == len(ids)  # the API's pool reconnected


def test_every_job_finishes_across_a_broker_restart(cluster: Cluster) -> None:
    ctl = shutil.which("rabbitmqctl")
    if ctl is None or os.geteuid() != 0:
        pytest.skip("restarting RabbitMQ needs rabbitmqctl and root")
    legs = _calls(6, 15.0, cluster.tmp)
    cluster.start_workers(2)
    with TestClient(create_app(cluster.settings, provider=None)) as client:
        ids = _submit(client, cluster, legs[:5])
        _wait_under_way(cluster)
        subprocess.run([ctl, "-q", "stop_app"], check=True, timeout=120, capture_output=True)
        try:
            time.sleep(2)  # the broker is down: workers and the API lose their connections
        finally:
            subprocess.run([ctl, "-q", "start_app"], check=True, timeout=120, capture_output=True)
            subprocess.run([ctl, "-q", "await_startup"], check=True, timeout=120, capture_output=True)
        ids += _submit(client, cluster, legs[5:])  # the API publishes again after the restart
        rows = cluster.wait_done(len(ids), 300)
        assert [r[1] for r in rows] == ["done"] * len(ids), (rows, cluster.worker_logs())
        _stored_once(cluster, rows)


def test_without_the_broker_a_job_is_refused_whole(pg_url: str, tmp_path: Path) -> None:
    settings = Settings(db=pg_url, broker="amqp://guest:guest@127.0.0.1:1/%2F", work_dir=tmp_path / "api",
                        models_dir=tmp_path / "models", analysis=AnalysisSettings(nisqa=False))  # fmt: skip
    store = Store(pg_url)
    auth = {"Authorization": f"Bearer {KeyStore(store).create('write')}"}
    (a, b), *_ = _calls(1, 5.0, tmp_path)
    with TestClient(create_app(settings, provider=None)) as client:
        r = client.post("/analyze", headers=auth, files=[("files", ("agent.wav", a, "audio/wav")),
                                                         ("files", ("customer.wav", b, "audio/wav"))])  # fmt: skip
        assert r.status_code == 503 and "queue cannot be reached" in r.json()["detail"]
        assert client.get("/calls", headers=auth).json() == []
    with store.connect() as db:  # no job without its message: nothing half-made is left behind
        assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM job_files").fetchone()[0] == 0
    assert not any((tmp_path / "api" / "spool").iterdir())
    with pytest.raises(Exception, match="needs a PostgreSQL store"):  # a SQLite store cannot be shared by hosts
        create_app(settings.model_copy(update={"db": tmp_path / "s.sqlite3"}), provider=None)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_the_worker_supervisor_replaces_a_dead_process_and_stops_them_all(cluster: Cluster) -> None:
    def children(pid: int) -> set[int]:  # the worker processes (not multiprocessing's resource tracker)
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        return {int(p) for p in out.split() if b"spawn_main" in _cmdline(int(p))}

    def wait_for(pred: Any, what: str, timeout_s: float = 120) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if value := pred():
                return value
            time.sleep(0.1)
        raise AssertionError(f"{what}\n{cluster.worker_logs()}")

    log = open(cluster.logs / "supervisor.log", "wb")  # noqa: SIM115 - closed with the process
    sup = subprocess.Popen([sys.executable, "-m", "callqa.cli", "worker", "--processes", "2"], env=cluster.env,
                           stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    cluster.workers.append(sup)

    def two(without: int = 0) -> set[int] | None:
        c = children(sup.pid)
        return c if len(c) == 2 and without not in c else None

    first = wait_for(two, "two worker processes")
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    after = wait_for(lambda: two(without=victim), "a replacement")
    assert len(after - first) == 1
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(90) == 0
    assert all(not Path(f"/proc/{p}").exists() for p in after)
