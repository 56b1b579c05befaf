"""The service as an operator runs it (uvicorn in its own process, on 127.0.0.1): WebSocket followers come and
go without leaking, shutdown is prompt, and keys given in URLs never reach the log."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import REPO

from callqa.api.keys import KeyStore
from callqa.api.logs import redact
from callqa.store import Store

websockets_sync = pytest.importorskip("websockets.sync.client")


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    read_key: str
    write_key: str

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    db = tmp_path / "s.sqlite3"
    keys = KeyStore(Store(db))
    read, write = keys.create("read"), keys.create("write")
    port = free_port()
    env = {**os.environ, "CALLQA_DB": str(db), "CALLQA_ANALYSIS__NISQA": "false", "CALLQA_API__WORKERS": "1",
           "CALLQA_LLM__PROVIDER": "offline", "CALLQA_API__RATE_PER_MINUTE": "100000"}  # fmt: skip
    log = tmp_path / "service.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "callqa.cli", "serve", "--host", "127.0.0.1", "--port",
                                 str(port)], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)  # fmt: skip
    svc = Service(proc, f"127.0.0.1:{port}", log, read, write)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://{svc.url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield svc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def cycles(svc: Service, n: int) -> None:
    for i in range(n):
        path = "/ws/calls" if i % 2 else f"/ws/calls/call-{i}"
        with websockets_sync.connect(f"ws://{svc.url}{path}?token={svc.read_key}", open_timeout=10):
            pass


def test_websocket_followers_leak_nothing_and_shutdown_is_prompt(service: Service) -> None:
    cycles(service, 100)  # warm up: allocator pools, route caches
    time.sleep(0.5)
    before = service.rss_mb()
    cycles(service, 500)
    time.sleep(0.5)
    grown = service.rss_mb() - before
    assert grown < 5, f"RSS grew {grown:.1f} MB over 500 connect/close cycles"
    # an event published now reaches a follower that stays, and nobody else is still subscribed
    with websockets_sync.connect(f"ws://{service.url}/ws/calls?token={service.read_key}") as ws:
        r = httpx.post(f"http://{service.url}/live/events", json={"events": [{"type": "final", "call_id": "c"}]},
                       headers={"Authorization": f"Bearer {service.write_key}"})  # fmt: skip
        assert r.status_code == 202
        assert '"call_id":"c"' in ws.recv(timeout=5).replace(" ", "")
        # a key put in an HTTP URL by mistake is not accepted there, and not logged either
        assert httpx.get(f"http://{service.url}/calls?token={service.read_key}").status_code == 401
        # shutdown with a follower still connected
        t0 = time.monotonic()
        service.proc.send_signal(signal.SIGINT)
        service.proc.wait(timeout=30)
        took = time.monotonic() - t0
    assert took < 2.0, f"shutdown took {took:.1f} s"
    log = service.log.read_text()
    assert "Traceback" not in log, log[-3000:]
    # keys travelled in URLs 601 times: the log shows the requests, never a key
    assert "/ws/calls?token=[REDACTED]" in log and "/calls?token=[REDACTED]" in log
    assert service.read_key not in log and service.read_key.split("_")[-1] not in log


def test_redact_query_credentials_and_bearer_tokens() -> None:
    assert redact('"GET /calls?token=cqa_ab_SECRET&x=1 HTTP/1.1"') == '"GET /calls?token=[REDACTED]&x=1 HTTP/1.1"'
    assert redact("/ws/calls/c1?since=3&api_key=abc") == "/ws/calls/c1?since=3&api_key=[REDACTED]"
    assert redact("Authorization: Bearer cqa_x_y") == "Authorization: Bearer [REDACTED]"
    assert redact("/calls?tokens=1&monkey=2") == "/calls?tokens=1&monkey=2"  # other parameters stay


def test_live_events_are_masked_before_relay(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from callqa.api.main import create_app
    from callqa.config import AnalysisSettings, Settings

    settings = Settings(db=tmp_path / "s.sqlite3", analysis=AnalysisSettings(nisqa=False))
    keys = KeyStore(Store(settings.db))
    write, read = keys.create("write"), keys.create("read")
    spoken = "my card is four one one one one one one one one one one one one one one one"
    said = spoken.split()
    event = {"type": "final", "call_id": "c1", "leg": "customer", "text": " ".join(said),
             "words": [{"word": w, "start_s": i / 4, "end_s": i / 4 + 0.2, "probability": 0.9}
                       for i, w in enumerate(said)]}  # fmt: skip
    app = create_app(settings, provider=None)
    with TestClient(app) as client, client.websocket_connect(f"/ws/calls/c1?token={read}") as ws:
        r = client.post("/live/events", json={"events": [event]}, headers={"Authorization": f"Bearer {write}"})
        assert r.status_code == 202
        got = ws.receive_json()
    assert got["text"] == "my card is [CARD]" and "one" not in [w["word"] for w in got["words"]]


def test_internal_errors_are_logged_with_an_id_and_answered_without_paths(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    from fastapi.testclient import TestClient

    from callqa.api.main import create_app
    from callqa.config import AnalysisSettings, Settings
    from callqa.service import jobs

    settings = Settings(db=tmp_path / "data" / "s.sqlite3", analysis=AnalysisSettings(nisqa=False))
    read = KeyStore(Store(settings.db)).create("read")
    app = create_app(settings, provider=None)
    secret_path = f"{settings.data_dir}/spool/x/0-agent.wav"

    def broken(call_id: str) -> None:
        raise RuntimeError(f"bug while reading {secret_path}")

    with TestClient(app, raise_server_exceptions=False) as client, caplog.at_level(logging.ERROR):
        monkeypatch.setattr(app.state.callqa.store, "get_json", broken)
        r = client.get("/calls/abcd1234", headers={"Authorization": f"Bearer {read}"})
    assert r.status_code == 500
    body = r.json()
    assert str(settings.data_dir) not in r.text and "RuntimeError" not in r.text
    logged = [rec for rec in caplog.records if body["error_id"] in rec.getMessage()]
    assert logged and logged[0].exc_info is not None and "/calls/abcd1234" in logged[0].getMessage()

    # a job: a typed error names the upload, not the spool; a bug gives an id that the runner logs with the job
    spec = jobs.JobSpec(source=jobs.Source(files=[secret_path], labels=["upload:agent.wav"]))
    out = jobs.safe_run(spec.model_dump_json(), settings.model_dump_json())
    assert out["ok"] is False and out["code"] == 422 and "upload:agent.wav" in out["error"]
    assert str(settings.data_dir) not in out["error"]

    def bug(spec: object, settings: object) -> None:
        raise KeyError("oops")

    monkeypatch.setattr(jobs, "run_job", bug)
    out = jobs.safe_run(spec.model_dump_json(), settings.model_dump_json())
    assert out["code"] == 500 and out["incident"] in out["error"] and "KeyError" in out["trace"]
    assert "oops" not in out["error"]


def test_retry_after_follows_the_measured_drain_rate() -> None:
    from callqa.service.drain import DrainRate

    d = DrainRate()
    assert d.retry_after(100, 5.0, 1) == 500  # nothing measured yet: the analysis-time estimate
    t = 1000.0
    d.done(t, 0)
    t += 300  # idle for five minutes: says nothing about the rate
    for left in range(99, 89, -1):  # then a backlog drains one job every 0.9 s (cache hits, short calls)
        d.done(t, left)
        t += 0.9
    assert d.jobs_per_s() == pytest.approx(1 / 0.9)
    assert d.retry_after(100, 5.0, 1) == 90
    assert d.retry_after(0, 5.0, 1) == 1
