"""ViciDial sync: read the dialer's new recordings, fetch each (the ORIG legs, else the mixed file), analyse it
through ``analyze_recording`` and store its report with the call's context (agent, campaign, carrier...).

Bookkeeping lives in the result store (``vicidial_synced``: one row per dialer recording with what its files
were when it was handled), so a sync is resumable and idempotent: a row whose files are unchanged is skipped, a row
whose file changed (compressed to MP3, re-mixed) is analysed again, and a missing or broken file is recorded as
failed with its reason (tried again when the files change). Each row's report has an id of its own, made from the
dialer and the recording id, so two calls with identical audio stay two calls; the analysis cache is shared.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx

from callqa.config import FetchSettings, Settings
from callqa.digest import digest
from callqa.errors import CallqaError, InputError
from callqa.report import CallReport
from callqa.service import cache
from callqa.service.jobs import audio_dir
from callqa.service.recordings import analyze_recording, relabel
from callqa.sources import vicidial as vd
from callqa.store import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS vicidial_synced (
    dialer        TEXT NOT NULL,
    recording_id  BIGINT NOT NULL,
    status        TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    report_id     TEXT,
    error         TEXT,
    updated_at    DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (dialer, recording_id)
);
"""
MISSING = "missing"


@dataclass(frozen=True)
class Planned:
    """A row to analyse: the call and the files chosen for it, with their fingerprint when they were probed."""

    call: vd.VicidialCall
    candidate: vd.Candidate
    fingerprint: str


@dataclass(frozen=True)
class RowOutcome:
    recording_id: int
    ok: bool
    report_id: str | None = None
    error: str | None = None
    cached: bool = False


@dataclass
class SyncResult:
    rows: int = 0
    analysed: int = 0
    unchanged: int = 0
    failures: list[tuple[int, str]] = field(default_factory=list)  # (recording_id, reason)


@dataclass(frozen=True)
class SyncOptions:
    since: datetime | None = None
    until: datetime | None = None
    campaigns: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    use_cache: bool = True


def dsn_of(settings: Settings) -> vd.Dsn:
    if settings.vicidial.dsn is None:
        raise InputError("no ViciDial database: give --dsn or set CALLQA_VICIDIAL__DSN")
    return vd.parse_dsn(settings.vicidial.dsn.get_secret_value())


def report_id(dialer: str, recording_id: int) -> str:
    """A ViciDial call's report id: the same row of the same dialer always has the same id."""
    return digest({"vicidial": dialer, "recording_id": recording_id})[:16]


def fetch_settings(settings: Settings) -> FetchSettings:
    """The fetch allowlist plus the recordings host when one is configured outright (not per server)."""
    url = settings.vicidial.recordings_url
    hosts = list(settings.fetch.http_hosts)
    if settings.vicidial.recordings_dir is None and "{" not in url:
        parsed = httpx.URL(url)
        if parsed.host:
            host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
            hosts.append(f"{host}:{parsed.port}" if parsed.port else host)
    return settings.fetch.model_copy(update={"http_hosts": hosts})


class Bookkeeping:
    """What each dialer row was when it was last handled (in the result store's database)."""

    def __init__(self, store: Store, dialer: str) -> None:
        self.store, self.dialer = store, dialer
        with store.connect() as db:
            db.executescript(SCHEMA)

    def fingerprints(self) -> dict[int, tuple[str, str]]:
        """recording_id -> (status, fingerprint)."""
        with self.store.connect() as db:
            rows = db.execute("SELECT recording_id, status, fingerprint FROM vicidial_synced WHERE dialer = ?",
                              (self.dialer,)).fetchall()  # fmt: skip
        return {r[0]: (r[1], r[2]) for r in rows}

    def mark(self, recording_id: int, status: str, fingerprint: str, report_id: str | None = None,
             error: str | None = None) -> None:  # fmt: skip
        with self.store.connect() as db:
            db.execute(
                "INSERT INTO vicidial_synced (dialer, recording_id, status, fingerprint, report_id, error, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dialer, recording_id) DO UPDATE SET"
                " status = excluded.status, fingerprint = excluded.fingerprint, report_id = excluded.report_id,"
                " error = excluded.error, updated_at = excluded.updated_at",
                (self.dialer, recording_id, status, fingerprint, report_id, error, time.time()),
            )

    def get(self, recording_id: int) -> tuple[str, str, str | None, str | None] | None:
        """(status, fingerprint, report_id, error) of a row, if it was handled."""
        with self.store.connect() as db:
            row = db.execute("SELECT status, fingerprint, report_id, error FROM vicidial_synced WHERE dialer = ? AND "
                             "recording_id = ?", (self.dialer, recording_id)).fetchone()  # fmt: skip
        return None if row is None else (row[0], row[1], row[2], row[3])


