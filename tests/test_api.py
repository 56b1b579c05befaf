"""The HTTP service in process (FastAPI TestClient, real worker processes, the bundled example call)."""

from __future__ import annotations

import io
import multiprocessing
import shutil
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from callqa.api.deps import RateLimiter
from callqa.api.keys import KeyStore
from callqa.api.main import create_app
from callqa.audio.decode import decode_file
from callqa.config import AnalysisSettings, ApiSettings, Settings
from callqa.service.jobs import JobSpec, JobStore, Source, audio_dir, prune, spool_dir
from callqa.service.recordings import analyze_recording
from callqa.store import Store

REPO = Path(__file__).resolve().parents[1]
AGENT = REPO / "examples" / "call-agent.wav"
CUSTOMER = REPO / "examples" / "call-customer.wav"


def make_settings(tmp: Path, **api: object) -> Settings:
    return Settings(
        db=tmp / "store.sqlite3",
        models_dir=tmp / "models",
        analysis=AnalysisSettings(nisqa=False),
        api=ApiSettings(**{"max_upload_bytes": 4 * 1024**2, **api}),
    )  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("api")
    settings = make_settings(tmp)
    keys = KeyStore(Store(settings.db))
    write, read = keys.create("write", "tests"), keys.create("read", "dashboard")
    with TestClient(create_app(settings, provider=None)) as client:
        yield client, {"Authorization": f"Bearer {write}"}, {"Authorization": f"Bearer {read}"}, settings


def upload(*paths: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (p.name, p.read_bytes(), "audio/wav")) for p in paths]


def test_health_is_open_everything_else_needs_a_key(service) -> None:  # type: ignore[no-untyped-def]
    client, write, read, _ = service
    assert client.get("/health").json() == {"status": "ok"}
    for method, path in (("get", "/calls"), ("get", "/ready"), ("get", "/metrics"), ("post", "/analyze")):
        r = getattr(client, method)(path)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.get("/calls", headers={"Authorization": "Bearer cqa_00000000_wrong"}).status_code == 401
    r = client.post("/analyze", headers=read, files=upload(AGENT))
    assert r.status_code == 403 and "write" in r.json()["detail"]
    assert client.get("/calls", headers=read).status_code == 200


