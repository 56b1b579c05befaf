"""A capture site's outgoing calls: a durable spool on disk, and a sender thread that delivers it to the central
service (``POST /calls``), oldest first, deleting an entry only after the central side acknowledged it.

One entry is one ZIP file (``report.json``, and ``audio/<index>-<role>.wav`` for each kept leg; every member
carries a CRC-32, so a damaged entry is found before it is sent). An entry is written under a temporary name,
fsynced, renamed into place and the directory fsynced: once ``put`` returns, the call survives a crash or a power
cut. An entry found under its temporary name when the spool is opened (the process stopped between writing and
renaming) is completed if it is whole and quarantined if not; an entry that fails its checks is moved to
``quarantine/`` with the reason beside it, with a warning, and the sender goes on with the next one. The central
side stores each (site, report id) once, so an entry sent again after an acknowledgement was lost (a timeout, a
crash before the delete) is answered "already stored" and nothing is duplicated.

The spool is bounded (``site.spool_max_bytes``): past the bound a call is spooled without its audio, and when even
its report does not fit it is refused with an error naming it (it stays in the site's own store; ``callqa outbox
add ID`` spools it again later). Nothing is dropped without a message and a count.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import threading
import time
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic import ValidationError

from callqa.config import SiteSettings
from callqa.errors import CallqaError
from callqa.private import open_private, private_dir
from callqa.report import CallReport

log = logging.getLogger("callqa.site")

SUFFIX = ".zip"
TMP_PREFIX = ".tmp-"
QUARANTINE = "quarantine"
REPORT = "report.json"
MAX_REPORT_BYTES = 64 * 1024**2  # a report is tens of kB; a larger member is damage, not a report
ENTRY_OVERHEAD = 4096  # ZIP headers of an entry, for the size estimate before writing
AUDIO_NAME = re.compile(r"^[0-9]{1,2}-[a-z]{1,16}\.wav$")
# HTTP answers after which an entry is kept and sent again later: the central side is not ready or not reachable
# (an older central service without POST /calls answers 404/405 until it is upgraded; a wrong key 401/403)
RETRY_STATUS = {401, 403, 404, 405, 408, 425, 429}


class OutboxError(CallqaError):
    """The spool cannot be used (in use by another process, not writable)."""


class CorruptEntry(Exception):
    """A spool entry that cannot be read or does not hold a valid report."""


@dataclass(frozen=True)
class Entry:
    path: Path
    report_id: str
    report_json: bytes
    audio: list[tuple[str, bytes]]  # (file name, WAV bytes)


class Outbox:
    """The spool directory (0700, entries 0600). One process at a time writes and sends (a second one is
    refused); ``exclusive=False`` opens it to look only (``callqa outbox status`` while the sniffer runs)."""

    def __init__(self, root: Path, max_bytes: int, exclusive: bool = True) -> None:
        self.root = private_dir(Path(root))
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._seq = 0
        self.refused = 0  # calls not spooled because even their report did not fit
        self.without_audio = 0  # calls spooled without their audio because of the bound
        self.quarantined = 0
        self.bytes = 0
        self._last_ns = 0
        self._fd = self._take_lock() if exclusive else -1
        try:
            if exclusive:
                self._recover()
            pending = self.pending()
            self.bytes = sum(_size(p) for p in pending)
            # names keep sorting in spooling order even if the clock is set back
            stamps = [p.name.split("-", 1)[0] for p in pending]
            self._last_ns = max((int(t) for t in stamps if t.isdigit()), default=0)
        except BaseException:
            self.close()
            raise

    def _take_lock(self) -> int:
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutboxError(f"the spool {self.root} is in use by another process (a running sniffer)") from None
        return fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # the lock goes with it
            self._fd = -1

    def pending(self) -> list[Path]:
        """Entries waiting to be sent, oldest first (names begin with the time they were spooled)."""
        return sorted(p for p in self.root.iterdir() if p.name.endswith(SUFFIX) and not p.name.startswith("."))

    def quarantined_entries(self) -> list[Path]:
        q = self.root / QUARANTINE
        return sorted(p for p in q.iterdir() if p.name.endswith(SUFFIX)) if q.is_dir() else []

    # --- writing -------------------------------------------------------------------------------------------

    def put(self, report: CallReport, audio: Sequence[Path] = ()) -> Path | None:
        """Spool one call durably; returns its entry, or None when the spool is full (an error is logged)."""
        report_json = report.model_dump_json().encode()
        audio = [p for p in audio if AUDIO_NAME.match(p.name)]
        with self._lock:
            need = len(report_json) + sum(_size(p) for p in audio) + ENTRY_OVERHEAD * (1 + len(audio))
            dropped = bool(audio) and self.bytes + need > self.max_bytes
            if dropped:
                audio, need = [], len(report_json) + ENTRY_OVERHEAD
            if self.bytes + need > self.max_bytes:
                self.refused += 1
                log.error("spool %s is full (%d of %d bytes): call %s is NOT sent to the central service (it is "
                          "in this site's store; spool it again with `callqa outbox add %s`)",
                          self.root, self.bytes, self.max_bytes, report.id, report.id)  # fmt: skip
                return None
            self._seq += 1
            self._last_ns = max(time.time_ns(), self._last_ns + 1)
            name = f"{self._last_ns:020d}-{self._seq % 1_000_000:06d}-{report.id}{SUFFIX}"
            tmp = self.root / (TMP_PREFIX + name)
            try:
                self._write(tmp, report_json, audio)
                os.replace(tmp, self.root / name)
                _fsync_dir(self.root)
            except BaseException:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
            self.bytes += _size(self.root / name)
            if dropped:
                self.without_audio += 1
                log.warning("spool %s is nearly full (%d of %d bytes): call %s is sent without its audio",
                            self.root, self.bytes, self.max_bytes, report.id)  # fmt: skip
        return self.root / name

    @staticmethod
    def _write(tmp: Path, report_json: bytes, audio: Sequence[Path]) -> None:
        with open_private(tmp) as f:
            with zipfile.ZipFile(f, "w") as z:
                z.writestr(REPORT, report_json, compress_type=zipfile.ZIP_DEFLATED)
                for p in audio:
                    try:
                        z.write(p, f"audio/{p.name}", compress_type=zipfile.ZIP_STORED)
                    except OSError as exc:  # pruned or never written: the report goes without this leg
                        log.warning("leg audio %s not sent: %s", p.name, exc)
            f.flush()
            os.fsync(f.fileno())

    # --- reading, removing, quarantine ---------------------------------------------------------------------

    def read(self, path: Path) -> Entry:
        """An entry, every member checked against its CRC-32 and the report validated; else CorruptEntry."""
        try:
            with zipfile.ZipFile(path) as z:
                infos = {i.filename: i for i in z.infolist()}
                if REPORT not in infos:
                    raise CorruptEntry(f"no {REPORT} in it")
                if infos[REPORT].file_size > MAX_REPORT_BYTES:
                    raise CorruptEntry(f"{REPORT} declares {infos[REPORT].file_size} bytes")
                report_json = z.read(REPORT)
                report = CallReport.model_validate_json(report_json)
                audio = []
                for name in infos:
                    if name.startswith("audio/") and AUDIO_NAME.match(name.removeprefix("audio/")):
                        audio.append((name.removeprefix("audio/"), z.read(name)))
        except ValidationError as exc:
            raise CorruptEntry(f"{REPORT} is not a valid report: {exc.error_count()} errors") from None
        except FileNotFoundError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, ValueError, NotImplementedError,
                OSError) as exc:  # fmt: skip
            raise CorruptEntry(f"not a readable spool entry: {type(exc).__name__}: {exc}") from None
        if not path.name.removeprefix(TMP_PREFIX).removesuffix(SUFFIX).endswith("-" + report.id):
            raise CorruptEntry(f"it holds report {report.id}, not the one its name says")
        return Entry(path, report.id, report_json, audio)

    def remove(self, path: Path) -> None:
        """Delete a delivered entry (durably: the directory is fsynced)."""
        with self._lock:
            size = _size(path)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                self.bytes -= size
            _fsync_dir(self.root)

    def quarantine(self, path: Path, reason: str) -> Path:
        """Move an entry that cannot be sent to ``quarantine/``, its reason in ``NAME.reason`` beside it."""
        q = private_dir(self.root / QUARANTINE)
        dest = q / path.name.removeprefix(TMP_PREFIX)
        with self._lock:
            size = _size(path) if path.parent == self.root and not path.name.startswith(".") else 0
            with open_private(q / (dest.name + ".reason"), "w") as f:
                f.write(reason + "\n")
            os.replace(path, dest)
            _fsync_dir(q)
            _fsync_dir(self.root)
            self.bytes -= size
            self.quarantined += 1
        log.warning("spool entry %s quarantined (kept in %s): %s", path.name, q, reason)
        return dest

    def requeue(self) -> int:
        """Move every quarantined entry back into the spool (after the cause was fixed); returns how many."""
        moved = 0
        for p in self.quarantined_entries():
            with self._lock:
                os.replace(p, self.root / p.name)
                (p.parent / (p.name + ".reason")).unlink(missing_ok=True)
                self.bytes += _size(self.root / p.name)
            moved += 1
        _fsync_dir(self.root)
        return moved

    def _recover(self) -> None:
        """Entries left under their temporary name by a process that stopped between writing and renaming:
        completed when whole (the call was fully written), quarantined when not."""
        for tmp in sorted(p for p in self.root.iterdir() if p.name.startswith(TMP_PREFIX)):
            try:
                self.read(tmp)
            except CorruptEntry as exc:
                self.quarantine(tmp, f"incomplete: the process stopped while writing it ({exc})")
                continue
            os.replace(tmp, self.root / tmp.name.removeprefix(TMP_PREFIX))
            log.info("spool entry %s was written but not renamed: completed", tmp.name)
        _fsync_dir(self.root)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Sender:
    """Delivers the spool to the central service from a thread of its own: oldest entry first, one at a time,
    with exponential backoff (``retry_min_s`` doubling up to ``retry_max_s``, or the server's Retry-After) while
    the central side is unreachable or not ready. Entries the central side refuses for good (invalid, too large,
    a conflicting id) are quarantined, never retried forever and never deleted."""

    def __init__(self, outbox: Outbox, central_url: str, api_key: str, settings: SiteSettings,
                 client: httpx.Client | None = None) -> None:  # fmt: skip
        self.outbox, self.settings = outbox, settings
        self.url = central_url.rstrip("/") + "/calls"
        self.headers = {"Authorization": f"Bearer {api_key}"}
        verify: str | bool = str(settings.ca_file) if settings.ca_file else True
        self.client = client or httpx.Client(timeout=settings.timeout_s, trust_env=False, verify=verify)
        self._own_client = client is None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._drain_until = 0.0
        self.sent = 0  # entries the central side stored now
        self.duplicates = 0  # entries it already had (an earlier acknowledgement was lost)
        self.failed_attempts = 0
        self.last_error = ""
        self._logged = ("", 0.0)
        self.thread = threading.Thread(target=self._run, name="site-sender", daemon=True)

    def start(self) -> Sender:
        self.thread.start()
        return self

    def notify(self) -> None:
        """A new entry is in the spool."""
        self._wake.set()

    def close(self, drain_s: float | None = None) -> None:
        """Stop after sending what is spooled, for at most ``drain_s`` (what is left is sent by the next start)."""
        drain_s = self.settings.drain_s if drain_s is None else drain_s
        self._drain_until = time.monotonic() + drain_s
        self._stop.set()
        self._wake.set()
        self.thread.join(drain_s + self.settings.timeout_s + 5)
        if self._own_client:
            self.client.close()

    def _stopping_now(self) -> bool:
        return self._stop.is_set() and time.monotonic() >= self._drain_until

    def _run(self) -> None:
        delay = 0.0
        while not self._stopping_now():
            self._wake.clear()
            entries = self.outbox.pending()  # listed once per round: a backlog is not listed again per entry
            if not entries:
                if self._stop.is_set():
                    return
                self._wake.wait(1.0)
                continue
            retry_after = None
            for path in entries:  # entries spooled meanwhile sort after these: the next round takes them
                if self._stopping_now():
                    return
                try:
                    retry_after = self._deliver(path)
                except Exception as exc:  # noqa: BLE001 - the sender must outlive any one entry's trouble
                    log.exception("sending spool entry %s failed", path.name)
                    self._failed(f"sending {path.name} failed: {type(exc).__name__}: {exc}")
                    retry_after = 0.0
                if retry_after is not None:
                    break
                delay = 0.0
            if retry_after is None:
                continue
            delay = min(max(delay * 2, self.settings.retry_min_s), self.settings.retry_max_s)
            wait = max(delay, retry_after)
            if not self._stop.is_set():
                self._stop.wait(wait)  # a stop ends the wait: what is left is tried once more while draining
            else:
                time.sleep(max(0.0, min(wait, self._drain_until - time.monotonic())))

    def _deliver(self, path: Path) -> float | None:
        """Send one entry: None when it is done with (delivered or quarantined), else seconds to wait at least
        before the next attempt."""
        try:
            entry = self.outbox.read(path)
        except FileNotFoundError:
            return None
        except CorruptEntry as exc:
            self.outbox.quarantine(path, str(exc))
            return None
        files = [("report", (REPORT, entry.report_json, "application/json"))]
        files += [("audio", (name, data, "audio/wav")) for name, data in entry.audio]
        try:
            response = self.client.post(self.url, files=files, headers=self.headers)
        except httpx.HTTPError as exc:
            self._failed(f"cannot reach {self.url}: {type(exc).__name__}: {exc}")
            return 0.0
        code = response.status_code
        if code in (200, 201):
            self.outbox.remove(path)
            if code == 201:
                self.sent += 1
            else:
                self.duplicates += 1
            if self.last_error:
                log.warning("central service %s reachable again", self.url)
                self.last_error, self._logged = "", ("", 0.0)
            return None
        detail = _detail(response)
        if code in RETRY_STATUS or code >= 500:
            self._failed(f"central service {self.url} answered {code}: {detail}")
            return _retry_after(response)
        self.outbox.quarantine(path, f"refused by the central service: HTTP {code}: {detail}")
        return None

    def _failed(self, message: str) -> None:
        """Count a failed attempt; log it when the error changes, and once a minute while it lasts."""
        self.failed_attempts += 1
        self.last_error = message
        now = time.monotonic()
        if message != self._logged[0] or now - self._logged[1] >= 60:
            log.warning("%s (%d calls waiting in the spool)", message, len(self.outbox.pending()))
            self._logged = (message, now)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("detail", body) if isinstance(body, dict) else body)[:300]


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(float(response.headers.get("retry-after", "0")), 600.0)
    except ValueError:
        return 0.0
