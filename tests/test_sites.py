"""Capture sites: the spool (durable, ordered, bounded; a crash between writing and renaming, damaged entries),
the central service's POST /calls (each site's call stored once, repeats answered without a second copy or a
second count), and a site in its own network namespace sending calls across an outage of the central service."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import captures
import httpx
import numpy as np
import pytest
from conftest import REPO, write_wav
from fastapi.testclient import TestClient
from sniffing import wait_listening

from callqa.api.keys import KeyStore
from callqa.api.main import create_app
from callqa.capture.calls import read_capture
from callqa.config import AnalysisSettings, ApiSettings, Settings, SiteSettings
from callqa.errors import CallqaError
from callqa.protocol.hep import build_hep3
from callqa.protocol.packet import Decoder
from callqa.protocol.pcap import CaptureFile
from callqa.report import CallReport
from callqa.service.captures import analyze_capture, report_captured
from callqa.service.jobs import audio_dir
from callqa.service.outbox import Outbox, OutboxError, Sender
from callqa.store import Store

FAST = SiteSettings(retry_min_s=0.05, retry_max_s=0.2, timeout_s=10)


def generated_calls(tmp: Path, n: int, prefix: str = "site") -> list[captures.Call]:
    return [captures.Call(f"{prefix}-call-{k}", caller_frames=captures.silence(1.0 + 0.1 * k),
                          callee_frames=captures.silence(0.8), caller_port=20000 + 2 * k,
                          callee_port=30000 + 2 * k, start=captures.T0 + 10 * k, seed=k) for k in range(n)]  # fmt: skip


def site_reports(tmp: Path, n: int, site: str = "lab-1") -> list[CallReport]:
    """``n`` captured calls (generated SIP + RTP), measured as a site does, with the site's name."""
    path = captures.write(tmp / "calls.pcap", [p for c in generated_calls(tmp, n) for p in c.packets()])
    reports, _ = analyze_capture(path, Settings(db=tmp / "site.sqlite3"), stats_only=True)
    assert len(reports) == n
    return [r.model_copy(update={"site": site}) for r in reports]


@pytest.fixture
def central(tmp_path: Path) -> Iterator[tuple[TestClient, str, str, Settings]]:
    """The central service in process (no worker processes are started: receiving calls needs none)."""
    settings = Settings(db=tmp_path / "central" / "store.sqlite3", models_dir=tmp_path / "models",
                        analysis=AnalysisSettings(nisqa=False))  # fmt: skip
    keys = KeyStore(Store(settings.db))
    write, read = keys.create("write", "site lab-1"), keys.create("read", "dashboard")
    yield TestClient(create_app(settings, provider=None)), write, read, settings


def metric(client: TestClient, read: str, name: str) -> dict[str, float]:
    text = client.get("/metrics", headers={"Authorization": f"Bearer {read}"}).text
    out = {}
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            labels, value = line.rsplit(" ", 1)
            out[labels] = float(value)
    return out


def post(client: TestClient, key: str, report_json: bytes, audio: list[tuple[str, bytes]] = ()) -> httpx.Response:  # type: ignore[assignment]
    files = [("report", ("report.json", report_json, "application/json"))]
    files += [("audio", (name, data, "audio/wav")) for name, data in audio]
    return client.post("/calls", files=files, headers={"Authorization": f"Bearer {key}"})


# --- the spool ------------------------------------------------------------------------------------------------


def test_spool_is_private_ordered_and_holds_what_was_put(tmp_path: Path) -> None:
    reports = site_reports(tmp_path, 3)
    box = Outbox(tmp_path / "outbox", 10**9)
    try:
        paths = [box.put(r) for r in reports]
        assert box.pending() == paths  # oldest first
        assert stat.S_IMODE((tmp_path / "outbox").stat().st_mode) == 0o700
        for p, r in zip(paths, reports, strict=True):
            assert p is not None and stat.S_IMODE(p.stat().st_mode) == 0o600
            entry = box.read(p)
            assert entry.report_id == r.id and CallReport.model_validate_json(entry.report_json) == r
        assert box.bytes == sum(p.stat().st_size for p in box.pending())
        with pytest.raises(OutboxError, match="in use by another process"):
            Outbox(tmp_path / "outbox", 10**9)  # one sniffer per spool
    finally:
        box.close()
    Outbox(tmp_path / "outbox", 10**9).close()  # free again once the first one closed


