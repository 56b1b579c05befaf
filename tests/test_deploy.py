"""The deployment files are valid for the tools that will read them: systemd and nginx."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "deploy" / "callqa.service"
SITE = REPO / "deploy" / "nginx" / "callqa.conf"


def _unit_here(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's callqa (verify checks that the binary exists)."""
    callqa = Path(sys.executable).parent / "callqa"
    unit = tmp_path / "callqa.service"
    unit.write_text(UNIT.read_text().replace("/opt/callqa/.venv/bin/callqa", str(callqa)))
    return unit


def test_systemd_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze not found (Debian package systemd)")
    unit = _unit_here(tmp_path)
    run = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stderr.strip() == "", run.stderr
    text = UNIT.read_text()
    for setting in ("Restart=on-failure", "ProtectSystem=strict", "PrivateTmp=yes", "NoNewPrivileges=yes",
                    "MemoryHigh=", "ExecStart=/opt/callqa/.venv/bin/callqa serve"):  # fmt: skip
        assert setting in text
    security = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)], capture_output=True,
                              text=True, timeout=60)  # fmt: skip
    exposure = re.search(r"Overall exposure level for callqa.service: ([\d.]+)", security.stdout)
    assert exposure and float(exposure.group(1)) <= 4.0, security.stdout[-500:]
    # a typo in a key is reported: the check can fail
    broken = tmp_path / "broken.service"
    broken.write_text(unit.read_text().replace("NoNewPrivileges=", "NoNewPrivilege="))
    run = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True, text=True, timeout=60)
    assert "Unknown key" in run.stderr


def test_nginx_site_passes_nginx_t(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.fail("nginx not found (setup.sh --dev installs nginx-light)")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=callqa",
                    "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    site = SITE.read_text().replace("/etc/ssl/certs/callqa.pem", str(tmp_path / "cert.pem"))
    site = site.replace("/etc/ssl/private/callqa.key", str(tmp_path / "key.pem"))
    (tmp_path / "site.conf").write_text(site)
    main = (f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
            f"http {{\n  access_log off;\n  client_body_temp_path {tmp_path}/body;\n"
            f"  proxy_temp_path {tmp_path}/proxy;\n  include {tmp_path}/site.conf;\n}}\n")  # fmt: skip
    (tmp_path / "nginx.conf").write_text(main)
    run = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 0 and "test is successful" in run.stderr, run.stderr
    assert "client_max_body_size 250m" in site and "proxy_request_buffering off" in site
    (tmp_path / "site.conf").write_text(site.replace("proxy_read_timeout 660s;", "proxy_read_timeout;"))
    bad = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode != 0