def test_analyze_upload_matches_the_direct_pipeline_and_caches(service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client, write, _, settings = service
    r = client.post("/analyze?wait=120", headers=write, files=upload(AGENT, CUSTOMER))
    assert r.status_code == 200, r.text
    report = r.json()
    direct, _ = analyze_recording([AGENT, CUSTOMER], settings.model_copy(update={"db": tmp_path / "d.sqlite3"}))
    assert report["id"] == direct.id  # same audio, same settings: same cache key
    assert report["verdict"] == direct.verdict == "degraded"
    assert [f["code"] for f in report["findings"]] == [f.code for f in direct.findings] == ["dead_air"]
    for leg, ref in zip(report["legs"], direct.legs, strict=True):
        assert leg["levels"]["rms_dbfs"] == pytest.approx(ref.levels.rms_dbfs, abs=1e-9)
        assert leg["speech_segments"] == [s.model_dump() for s in ref.speech_segments]
    assert [leg["source"] for leg in report["legs"]] == ["upload:call-agent.wav", "upload:call-customer.wav"]
    # the same audio again is a cache hit: answered at once, no job
    t0 = time.perf_counter()
    again = client.post("/analyze", headers=write, files=upload(AGENT, CUSTOMER))
    assert again.status_code == 200 and again.json()["id"] == report["id"]
    assert time.perf_counter() - t0 < 1.0
    assert not any((settings.data_dir / "spool").iterdir())  # uploads are cleaned up


def test_transcribe_on_request(service) -> None:  # type: ignore[no-untyped-def]
    client, write, _, _ = service
    r = client.post("/analyze?wait=120", headers=write, files=upload(AGENT, CUSTOMER), data={"transcribe": "true"})
    assert r.status_code == 200, r.text
    report = r.json()
    assert [u["leg"] for u in report["transcript"]] == ["agent", "customer", "agent", "customer", "agent", "customer"]
    assert "recorded" in report["transcript"][0]["text"] and report["conversation"]["turns"] == 6
    plain = client.post("/analyze?wait=120", headers=write, files=upload(AGENT, CUSTOMER)).json()
    assert plain["id"] != report["id"] and plain["transcript"] == []  # a different analysis, cached apart


def test_long_work_is_a_job(service) -> None:  # type: ignore[no-untyped-def]
    client, write, read, _ = service
    r = client.post("/ai-analyze", headers=write, files=upload(AGENT), data={"roles": "agent,customer"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/jobs/{job['id']}" and job["status"] in ("queued", "running")
    done = client.get(f"/jobs/{job['id']}?wait=120", headers=read).json()
    assert done["status"] == "done", done
    assert done["report"]["legs"][0]["role"] == "mixed"  # the example leg is mono: analysed as mixed, warned
    assert done["report"]["warnings"]
    assert done["assessment"]["offline"] is True and "mixed_legs" in done["assessment"]["text"]
    assert client.get("/jobs/nope", headers=read).status_code == 404


def test_bad_requests_get_clear_errors(service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client, write, _, _ = service
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(range(256)) * 40)
    r = client.post("/analyze?wait=60", headers=write, files=upload(garbage))
    assert r.status_code == 422 and "garbage.wav" in r.json()["detail"]
    r = client.post("/analyze", headers=write, files=upload(AGENT, CUSTOMER, AGENT))
    assert r.status_code == 422 and "3 files" in r.json()["detail"]
    r = client.post("/analyze", headers=write)
    assert r.status_code == 422 and "exactly one" in r.json()["detail"]
    r = client.post("/analyze", headers=write, files=upload(AGENT), data={"url": "http://example.com/a.wav"})
    assert r.status_code == 422
    r = client.post("/analyze", headers=write, data={"url": "http://169.254.169.254/latest/meta-data"})
    assert r.status_code == 403 and "not an allowed recording host" in r.json()["detail"]
    r = client.post("/analyze", headers=write, data={"call_id": "0000000000000000"})
    assert r.status_code == 404
    r = client.post("/analyze", headers=write, files=upload(AGENT), data={"roles": "agent,boss"})
    assert r.status_code == 422 and "roles" in r.json()["detail"]
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert client.post("/analyze", headers=write, files=upload(empty)).status_code == 422
    assert not any((service[3].data_dir / "spool").iterdir())  # nothing left behind by refused uploads
    big = tmp_path / "big.wav"
    big.write_bytes(b"\x00" * (5 * 1024**2))
    r = client.post("/analyze", headers=write, files=upload(big))
    assert r.status_code == 413 and "larger than" in r.json()["detail"]
    # the same without a Content-Length (chunked): refused as it streams, still 413 (was 400)
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.wav\"\r\n"
            f"Content-Type: audio/wav\r\n\r\n").encode()  # fmt: skip

    def chunked():  # type: ignore[no-untyped-def]
        yield head
        for _ in range(5 * 16):
            yield b"\x00" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    r = client.post("/analyze", headers={**write, "content-type": f"multipart/form-data; boundary={boundary}"},
                    content=chunked())  # fmt: skip
    assert r.status_code == 413 and "larger than" in r.json()["detail"]
    assert not any((service[3].data_dir / "spool").iterdir())
    # a header declaring 1.6 GHz: refused with 413 naming the limit, never a 500
    ghz = tmp_path / "ghz.wav"
    pcm = AGENT.read_bytes()
    ghz.write_bytes(pcm[:24] + (1_600_000_001).to_bytes(4, "little") + pcm[28:])
    r = client.post("/analyze?wait=60", headers=write, files=upload(ghz))
    assert r.status_code == 413 and "limits.max_sample_rate" in r.json()["detail"]
    assert str(service[3].data_dir) not in r.json()["detail"]  # the spool's path is not shown


def test_browse_calls_and_listen_to_a_leg(service) -> None:  # type: ignore[no-untyped-def]
    client, write, read, _ = service
    report = client.post("/analyze?wait=120", headers=write, files=upload(AGENT, CUSTOMER)).json()
    rows = client.get("/calls?finding=dead_air", headers=read).json()
    assert report["id"] in [row["id"] for row in rows]
    assert all(row["verdict"] == "degraded" for row in client.get("/calls?verdict=degraded", headers=read).json())
    assert report["id"] not in [row["id"] for row in client.get("/calls?verdict=good", headers=read).json()]
    assert client.get(f"/calls/{report['id'][:8]}", headers=read).json()["id"] == report["id"]
    assert client.get("/calls/ffffffffffffffff", headers=read).status_code == 404
    r = client.get(f"/calls/{report['id']}/audio/customer", headers=read)
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(r.content)) as w:
        assert w.getframerate() == 8000 and w.getnchannels() == 1
        got = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64) / 32767
    ref = decode_file(CUSTOMER, 3600).samples[0]
    assert got.size == ref.size and np.max(np.abs(got - ref)) < 1.5 / 32767  # the leg as decoded, 16-bit
    assert client.get(f"/calls/{report['id']}/audio/1", headers=read).content == r.content
    assert client.get(f"/calls/{report['id']}/audio/left", headers=read).status_code == 404