CRASH = """
import os, sys
from callqa.config import Settings
from callqa.report import CallReport
from callqa.service import outbox
report = CallReport.model_validate_json(open(sys.argv[2]).read())
box = outbox.Outbox(sys.argv[1], 10**9)
outbox.os.replace = lambda *a: os._exit(int(sys.argv[3]))  # the process dies after writing, before renaming
box.put(report)
"""


def test_crash_between_write_and_rename_is_completed_at_the_next_start(tmp_path: Path) -> None:
    """A process killed after writing an entry but before renaming it: the whole entry is completed by the next
    opening of the spool (and sent once); an entry cut short while being written is quarantined, not sent."""
    first, second = site_reports(tmp_path, 2)
    spool = tmp_path / "outbox"
    saved = tmp_path / "r.json"
    saved.write_text(first.model_dump_json())
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-c", CRASH, str(spool), str(saved), "9"], env=env, cwd=tmp_path)
    assert done.returncode == 9
    (tmp,) = [p for p in spool.iterdir() if p.name.startswith(".tmp-")]
    # a second entry cut in the middle of writing (the process died during the write)
    saved.write_text(second.model_dump_json())
    subprocess.run([sys.executable, "-c", CRASH, str(spool), str(saved), "9"], env=env, cwd=tmp_path, check=False)
    cut = max((p for p in spool.iterdir() if p.name.startswith(".tmp-")), key=lambda p: p.name)
    assert cut != tmp
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    box = Outbox(spool, 10**9)
    try:
        (entry,) = box.pending()
        assert entry.name == tmp.name.removeprefix(".tmp-") and box.read(entry).report_id == first.id
        (bad,) = box.quarantined_entries()
        assert bad.name.endswith(f"-{second.id}.zip")
        assert "incomplete" in (bad.parent / (bad.name + ".reason")).read_text()
        assert not [p for p in spool.iterdir() if p.name.startswith(".tmp-")]
    finally:
        box.close()


