"""Fetching recordings: a real HTTP server and a real OpenSSH server on loopback ports started by the tests."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from callqa.api.keys import KeyStore
from callqa.api.main import create_app
from callqa.config import AnalysisSettings, FetchSettings, Settings, SftpServer
from callqa.errors import FetchError, InputError, LimitError
from callqa.sources.http import check_resolved, fetch_http
from callqa.sources.sftp import fetch_sftp, resolve
from callqa.store import Store

REPO = Path(__file__).resolve().parents[1]
AGENT = REPO / "examples" / "call-agent.wav"


class Recordings(BaseHTTPRequestHandler):
    """/call.wav, /redirect-ok, /redirect-out, /slow, /huge (declares a large length), /missing (404)."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        port = self.server.server_address[1]
        if self.path == "/call.wav":
            body = AGENT.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/no-length.wav":  # HTTP/1.0: the body ends when the connection closes
            self.send_response(200)
            self.end_headers()
            self.wfile.write(AGENT.read_bytes())
        elif self.path == "/redirect-ok":
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{port}/call.wav")
            self.end_headers()
        elif self.path == "/redirect-out":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
        elif self.path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.end_headers()
        elif self.path == "/slow":
            self.send_response(200)
            self.end_headers()
            for _ in range(300):  # 30 s: a fetch without a working deadline would take that long
                self.wfile.write(b"x" * 100)
                self.wfile.flush()
                time.sleep(0.1)
        elif self.path == "/stall":  # a host that accepts and then says nothing for a long time
            time.sleep(10)
            with contextlib.suppress(OSError):  # the client has given up by then
                self.send_error(503)
        elif self.path == "/host.wav":  # names the Host header it was asked with, in the body
            body = self.headers.get("Host", "").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/huge":
            self.send_response(200)
            self.send_header("Content-Length", str(10**12))
            self.end_headers()
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def http_server():  # type: ignore[no-untyped-def]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recordings)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_fetch_with_allowlist(http_server: str, tmp_path: Path) -> None:
    fetch = FetchSettings(http_hosts=[http_server], timeout_s=2.0, max_bytes=10**6)
    got = fetch_http(f"http://{http_server}/call.wav", fetch, tmp_path)
    assert got.read_bytes() == AGENT.read_bytes() and got.name == "call.wav"
    assert fetch_http(f"http://{http_server}/redirect-ok", fetch, tmp_path).read_bytes() == AGENT.read_bytes()
    with pytest.raises(FetchError, match="169.254.169.254.*not an allowed recording host"):
        fetch_http(f"http://{http_server}/redirect-out", fetch, tmp_path)
    with pytest.raises(FetchError, match="more than 5 redirects"):
        fetch_http(f"http://{http_server}/loop", fetch, tmp_path)
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_http(f"http://{http_server}/missing", fetch, tmp_path)
    with pytest.raises(LimitError, match="more than the limit"):
        fetch_http(f"http://{http_server}/huge", fetch, tmp_path)
    with pytest.raises(LimitError, match="larger than the limit"):
        fetch_http(f"http://{http_server}/no-length.wav", fetch.model_copy(update={"max_bytes": 1000}), tmp_path)
    assert fetch_http(f"http://{http_server}/no-length.wav", fetch, tmp_path).read_bytes() == AGENT.read_bytes()
    t0 = time.monotonic()
    with pytest.raises(FetchError, match="longer than 1 s"):
        fetch_http(f"http://{http_server}/slow", fetch.model_copy(update={"timeout_s": 1.0}), tmp_path)
    assert time.monotonic() - t0 < 15  # cut at the 1 s deadline, long before the 30 s the server takes (slack for load)
    host, port = http_server.split(":")
    for url in (f"http://{host}:{int(port) + 1}/call.wav", f"ftp://{http_server}/call.wav",
                f"http://user:pw@{http_server}/call.wav", "http://localhost/call.wav"):  # fmt: skip
        with pytest.raises(FetchError, match="not an allowed recording host"):
            fetch_http(url, fetch, tmp_path)
    with pytest.raises(InputError):
        fetch_http("http://[::1", fetch, tmp_path)


def test_http_fetch_unreachable_host_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fetch = FetchSettings(http_hosts=[f"127.0.0.1:{port}"], timeout_s=2.0)
    with pytest.raises(FetchError, match="cannot fetch"):
        fetch_http(f"http://127.0.0.1:{port}/call.wav", fetch, tmp_path)


def test_analyze_by_url_through_the_api(http_server: str, tmp_path: Path) -> None:
    settings = Settings(db=tmp_path / "s.sqlite3", analysis=AnalysisSettings(nisqa=False),
                        fetch=FetchSettings(http_hosts=[http_server], timeout_s=5.0))  # fmt: skip
    token = KeyStore(Store(settings.db)).create("write")
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(settings, provider=None)) as client:
        r = client.post("/analyze?wait=120", headers=auth, data={"url": f"http://{http_server}/call.wav"})
        assert r.status_code == 200, r.text
        assert r.json()["legs"][0]["source"] == f"http://{http_server}/call.wav"
        r = client.post("/analyze?wait=120", headers=auth, data={"url": f"http://{http_server}/missing"})
        assert r.status_code == 502 and "HTTP 404" in r.json()["detail"]