def choose_files(call: vd.VicidialCall, settings: Settings) -> tuple[vd.Candidate | None, str, list[str]]:
    """Probe a row's files: (the best candidate that exists, its fingerprint, the references tried). The legs
    count only when both exist. No candidate gives the fingerprint ``missing`` plus what was tried."""
    fetch = fetch_settings(settings)
    tried: list[str] = []
    for cand in vd.candidates(call, vd.recordings_base(settings.vicidial, call.server_ip)):
        if cand.files == "legs" and not settings.vicidial.use_legs:
            continue
        prints = []
        for ref in cand.refs:
            tried.append(ref)
            p = vd.probe(ref, settings.vicidial, fetch)
            if p is None:
                break
            prints.append(p)
        else:
            return cand, f"{cand.files}: " + " | ".join(prints), tried
    return None, MISSING, tried


def _missing_reason(call: vd.VicidialCall, tried: list[str], keep: int) -> str:
    names = ", ".join(vd.masked(t, call.phone_number, keep) for t in tried)
    return f"no recording file found (tried {names})"


def analyse_row(item: Planned, settings: Settings, use_cache: bool = True,
                keep_audio: bool = False) -> tuple[CallReport, bool]:  # fmt: skip
    """Fetch, analyse and store one planned row; returns (report, analysis served from the cache). Raises
    CallqaError for a file that cannot be fetched or decoded (the caller records it). With ``keep_audio`` (the
    service, whose retention prunes it) each leg is kept as a WAV for listening, as for uploads."""
    vs = settings.vicidial
    store = Store(settings.db)
    call, cand = item.call, item.candidate
    rid = report_id(dsn_of(settings).dialer, call.recording_id)
    roles = vd.leg_roles(vs) if cand.files == "legs" else None
    labels = [vd.masked(ref, call.phone_number, vs.keep_digits) for ref in cand.refs]
    fetch = fetch_settings(settings)
    with tempfile.TemporaryDirectory(prefix="callqa-vicidial-") as tmp:
        paths = []
        for i, ref in enumerate(cand.refs):
            dest = Path(tmp) / str(i)
            dest.mkdir()
            paths.append(vd.fetch(ref, vs, fetch, dest))
        hit = None
        if use_cache:
            key = cache.recording_key(paths, settings, roles)
            hit = store.cached(key, settings.cache_ttl_s, any_call=True)
        kept = audio_dir(settings)
        if hit is not None:
            report, cached = relabel(hit, labels), True
            if keep_audio and (kept / hit.id).is_dir() and hit.id != rid:
                shutil.copytree(kept / hit.id, kept / rid, dirs_exist_ok=True)
        else:
            legs_dir = Path(tmp) / "legs"
            report, cached = analyze_recording(paths, settings, roles, None, use_cache=False, labels=labels,
                                               audio_dir=legs_dir if keep_audio else None)  # fmt: skip
            if (legs_dir / report.id).is_dir():
                shutil.rmtree(kept / rid, ignore_errors=True)
                kept.mkdir(parents=True, exist_ok=True)
                shutil.move(legs_dir / report.id, kept / rid)
    report = report.model_copy(update={"id": rid, "context": call.context(vs.keep_digits, cand.files)})
    store.put(report)
    return report, cached