def test_damaged_entries_are_quarantined_and_the_rest_is_delivered(central, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    client, write, read, _ = central
    reports = site_reports(tmp_path, 4)
    box = Outbox(tmp_path / "outbox", 10**9)
    paths = [box.put(r) for r in reports]
    assert all(paths)
    # 1: a bit flipped in the stored report (its CRC-32 no longer matches); 2: not a ZIP at all
    data = bytearray(paths[1].read_bytes())  # type: ignore[union-attr]
    data[60] ^= 0x40
    paths[1].write_bytes(bytes(data))  # type: ignore[union-attr]
    paths[2].write_bytes(b"not a spool entry")  # type: ignore[union-attr]
    with caplog.at_level(logging.WARNING, logger="callqa.site"):
        sender = Sender(box, "http://testserver", write, FAST, client=client).start()
        sender.close(drain_s=10)
    assert box.pending() == [] and sender.sent == 2
    assert sorted(p.name for p in box.quarantined_entries()) == sorted(p.name for p in (paths[1], paths[2]))  # type: ignore[union-attr]
    assert sum("quarantined" in r.message for r in caplog.records) == 2
    stored = {c["id"] for c in client.get("/calls", headers={"Authorization": f"Bearer {read}"}).json()}
    assert stored == {reports[0].id, reports[3].id}
    box.close()


def test_a_full_spool_sends_without_audio_then_refuses_with_an_error(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    reports = site_reports(tmp_path, 3)
    legs = [tmp_path / "0-caller.wav", tmp_path / "1-callee.wav"]
    for p in legs:
        p.write_bytes(b"RIFF" + bytes(40_000))
    box = Outbox(tmp_path / "outbox", max(len(r.model_dump_json()) for r in reports) + 4096)  # one report, no audio
    with caplog.at_level(logging.WARNING, logger="callqa.site"):
        a, b, c = (box.put(r, legs) for r in reports)
    assert a is not None and b is None and c is None
    assert zipfile.ZipFile(a).namelist() == ["report.json"]
    assert (box.without_audio, box.refused) == (1, 2)
    assert any(reports[0].id in r.message and "without its audio" in r.message for r in caplog.records)
    assert any(reports[2].id in r.message and "NOT sent" in r.message for r in caplog.records)
    box.remove(a)  # delivered: room again
    assert box.bytes == 0 and box.put(reports[2]) is not None
    box.close()


# --- the central side -----------------------------------------------------------------------------------------


def test_a_lost_acknowledgement_is_sent_again_and_stored_once(central, tmp_path: Path) -> None:
    """The central service stores the call but its answer never reaches the site: the site sends it again and
    is told it is already stored; one report, one count in the metrics."""
    client, write, read, settings = central
    (report,) = site_reports(tmp_path, 1)
    box = Outbox(tmp_path / "outbox", 10**9)
    box.put(report)

    class LoseFirstAnswer(httpx.BaseTransport):
        def __init__(self, inner: httpx.BaseTransport) -> None:
            self.inner, self.calls = inner, 0

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = self.inner.handle_request(request)
            self.calls += 1
            if self.calls == 1:
                response.read()
                raise httpx.ReadTimeout("the answer was lost", request=request)
            return response

    lossy = LoseFirstAnswer(client._transport)
    client._transport = lossy  # type: ignore[assignment]
    sender = Sender(box, "http://testserver", write, FAST, client=client).start()
    sender.close(drain_s=10)
    assert lossy.calls == 2 and (sender.sent, sender.duplicates, sender.failed_attempts) == (0, 1, 1)
    assert box.pending() == []
    with Store(settings.db).connect() as db:
        assert db.execute("SELECT count(*) FROM reports").fetchone()[0] == 1
        assert db.execute("SELECT site FROM site_calls").fetchall() == [("lab-1",)]
    counts = metric(client, read, "callqa_site_calls_total")
    assert counts == {'callqa_site_calls_total{outcome="stored"}': 1.0,
                      'callqa_site_calls_total{outcome="duplicate"}': 1.0}  # fmt: skip
    analysed = metric(client, read, "callqa_calls_analyzed_total")
    assert sum(analysed.values()) == 1.0
    box.close()


def test_post_calls_checks_keys_content_and_ids(central, tmp_path: Path) -> None:
    client, write, read, settings = central
    first, second = site_reports(tmp_path, 2)
    body = first.model_dump_json().encode()
    assert post(client, read, body).status_code == 403  # a read key cannot write
    assert client.post("/calls", files=[("report", ("r.json", body, "application/json"))]).status_code == 401
    r = post(client, write, body)
    assert r.status_code == 201 and r.json() == {"id": first.id, "site": "lab-1", "status": "stored"}
    r = post(client, write, body)
    assert r.status_code == 200 and r.json()["status"] == "already stored"
    # the same id from another site, or other content under the same id: refused, the stored copy unchanged
    r = post(client, write, first.model_copy(update={"site": "lab-2"}).model_dump_json().encode())
    assert r.status_code == 409 and "another site" in r.json()["detail"]
    r = post(client, write, first.model_copy(update={"verdict": "failed"}).model_dump_json().encode())
    assert r.status_code == 409 and "another report" in r.json()["detail"]
    stored = client.get(f"/calls/{first.id}", headers={"Authorization": f"Bearer {read}"}).json()
    assert stored["verdict"] == first.verdict and stored["site"] == "lab-1"
    # a call analysed here is never overwritten by a site's report with its id
    Store(settings.db).put(second.model_copy(update={"site": None}))
    assert post(client, write, second.model_dump_json().encode()).status_code == 409
    # not a site's report
    for bad, why in ((b"{", "not a valid CallReport"), (first.model_copy(update={"site": None}), "site"),
                     (first.model_copy(update={"id": "ABC"}), "cache_key")):  # fmt: skip
        data = bad if isinstance(bad, bytes) else bad.model_dump_json().encode()
        r = post(client, write, data)
        assert r.status_code == 422 and why in r.json()["detail"], r.text
    assert metric(client, read, "callqa_site_calls_total")['callqa_site_calls_total{outcome="refused"}'] == 6.0


def test_a_sites_call_arrives_with_its_audio(central, tmp_path: Path) -> None:
    """The real analysis of a captured call with speech, its legs kept at the site, spooled and delivered: the
    central service serves the same report and the same WAV bytes."""
    client, write, read, _ = central
    site = Settings(db=tmp_path / "site" / "store.sqlite3", models_dir=tmp_path / "models",
                    analysis=AnalysisSettings(nisqa=False, dnsmos=False))  # fmt: skip
    call = captures.Call("site-audio-1", caller_frames=captures.speech_frames(3.0),
                         callee_frames=captures.speech_frames(3.0, seed=1))  # fmt: skip
    path = captures.write(tmp_path / "call.pcap", call.packets())
    (captured,) = read_capture(path).calls
    report = report_captured(captured, site, Store(site.db), "live:eth0", "hash", audio_dir=audio_dir(site),
                             site="lab-1")  # fmt: skip
    assert report.site == "lab-1" and len(report.legs) == 2
    kept = sorted((audio_dir(site) / report.id).iterdir())
    wav = kept[0].read_bytes()
    stereo = write_wav(tmp_path / "stereo.wav", np.zeros((2, 800)), 8000).read_bytes()
    for name, data, why in (("0-caller.wav", b"RIFF....", "not a WAV"), ("5-caller.wav", wav, "one of the call's"),
                            ("../0-caller.wav", wav, "one of the call's"), ("0-callee.wav", wav, "one of the call's"),
                            ("0-caller.wav", stereo, "not mono 16-bit")):  # fmt: skip
        r = post(client, write, report.model_dump_json().encode(), [(name, data)])
        assert r.status_code == 422 and why in r.json()["detail"], r.text
    box = Outbox(tmp_path / "outbox", 10**9)
    box.put(report, kept)
    Sender(box, "http://testserver", write, FAST, client=client).start().close(drain_s=10)
    assert box.pending() == []
    auth = {"Authorization": f"Bearer {read}"}
    assert CallReport.model_validate(client.get(f"/calls/{report.id}", headers=auth).json()) == report
    for i, leg in enumerate(report.legs):
        r = client.get(f"/calls/{report.id}/audio/{leg.role}", headers=auth)
        assert r.status_code == 200 and r.content == (audio_dir(site) / report.id / f"{i}-{leg.role}.wav").read_bytes()
    box.close()
    # a site's report whose leg names a file on the central machine: that file is never read or served
    key = ("1" if report.cache_key[0] == "0" else "0") + report.cache_key[1:]
    legs = [leg.model_copy(update={"source": str(kept[0])}) for leg in report.legs]
    elsewhere = report.model_copy(update={"id": key[:16], "cache_key": key, "legs": legs})
    assert post(client, write, elsewhere.model_dump_json().encode()).status_code == 201
    r = client.get(f"/calls/{elsewhere.id}/audio/caller", headers=auth)
    assert r.status_code == 404 and "not kept" in r.json()["detail"]
    # the call's page names the site (signed in with the read key, as a browser does)
    csrf = client.get("/ui/login").cookies["callqa_login"]
    client.post("/ui/login", data={"key": read, "csrf": csrf, "next": f"/ui/calls/{report.id}"})
    page = client.get(f"/ui/calls/{report.id}")
    assert page.status_code == 200 and '· site <b id="site">lab-1</b>' in page.text


# --- a site in a network namespace, the central service down for a while ---------------------------------------


def _netns_available() -> str | None:
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("nft"):
        return "needs root, iproute2 and nftables (installed by .ci/run) for a network namespace and a partition"
    return None


@pytest.fixture
def site_net() -> Iterator[tuple[str, str, str]]:
    """A network namespace joined to this one by a veth pair: (namespace, host-side address, site address)."""
    tag = uuid.uuid4().hex[:8]
    ns, host_if, site_if = f"callqa-site-{tag}", f"cqh{tag}", f"cqs{tag}"
    a, b, c = 200 + int(tag[:2], 16) % 50, int(tag[2:4], 16), int(tag[4:6], 16) // 4 * 4  # a random /30
    host_addr, site_addr = f"10.{a}.{b}.{c + 1}", f"10.{a}.{b}.{c + 2}"
    run = lambda *a: subprocess.run(list(a), check=True, capture_output=True)  # noqa: E731
    run("ip", "netns", "add", ns)
    try:
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", site_if, "netns", ns)
        run("ip", "addr", "add", f"{host_addr}/30", "dev", host_if)
        run("ip", "link", "set", host_if, "up")
        run("ip", "-n", ns, "addr", "add", f"{site_addr}/30", "dev", site_if)
        run("ip", "-n", ns, "link", "set", site_if, "up")
        run("ip", "-n", ns, "link", "set", "lo", "up")
        yield ns, host_addr, site_addr
    finally:
        subprocess.run(["ip", "link", "delete", host_if], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "delete", ns], check=False, capture_output=True)


def _free_port(addr: str, kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


def _hep(call: captures.Call, tmp: Path, dest: tuple[str, int]) -> None:
    """The call's packets as HEP v3 from a capture agent, stamped with the agent's clock, 10x faster."""
    capture = captures.write(tmp / f"{call.call_id}.pcap", call.packets())
    dec = Decoder()
    segments = [s for f in CaptureFile(capture).frames() if (s := dec.decode(f.ts, f.linktype, f.data))]
    t0, now = segments[0].ts, time.time()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for seg in segments:
            s.sendto(build_hep3(replace(seg, ts=now + (seg.ts - t0) / 10)), dest)
            time.sleep(0.0003)


class Central:
    """``callqa serve`` as an operator runs it, bound to the host side of the veth pair."""

    def __init__(self, tmp: Path, addr: str) -> None:
        self.tmp, self.addr, self.port = tmp, addr, _free_port(addr)
        self.db = tmp / "central" / "store.sqlite3"
        keys = KeyStore(Store(self.db))
        self.write, self.read = keys.create("write", "site lab-1"), keys.create("read", "test")
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.addr}:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "CALLQA_DB": str(self.db), "CALLQA_MODELS_DIR": str(self.tmp / "models"),
               "CALLQA_ANALYSIS__NISQA": "false", "PYTHONPATH": str(REPO / "src")}  # fmt: skip
        self.proc = subprocess.Popen([sys.executable, "-m", "callqa.cli", "serve", "--host", self.addr, "--port",
                                      str(self.port)], env=env, cwd=self.tmp, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.communicate()[1][-2000:]
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("the central service did not start")

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            self.proc.wait(30)
        self.proc = None

    def calls(self) -> list[dict]:  # type: ignore[type-arg]
        r = httpx.get(self.url + "/calls?limit=50", headers={"Authorization": f"Bearer {self.read}"}, timeout=5)
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

    def metrics(self) -> str:
        return httpx.get(self.url + "/metrics", headers={"Authorization": f"Bearer {self.read}"}, timeout=5).text


def _sniffer(ns: str, site_addr: str, hep_port: int, central: Central, tmp: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "CALLQA_DB": str(tmp / "site" / "store.sqlite3"), "CALLQA_SITE__KEY": central.write,
           "CALLQA_SITE__RETRY_MIN_S": "0.2", "CALLQA_SITE__RETRY_MAX_S": "0.5", "CALLQA_SITE__DRAIN_S": "1",
           "CALLQA_SITE__TIMEOUT_S": "1",
           "PYTHONPATH": str(REPO / "src")}  # fmt: skip
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "callqa.cli", "sniff", "--jsonl",
                             "--stats-only", "--hep", f"{site_addr}:{hep_port}", "--inactivity", "1", "--site",
                             "lab-1", "--central", central.url], env=env, cwd=tmp, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    return proc