# --- SFTP against a real OpenSSH server -------------------------------------------------------------------


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    sshd_bin = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd_bin):
        pytest.fail("OpenSSH server not installed (setup.sh --dev installs openssh-server)")
    tmp = tmp_path_factory.mktemp("sshd")
    for name in ("host", "client", "other_host"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / name)], check=True)
    (tmp / "authorized_keys").write_text((tmp / "client.pub").read_text())
    recordings = tmp / "recordings"
    recordings.mkdir()
    shutil.copy(AGENT, recordings / "call.wav")
    (tmp / "secret.txt").write_text("outside the recording directory")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp / 'host'}\nPidFile {tmp / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"sshd did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
    host_pub = (tmp / "host.pub").read_text().split()
    (tmp / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    other = (tmp / "other_host.pub").read_text().split()
    (tmp / "wrong_known_hosts").write_text(f"[127.0.0.1]:{port} {other[0]} {other[1]}\n")
    os.chmod(tmp / "client", 0o600)
    server = SftpServer(name="rec", host="127.0.0.1", port=port, user=getpass.getuser(), key_file=tmp / "client",
                        known_hosts=tmp / "known_hosts", base_dir=str(recordings))  # fmt: skip
    yield server, tmp
    proc.terminate()
    proc.wait(10)


def test_sftp_fetch(sshd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, _ = sshd
    fetch = FetchSettings(sftp_servers=[server], timeout_s=10.0)
    got = fetch_sftp("rec:call.wav", fetch, tmp_path)
    assert got.read_bytes() == AGENT.read_bytes()
    assert fetch_sftp(f"{server.base_dir}/call.wav", fetch, tmp_path).read_bytes() == AGENT.read_bytes()
    with pytest.raises(FetchError, match="does not exist"):
        fetch_sftp("rec:nope.wav", fetch, tmp_path)
    with pytest.raises(LimitError):
        fetch_sftp("rec:call.wav", fetch.model_copy(update={"max_bytes": 100}), tmp_path)


def test_sftp_refuses_what_it_must(sshd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, tmp = sshd
    fetch = FetchSettings(sftp_servers=[server], timeout_s=10.0)
    for ref in ("rec:../secret.txt", f"rec:{tmp}/secret.txt", "rec:/etc/passwd"):
        with pytest.raises(FetchError, match="outside the server's recording directory"):
            fetch_sftp(ref, fetch, tmp_path)
    with pytest.raises(FetchError, match="not a configured SFTP recording server"):
        fetch_sftp("elsewhere:/call.wav", fetch, tmp_path)
    wrong = server.model_copy(update={"known_hosts": tmp / "wrong_known_hosts"})
    with pytest.raises(FetchError, match="host key"):
        fetch_sftp("rec:call.wav", FetchSettings(sftp_servers=[wrong], timeout_s=10.0), tmp_path)
    unknown = server.model_copy(update={"known_hosts": tmp_path / "empty_known_hosts"})
    (tmp_path / "empty_known_hosts").write_text("")
    with pytest.raises(FetchError, match="SFTP to rec failed"):
        fetch_sftp("rec:call.wav", FetchSettings(sftp_servers=[unknown], timeout_s=10.0), tmp_path)
    loose_key = tmp_path / "loose"
    shutil.copy(server.key_file, loose_key)
    os.chmod(loose_key, 0o644)
    with pytest.raises(FetchError, match="readable by others"):
        fetch_sftp("rec:call.wav", FetchSettings(sftp_servers=[server.model_copy(update={"key_file": loose_key})]),
                   tmp_path)  # fmt: skip
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    with pytest.raises(FetchError, match="SFTP to rec failed"):
        fetch_sftp("rec:call.wav", FetchSettings(sftp_servers=[server.model_copy(update={"key_file": stranger})],
                                                 timeout_s=10.0), tmp_path)  # fmt: skip
    assert resolve("x.wav", [server])[1] == f"{server.base_dir}/x.wav"  # one server: the name may be left out
    with pytest.raises(FetchError, match="outside"):
        resolve("/x.wav", [server])


def test_sftp_unreachable_server(tmp_path: Path, sshd) -> None:  # type: ignore[no-untyped-def]
    server, _ = sshd
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = server.model_copy(update={"port": port})
    with pytest.raises(FetchError, match="cannot reach SFTP server rec"):
        fetch_sftp("rec:call.wav", FetchSettings(sftp_servers=[down], timeout_s=5.0), tmp_path)


def test_analyze_by_sftp_through_the_api(sshd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, _ = sshd
    settings = Settings(db=tmp_path / "s.sqlite3", analysis=AnalysisSettings(nisqa=False),
                        fetch=FetchSettings(sftp_servers=[server], timeout_s=10.0))  # fmt: skip
    token = KeyStore(Store(settings.db)).create("write")
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(settings, provider=None)) as client:
        r = client.post("/analyze?wait=120", headers=auth, data={"sftp": "rec:call.wav"})
        assert r.status_code == 200, r.text
        assert r.json()["legs"][0]["source"] == "sftp:rec:call.wav"
        r = client.post("/analyze", headers=auth, data={"sftp": "rec:../../etc/shadow"})
        assert r.status_code == 403


def test_allowed_names_must_resolve_to_public_addresses(http_server: str, tmp_path: Path) -> None:
    """A name on the allowlist that resolves to loopback (or metadata, or a private range) is refused; the
    same address listed literally is allowed."""
    port = http_server.split(":")[1]
    by_name = FetchSettings(http_hosts=[f"localhost:{port}"], timeout_s=2.0)
    with pytest.raises(FetchError, match="localhost resolves to .*internal address"):
        fetch_http(f"http://localhost:{port}/call.wav", by_name, tmp_path)
    assert fetch_http(f"http://{http_server}/call.wav", FetchSettings(http_hosts=[http_server]), tmp_path).is_file()

    def fake(addresses: list[str]):  # type: ignore[no-untyped-def]
        return lambda host, port: addresses

    url = httpx.URL("https://recordings.example.com/a.wav")
    for internal in ("169.254.169.254", "10.1.2.3", "192.168.0.7", "100.64.0.1", "::1", "fd00:ec2::254",
                     "::ffff:127.0.0.1", "0.0.0.0"):  # fmt: skip
        with pytest.raises(FetchError, match="internal address"):
            check_resolved(url, ["recordings.example.com"], fake(["93.184.216.34", internal]))
    check_resolved(url, ["recordings.example.com"], fake(["93.184.216.34", "2606:2800:220:1::1"]))
    check_resolved(url, ["recordings.example.com", "10.1.2.3:443"], fake(["10.1.2.3"]))  # listed by address


def test_the_connection_goes_to_the_address_that_was_checked(http_server: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """DNS rebinding: the name is resolved once, checked, and the request goes to that address with the name in
    its Host header. A name the system resolver does not know at all is fetched through the checked address, so
    no second lookup (which could answer with an internal address) takes place."""
    from callqa.sources import http

    port = http_server.split(":")[1]
    lookups: list[str] = []
    answers = iter([["127.0.0.1"], ["169.254.169.254"]])  # the second answer would be the rebinding one

    def resolve(host: str, p: int) -> list[str]:
        lookups.append(host)
        return next(answers)

    monkeypatch.setattr(http, "_resolve", resolve)
    fetch = FetchSettings(http_hosts=[f"recordings.invalid:{port}", f"127.0.0.1:{port}"], timeout_s=5.0)
    got = fetch_http(f"http://recordings.invalid:{port}/host.wav", fetch, tmp_path)
    assert got.read_bytes() == f"recordings.invalid:{port}".encode()
    assert lookups == ["recordings.invalid"]
    # HEAD probes (the ViciDial sync's change check) go the same way; the rebinding answer is refused there
    with pytest.raises(FetchError, match="169.254.169.254, an internal address"):
        http.probe_http(f"http://recordings.invalid:{port}/host.wav", fetch)


def test_a_stalled_recording_host_does_not_hold_the_analysis_worker(http_server: str, tmp_path: Path) -> None:
    """Fetching happens in the service, not in the (single) analysis worker: an upload posted after a URL whose
    host stalls is analysed while that fetch still waits; the stalled job then fails with the fetch's error."""
    settings = Settings(db=tmp_path / "s.sqlite3", analysis=AnalysisSettings(nisqa=False),
                        fetch=FetchSettings(http_hosts=[http_server], timeout_s=8.0))  # fmt: skip
    token = KeyStore(Store(settings.db)).create("write")
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(settings, provider=None)) as client:
        deadline = time.monotonic() + 120
        while client.get("/ready", headers=auth).status_code != 200:  # the worker has loaded its models
            assert time.monotonic() < deadline
            time.sleep(0.5)
        stalled = client.post("/analyze", headers=auth, data={"url": f"http://{http_server}/stall"})
        assert stalled.status_code == 202
        upload = client.post("/analyze", headers=auth,
                             files=[("files", ("agent.wav", AGENT.read_bytes(), "audio/wav"))])  # fmt: skip
        assert upload.status_code == 202
        while (mine := client.get(f"/jobs/{upload.json()['id']}", headers=auth).json())["status"] == "queued":
            time.sleep(0.05)  # with the fetch in the worker, it would wait here until the fetch gave up
        other = client.get(f"/jobs/{stalled.json()['id']}", headers=auth).json()
        assert mine["status"] in ("running", "done") and other["status"] in ("queued", "running"), (mine, other)
        assert client.get(f"/jobs/{upload.json()['id']}?wait=120", headers=auth).json()["status"] == "done"
        job = client.get(f"/jobs/{stalled.json()['id']}?wait=30", headers=auth).json()
        assert job["status"] == "failed" and job["error_code"] == 502 and "timed out" in job["error"], job
    assert not any((settings.data_dir / "spool").iterdir())