def test_ready_and_metrics(service) -> None:  # type: ignore[no-untyped-def]
    client, write, read, _ = service
    report = client.post("/analyze?wait=120", headers=write, files=upload(AGENT, CUSTOMER)).json()
    ready = client.get("/ready", headers=read)
    assert ready.status_code == 200 and ready.json()["models_loaded"] and ready.json()["store_writable"]
    text = client.get("/metrics", headers=read).text
    assert 'callqa_calls_analyzed_total{source="recording",verdict="degraded"}' in text
    assert "callqa_analysis_seconds_bucket" in text and 'callqa_mos_bucket{le="5.0",model="dnsmos_ovrl"}' in text
    assert "callqa_queue_depth 0.0" in text and "callqa_cache_hits_total" in text
    assert 'route="/calls/{call_id}"' in text or 'route="/analyze"' in text
    assert report["id"] not in text  # no call ids as labels


def test_rate_limit_per_key(tmp_path: Path) -> None:
    limiter = RateLimiter(per_minute=2)
    assert limiter.take("a", now=0.0) == 0 and limiter.take("a", now=0.1) == 0
    assert limiter.take("a", now=0.2) == pytest.approx(29.8)
    assert limiter.take("b", now=0.2) == 0  # other keys are not affected
    assert limiter.take("a", now=30.1) == 0  # refilled
    settings = make_settings(tmp_path, rate_per_minute=2, read_rate_per_minute=3)
    token = KeyStore(Store(settings.db)).create("write")
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(settings, provider=None)) as client:
        codes = [client.get("/calls", headers=auth).status_code for _ in range(4)]
        r = client.get("/calls", headers=auth)
        # writes are counted apart: polling used up the reads, not the POSTs (422: no input given)
        posts = [client.post("/analyze", headers=auth).status_code for _ in range(3)]
    assert codes == [200, 200, 200, 429] and r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert posts == [422, 422, 429]


def test_full_queue_answers_429_and_loses_nothing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, queue_max=1)
    token = KeyStore(Store(settings.db)).create("write")
    auth = {"Authorization": f"Bearer {token}"}
    before = set(multiprocessing.active_children())  # other tests' services may still be running
    with TestClient(create_app(settings, provider=None)) as client:
        first = client.post("/analyze", headers=auth, files=upload(AGENT))
        second = client.post("/analyze", headers=auth, files=upload(CUSTOMER))
        assert first.status_code == 202
        assert second.status_code == 429 and int(second.headers["retry-after"]) >= 1
        assert client.get(f"/jobs/{first.json()['id']}?wait=120", headers=auth).json()["status"] == "done"
        third = client.post("/analyze?wait=120", headers=auth, files=upload(CUSTOMER))  # room again
        assert third.status_code == 200
        assert set(multiprocessing.active_children()) - before  # the analysis worker
    assert not any((settings.data_dir / "spool").iterdir())
    assert set(multiprocessing.active_children()) - before == set()  # stopping leaves no worker behind