def _until(condition, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s} s: {what}")


@pytest.mark.skipif(_netns_available() is not None, reason=str(_netns_available()))
def test_site_in_a_namespace_delivers_every_call_once_across_an_outage(site_net, tmp_path: Path) -> None:
    """A call finishes while the network to the central service drops every packet (nftables in the site's
    namespace: connections time out), then calls finish while the central service is down and the site's
    sniffer is restarted meanwhile: when the central service is back, every call is there exactly once and the
    site's spool is empty."""
    ns, host_addr, site_addr = site_net
    central = Central(tmp_path, host_addr)
    hep_port = _free_port("127.0.0.1", socket.SOCK_DGRAM)
    calls = generated_calls(tmp_path, 7, prefix=f"outage-{uuid.uuid4().hex[:6]}")
    nft = ["ip", "netns", "exec", ns, "nft"]
    spool = tmp_path / "site" / "outbox"
    lines: list[str] = []
    sniffer = None
    try:
        sniffer = _sniffer(ns, site_addr, hep_port, central, tmp_path)  # both start at once
        central.start()
        wait_listening(sniffer, "udp", hep_port)
        for call in calls[:2]:
            _hep(call, tmp_path, (site_addr, hep_port))
        _until(lambda: len(central.calls()) == 2, 20, "the first two calls at the central service")
        # and acknowledged (a fault before the site has the answer would be a lost acknowledgement, which the
        # site repairs by sending again: tested above; here the counts stay exact)
        _until(lambda: not list(spool.glob("*.zip")), 10, "the site's spool emptied")
        # a partition: the site's packets to the central service vanish (no answer, no reset)
        drop = f"add rule ip part out ip daddr {host_addr} tcp dport {central.port} drop"
        subprocess.run([*nft, f"add table ip part; add chain ip part out {{ type filter hook output priority 0; }}; "
                        f"{drop}"], check=True)  # fmt: skip
        _hep(calls[2], tmp_path, (site_addr, hep_port))
        _until(lambda: len(list(spool.glob("*.zip"))) == 1, 20, "the third call spooled during the partition")
        time.sleep(2.0)  # at least one attempt times out (1 s each)
        assert len(central.calls()) == 2
        subprocess.run([*nft, "delete", "table", "ip", "part"], check=True)
        _until(lambda: len(central.calls()) == 3, 20, "the third call delivered after the partition")
        _until(lambda: not list(spool.glob("*.zip")), 10, "the site's spool emptied")
        central.stop(kill=True)  # it crashes (SIGKILL): the next calls finish and wait in the site's spool
        for call in calls[3:6]:
            _hep(call, tmp_path, (site_addr, hep_port))
        _until(lambda: len(list(spool.glob("*.zip"))) == 3, 20, "three calls spooled at the site")
        sniffer.terminate()  # the site restarts while the central service is still down
        out, err = sniffer.communicate(timeout=30)
        lines += out.splitlines()
        assert sniffer.returncode == 0, err[-2000:]
        assert "3 waiting in the spool" in err and "cannot reach" in err
        # the partition showed as timeouts (a connection kept alive from the first calls times out reading, a new
        # one connecting), the outage as refused connections
        assert "Timeout: timed out" in err and "Connection refused" in err
        sniffer = _sniffer(ns, site_addr, hep_port, central, tmp_path)
        wait_listening(sniffer, "udp", hep_port)
        _hep(calls[6], tmp_path, (site_addr, hep_port))
        _until(lambda: len(list(spool.glob("*.zip"))) == 4, 20, "the fourth call spooled")
        central.start()
        _until(lambda: len(central.calls()) == 7, 20, "all seven calls at the central service")
        _until(lambda: not list(spool.glob("*.zip")), 10, "the spool emptied")
        metrics = central.metrics()  # since the restart: four stored, none twice
        sniffer.terminate()
        out, err = sniffer.communicate(timeout=30)
        lines += out.splitlines()
        assert sniffer.returncode == 0, err[-2000:]
    finally:
        if sniffer is not None and sniffer.poll() is None:
            sniffer.kill()
            sniffer.wait()
        central.stop()
    site_ids = {json.loads(line)["id"] for line in lines}
    assert len(site_ids) == 7 == len(lines)
    with Store(central.db).connect() as db:
        rows = db.execute("SELECT id, json_extract(report, '$.sip.call_id'), json_extract(report, '$.site') "
                          "FROM reports").fetchall()  # fmt: skip
        received = db.execute("SELECT report_id, site FROM site_calls").fetchall()
    assert {r[0] for r in rows} == site_ids and len(rows) == 7
    assert sorted(r[1] for r in rows) == sorted(c.call_id for c in calls)  # each call once, none missing
    assert {r[2] for r in rows} == {"lab-1"} and sorted(received) == sorted((i, "lab-1") for i in site_ids)
    assert 'callqa_site_calls_total{outcome="stored"} 4.0' in metrics
    assert 'outcome="duplicate"' not in metrics and 'outcome="refused"' not in metrics
    assert not list(spool.glob("*.zip")) and not (spool / "quarantine").exists()


