"""Waiting on a process under test by conditions, not by sleeping: until it holds a socket, until its output
says what the test waits for."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path


def _socket_inodes(pid: int) -> set[str]:
    out: set[str] = set()
    with contextlib.suppress(OSError):
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    for fd in fds if "fds" in locals() else []:
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                out.add(target[8:-1])
    return out


def _bound(pid: int, table: str, port: int | None) -> set[str]:
    """Inodes of the sockets in /proc/PID/net/TABLE, PID's network namespace ("packet": raw sockets bound to a
    protocol and running, so capturing; "udp": bound to ``port``)."""
    rows = [line.split() for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]]
    if table == "packet":  # sk RefCnt Type Proto Iface R Rmem User Inode
        return {r[8] for r in rows if r[3] != "0000" and r[5] == "1"}
    return {r[9] for r in rows if int(r[1].rsplit(":", 1)[1], 16) == port}


def wait_listening(proc: subprocess.Popen, table: str, port: int | None = None, timeout_s: float = 120) -> None:
    """Wait until ``proc`` holds a capture socket (``table`` "packet") or a UDP socket bound to ``port``: from
    then on nothing sent is missed, however long the start took."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args} exited early: {(proc.communicate()[1] or '')[-2000:]}")
        if _socket_inodes(proc.pid) & _bound(proc.pid, table, port):
            return
        time.sleep(0.05)
    raise AssertionError(f"{proc.args} did not open its socket within {timeout_s} s")


def lines_until(proc: subprocess.Popen, done: Callable[[list[str]], bool], timeout_s: float = 120,
                ) -> tuple[list[str], str]:  # fmt: skip
    """Read ``proc``'s stdout lines until ``done(lines)``, then stop it (SIGTERM: it ends cleanly) and return
    (stdout lines, stderr). Fails after ``timeout_s`` without the condition."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout_s
    while not done(list(lines)) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    met = done(list(lines))
    proc.terminate()
    err = proc.stderr.read() if proc.stderr else ""
    proc.wait(timeout=60)
    reader.join(timeout=10)
    assert met, f"condition not met within {timeout_s} s; stdout {lines!r}, stderr {err[-2000:]}"
    return lines, err