def test_jobs_survive_a_restart(tmp_path: Path) -> None:
    """Jobs accepted by a service that stopped are resumed by the next one, or failed with the reason."""
    settings = make_settings(tmp_path)
    store = Store(settings.db)
    jobs = JobStore(store)
    token = KeyStore(store).create("read")
    spool = spool_dir(settings, "a" * 16)
    shutil.copy(AGENT, spool / "0-call-agent.wav")
    queued = jobs.create(JobSpec(source=Source(files=[str(spool / "0-call-agent.wav")], labels=["upload:a.wav"]),
                                 spool=str(spool)), "k", "a" * 16)  # fmt: skip
    lost = jobs.create(JobSpec(source=Source(files=[str(tmp_path / "gone.wav")])), "k", "b" * 16)
    jobs.update(lost.id, status="running", attempts=1)
    crashy = jobs.create(JobSpec(source=Source(url="http://127.0.0.1:9/x.wav")), "k", "c" * 16)
    jobs.update(crashy.id, status="running", attempts=2)
    with TestClient(create_app(settings, provider=None)) as client:
        auth = {"Authorization": f"Bearer {token}"}
        resumed = client.get(f"/jobs/{queued.id}?wait=120", headers=auth).json()
        assert resumed["status"] == "done" and resumed["report"]["legs"][0]["source"] == "upload:a.wav"
        failed = client.get(f"/jobs/{lost.id}", headers=auth).json()
        assert failed["status"] == "failed" and failed["error_code"] == 410 and "upload it again" in failed["error"]
        gave_up = client.get(f"/jobs/{crashy.id}", headers=auth).json()
        assert gave_up["status"] == "failed" and "interrupted 2 times" in gave_up["error"]
    assert not spool.exists()


def test_killed_service_leaves_no_workers(tmp_path: Path) -> None:
    """A service killed outright (SIGKILL, OOM) takes its analysis workers with it (PR_SET_PDEATHSIG)."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    import httpx

    token = KeyStore(Store(tmp_path / "s.sqlite3")).create("read")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CALLQA_DB": str(tmp_path / "s.sqlite3")}
    server = subprocess.Popen([str(Path(sys.executable).parent / "callqa"), "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/ready", headers={"Authorization": f"Bearer {token}"})
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        assert children, "the service should have started a worker process"
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(10)
    deadline = time.monotonic() + 10
    while [c for c in children if Path(f"/proc/{c}").exists()] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [c for c in children if Path(f"/proc/{c}").exists()], "worker processes outlived the service"


def test_retention_deletes_old_kept_audio_and_finished_jobs(tmp_path: Path) -> None:
    """Kept leg audio older than keep_audio_days and jobs that ended more than keep_jobs_days ago are deleted
    when the service starts (and hourly); fresh ones, and jobs still queued or running, stay."""
    import os

    day, now = 86400.0, time.time()
    settings = make_settings(tmp_path, keep_audio_days=30, keep_jobs_days=7)
    root = audio_dir(settings)
    old, fresh = root / ("a" * 16), root / ("b" * 16)
    for d in (old, fresh):
        d.mkdir(parents=True)
        (d / "0-caller.wav").write_bytes(b"RIFF")
    os.utime(old / "0-caller.wav", (now - 40 * day, now - 40 * day))
    store = Store(settings.db)
    jobs = JobStore(store)
    spec = JobSpec(source=Source(url="http://127.0.0.1:9/x.wav"))
    for job_id, status, age in (("1" * 16, "done", 10), ("2" * 16, "failed", 10), ("3" * 16, "done", 1),
                                ("4" * 16, "queued", 10)):  # fmt: skip
        jobs.create(spec, "k", job_id)
        with store.connect() as db:
            db.execute("UPDATE jobs SET status = ?, updated_at = ? WHERE id = ?", (status, now - age * day, job_id))
    assert prune(settings.model_copy(update={"api": ApiSettings(keep_audio_days=0, keep_jobs_days=0)}), jobs) == (0, 0)
    assert prune(settings, jobs, now=now) == (1, 2)
    assert not old.exists() and (fresh / "0-caller.wav").is_file()
    # ended 10 days ago: deleted; ended yesterday, or queued 10 days ago and never finished: kept
    assert [jobs.get(c * 16) is not None for c in "1234"] == [False, False, True, True]
    # the service prunes when it starts
    os.utime(fresh / "0-caller.wav", (now - 31 * day, now - 31 * day))
    with TestClient(create_app(settings, provider=None)) as client:
        assert client.get("/health").status_code == 200
        assert not fresh.exists()