def test_a_site_needs_its_name_central_service_and_key(tmp_path: Path) -> None:
    from callqa.service.live import SniffOptions, run_live

    settings = Settings(db=tmp_path / "s.sqlite3")
    for options, why in ((SniffOptions(site="lab-1"), "central service"),
                         (SniffOptions(central_url="http://x"), "name"),
                         (SniffOptions(site="lab-1", central_url="http://x"), "write API key"),
                         (SniffOptions(site="lab 1/..", central_url="http://x"), "site name")):  # fmt: skip
        with pytest.raises(CallqaError, match=why):
            run_live(settings, options, print, print)


def test_outbox_commands_show_requeue_and_add(tmp_path: Path) -> None:
    """`callqa outbox status` (while a sniffer holds the spool too), `requeue` and `add`, as an operator runs them."""
    reports = site_reports(tmp_path, 3)
    db = tmp_path / "site" / "store.sqlite3"
    store = Store(db)
    for r in reports:
        store.put(r)
    box = Outbox(db.parent / "outbox", 10**9)
    box.put(reports[0])
    box.quarantine(box.put(reports[1]), "refused by the central service: HTTP 413: too large")  # type: ignore[arg-type]
    env = {**os.environ, "CALLQA_DB": str(db), "PYTHONPATH": str(REPO / "src")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "callqa.cli", "outbox", *args], capture_output=True, text=True,
                              env=env, timeout=120)  # fmt: skip

    status = json.loads(cli("status", "--json").stdout)  # the spool is held by `box` (a running sniffer)
    assert status["waiting"] == 1 and status["bytes"] == box.bytes and status["oldest_age_s"] >= 0
    assert [q["reason"] for q in status["quarantined"]] == ["refused by the central service: HTTP 413: too large"]
    busy = cli("requeue")
    assert busy.returncode == 2 and "in use by another process" in busy.stderr
    box.close()
    assert "1 entries back" in cli("requeue").stdout
    done = cli("add", reports[2].id, "0123456789abcdef")
    assert done.returncode == 2 and "no stored call '0123456789abcdef'" in done.stderr
    box = Outbox(db.parent / "outbox", 10**9)
    assert [box.read(p).report_id for p in box.pending()] == [r.id for r in reports]
    assert box.quarantined_entries() == []
    box.close()


