"""The central side of capture sites: each call a site sends (its report, and its kept leg audio) is stored once.

The idempotency key is the report's ``site`` and ``id``: a site sends an entry again whenever it did not see the
acknowledgement (a timeout, the central service or the site restarting in between), and the answer to a repeat is
"already stored" with nothing written or counted again. A report id already held for another site, or for a call
analysed here, or a repeat whose content differs from what was stored, is a conflict (HTTP 409): nothing is
overwritten. What is received is recorded in ``site_calls`` in the store's database, after the report and its
audio are written, so a crash in between leaves a state the site's next attempt completes.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from callqa.audio.wav import write_bytes
from callqa.report import CallReport
from callqa.service.recordings import leg_audio_path
from callqa.store import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS site_calls (
    report_id   TEXT PRIMARY KEY,
    site        TEXT NOT NULL,
    digest      TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS site_calls_site ON site_calls (site, received_at);
"""
SITE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
REPORT_ID = re.compile(r"^[0-9a-f]{16}$")
AUDIO = re.compile(r"^([0-9]{1,2})-([a-z]{1,16})\.wav$")
MAX_REPORT_BYTES = 64 * 1024**2


class Invalid(Exception):
    """What was sent is not a site's call (HTTP 422)."""


class Conflict(Exception):
    """The id is taken by something else (HTTP 409)."""


@dataclass(frozen=True)
class Received:
    report: CallReport
    status: Literal["stored", "already stored"]


class SiteCalls:
    """Receives calls from capture sites into a store. One receive at a time per process (a lock), so two
    copies of one call arriving together are one "stored" and one "already stored"."""

    def __init__(self, store: Store, audio_root: Path) -> None:
        self.store, self.audio_root = store, audio_root
        self._lock = threading.Lock()
        with store.connect() as db:
            db.executescript(SCHEMA)

    def receive(self, report_json: bytes, audio: list[tuple[str, bytes]]) -> Received:
        report = parse(report_json)
        legs = check_audio(report, audio)
        # the report as this version writes it: a site that spools a stored copy again sends the same content
        digest = hashlib.sha256(report.model_dump_json().encode()).hexdigest()
        with self._lock:
            with self.store.connect() as db:
                row = db.execute("SELECT site, digest FROM site_calls WHERE report_id = ?", (report.id,)).fetchone()
            if row is not None:
                if row[0] != report.site:
                    raise Conflict(f"call {report.id} was already sent by another site")
                if row[1] != digest:
                    raise Conflict(f"site {report.site} already sent another report under the id {report.id}")
                return Received(report, "already stored")
            existing = self.store.get(report.id)
            if existing is not None and existing.id == report.id and existing.site != report.site:
                raise Conflict(f"a call with the id {report.id} is already stored here")
            for index, data in legs:  # the audio first: once the report can be read, so can its legs
                write_bytes(leg_audio_path(self.audio_root, report.id, index, report.legs[index].role), data)
            self.store.put(report)
            with self.store.connect() as db:
                # another process on the same database may have received the same call meanwhile: the primary key
                # keeps one row, and this copy (the same content, just put again) is the repeat
                row = (report.id, report.site, digest, time.time())
                added = db.execute("INSERT INTO site_calls (report_id, site, digest, received_at) "
                                   "VALUES (?, ?, ?, ?) ON CONFLICT (report_id) DO NOTHING", row).rowcount  # fmt: skip
        return Received(report, "stored" if added == 1 else "already stored")


def parse(report_json: bytes) -> CallReport:
    if len(report_json) > MAX_REPORT_BYTES:
        raise Invalid(f"the report is larger than {MAX_REPORT_BYTES} bytes")
    try:
        report = CallReport.model_validate_json(report_json)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'report'}: {e['msg']}" for e in exc.errors()[:5])
        raise Invalid(f"not a valid CallReport: {problems}") from None
    if not report.site or not SITE.match(report.site):
        raise Invalid("the report's site must name the sending site (letters, digits, '_', '.', '-'; 64 at most)")
    if not REPORT_ID.match(report.id) or not report.cache_key.startswith(report.id):
        raise Invalid("the report's id must be the first 16 hex digits of its cache_key, as callqa makes them")
    return report


def check_audio(report: CallReport, audio: list[tuple[str, bytes]]) -> list[tuple[int, bytes]]:
    """Each file is ``<index>-<role>.wav`` of one of the report's legs, once, and a 16-bit PCM WAV."""
    out: dict[int, bytes] = {}
    for name, data in audio:
        m = AUDIO.match(name)
        index = int(m.group(1)) if m else -1
        if not m or index >= len(report.legs) or report.legs[index].role != m.group(2) or index in out:
            raise Invalid(f"audio file {name[:80]!r} is not '<index>-<role>.wav' of one of the call's legs, once")
        try:
            with wave.open(io.BytesIO(data)) as w:
                ok = w.getsampwidth() == 2 and w.getnchannels() == 1 and 8000 <= w.getframerate() <= 192_000
        except (wave.Error, EOFError, ValueError) as exc:
            raise Invalid(f"audio file {name!r} is not a WAV file: {exc}") from None
        if not ok:
            raise Invalid(f"audio file {name!r} is not mono 16-bit PCM at 8-192 kHz")
        out[index] = data
    return sorted(out.items())