def process_row(item: Planned, settings: Settings, use_cache: bool = True) -> RowOutcome:
    """One row end to end, bookkeeping included; every error becomes a failed outcome (never an exception)."""
    book = Bookkeeping(Store(settings.db), dsn_of(settings).dialer)
    rec = item.call.recording_id
    try:
        report, cached = analyse_row(item, settings, use_cache)
    except CallqaError as exc:
        book.mark(rec, "failed", item.fingerprint, error=str(exc))
        return RowOutcome(rec, False, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug on one row must not stop the sync
        reason = f"internal error: {type(exc).__name__}: {exc}"
        book.mark(rec, "failed", item.fingerprint, error=reason)
        return RowOutcome(rec, False, error=reason)
    book.mark(rec, "done", item.fingerprint, report_id=report.id)
    return RowOutcome(rec, True, report_id=report.id, cached=cached)


def read_rows(settings: Settings, options: SyncOptions, recording_ids: tuple[int, ...] = ()) -> list[vd.VicidialCall]:
    """The dialer's finished recordings: those ``recording_ids`` (whatever the configured filters say), else the
    rows the options and the configured campaigns, agents and look-back select."""
    vs = settings.vicidial
    if recording_ids:
        flt = vd.RowFilter(recording_ids=recording_ids)
    else:
        flt = vd.RowFilter(since=options.since, until=options.until, lookback_s=vs.lookback_days * 86400,
                           campaigns=options.campaigns or tuple(vs.campaigns),
                           agents=options.agents or tuple(vs.agents))  # fmt: skip
    conn = vd.connect(dsn_of(settings), vs.connect_timeout_s)
    try:
        return vd.read_calls(conn, flt)
    finally:
        conn.close()


def plan(settings: Settings, calls: list[vd.VicidialCall], book: Bookkeeping,
         force: bool = False) -> tuple[list[Planned], SyncResult]:  # fmt: skip
    """The rows to analyse now: those never handled or whose files changed since. Rows whose files are missing
    are recorded as failed here (once per change of what is there)."""
    known = {} if force else book.fingerprints()
    result = SyncResult(rows=len(calls))
    todo: list[Planned] = []
    for call in calls:
        try:
            cand, fingerprint, tried = choose_files(call, settings)
        except CallqaError as exc:  # the files' server cannot say now: try again next time
            result.failures.append((call.recording_id, str(exc)))
            book.mark(call.recording_id, "failed", f"error: {exc}", error=str(exc))
            continue
        before = known.get(call.recording_id)
        if before is not None and before[1] == fingerprint and before[0] in ("done", "failed", "queued"):
            result.unchanged += 1
            continue
        if cand is None:
            reason = _missing_reason(call, tried, settings.vicidial.keep_digits)
            book.mark(call.recording_id, "failed", fingerprint, error=reason)
            result.failures.append((call.recording_id, reason))
            continue
        todo.append(Planned(call, cand, fingerprint))
    return todo, result


def run_sync(settings: Settings, options: SyncOptions, jobs: int = 1,
             on_progress: Callable[[int, int], None] | None = None) -> SyncResult:  # fmt: skip
    """Read the dialer's rows, analyse those that are new or changed with ``jobs`` worker processes (in this
    process when 1), and store each report with its context. ``on_progress(finished, total)``."""
    store = Store(settings.db)
    book = Bookkeeping(store, dsn_of(settings).dialer)
    calls = read_rows(settings, options)
    todo, result = plan(settings, calls, book)
    done = 0
    if on_progress:
        on_progress(done, len(todo))

    def record(outcome: RowOutcome) -> None:
        nonlocal done
        done += 1
        if outcome.ok:
            result.analysed += 1
        else:
            result.failures.append((outcome.recording_id, outcome.error or "failed"))
        if on_progress:
            on_progress(done, len(todo))

    if jobs <= 1 or len(todo) <= 1:
        for item in todo:
            record(process_row(item, settings, options.use_cache))
        return result
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(process_row, item, settings, options.use_cache) for item in todo]
        for fut in as_completed(futures):
            record(fut.result())
    return result


def analyze_recording_id(recording_id: int, settings: Settings) -> tuple[CallReport, bool]:
    """One dialer row by its recording id, analysed again whatever was done before (``POST /analyze`` with
    ``vicidial_recording_id``, and the scheduled sync's jobs). Raises CallqaError; the bookkeeping is updated."""
    calls = read_rows(settings, SyncOptions(), (recording_id,))
    if not calls:
        raise InputError(f"no finished ViciDial recording with id {recording_id}")
    call = calls[0]
    book = Bookkeeping(Store(settings.db), dsn_of(settings).dialer)
    cand, fingerprint, tried = choose_files(call, settings)
    if cand is None:
        reason = _missing_reason(call, tried, settings.vicidial.keep_digits)
        book.mark(recording_id, "failed", fingerprint, error=reason)
        raise InputError(reason)
    try:
        report, cached = analyse_row(Planned(call, cand, fingerprint), settings, keep_audio=True)
    except CallqaError as exc:
        book.mark(recording_id, "failed", fingerprint, error=str(exc))
        raise
    book.mark(recording_id, "done", fingerprint, report_id=report.id)
    return report, cached


def schedule_round(settings: Settings, submit: Callable[[int], bool]) -> SyncResult:
    """One scheduled sync in the service: each new or changed row becomes a job (``submit(recording_id)``
    returns False when the queue is full; the rest wait for the next round) and is marked queued."""
    store = Store(settings.db)
    book = Bookkeeping(store, dsn_of(settings).dialer)
    todo, result = plan(settings, read_rows(settings, SyncOptions()), book)
    for item in todo:
        if not submit(item.call.recording_id):
            break
        book.mark(item.call.recording_id, "queued", item.fingerprint)
        result.analysed += 1
    return result