def test_an_unknown_key_is_retried_and_a_too_large_call_quarantined(tmp_path: Path) -> None:
    """What the central service answers decides: 401 (a key it does not know yet) keeps the entry for later;
    413 (larger than its body limit) can never succeed as it is, so the entry is quarantined with the reason."""
    (report,) = site_reports(tmp_path, 1)
    settings = Settings(db=tmp_path / "central" / "store.sqlite3")
    write = KeyStore(Store(settings.db)).create("write", "site lab-1")
    box = Outbox(tmp_path / "outbox", 10**9)
    box.put(report)
    client = TestClient(create_app(settings, provider=None))
    sender = Sender(box, "http://testserver", "cqa_00000000_unknown", FAST, client=client).start()
    sender.close(drain_s=0.5)
    assert len(box.pending()) == 1 and sender.failed_attempts >= 2 and "answered 401" in sender.last_error
    assert box.quarantined_entries() == []
    small = settings.model_copy(update={"api": ApiSettings(max_upload_bytes=2000)})  # smaller than the call
    client = TestClient(create_app(small, provider=None))
    sender = Sender(box, "http://testserver", write, FAST, client=client).start()
    sender.close(drain_s=5)
    (q,) = box.quarantined_entries()
    assert box.pending() == [] and "HTTP 413" in (q.parent / (q.name + ".reason")).read_text()
    box.close()
