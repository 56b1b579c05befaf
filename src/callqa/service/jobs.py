"""Analysis jobs: what to analyse (a spec), their persisted state, and the function a worker process runs.

The HTTP API creates jobs and ``service.runner`` runs them; both live in the service layer so that any front end
(the API, a worker, a scheduled sync) queues and runs work the same way.

Jobs live in the result store's database, so a restarted service finds the ones it had accepted: queued and
running jobs are resumed when their input still exists (uploads are spooled to disk until the job ends),
otherwise marked failed with the reason. Nothing is dropped silently.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from callqa.config import Settings
from callqa.errors import CallqaError, FetchError, InputError, LimitError, ModelError, StoreError
from callqa.private import private_dir
from callqa.public import public_message
from callqa.report import CallReport, Role
from callqa.store import Store

JobStatus = Literal["queued", "running", "done", "failed"]
JobKind = Literal["analyze", "ai-analyze"]
MAX_ATTEMPTS = 2  # a job interrupted by restarts this many times is marked failed, not retried forever

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id          TEXT PRIMARY KEY,
    key_id      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    updated_at  DOUBLE PRECISION NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    spec        TEXT NOT NULL,
    report_id   TEXT,
    error       TEXT,
    error_code  INTEGER,
    assessment  TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
"""


class Source(BaseModel):
    """Exactly one of: spooled upload files, a URL, an SFTP reference, a ViciDial recording id."""

    files: list[str] = []
    labels: list[str] = []
    hashes: list[str] | None = Field(None, description="SHA-256 of the files, taken while they were uploaded")
    url: str | None = None
    sftp: str | None = None
    vicidial: int | None = Field(None, description="recording_log.recording_id on the configured dialer")

    def describe(self) -> str:
        if self.vicidial is not None:
            return f"vicidial:{self.vicidial}"
        return self.url or (f"sftp:{self.sftp}" if self.sftp else " + ".join(self.labels) or "upload")


class JobSpec(BaseModel):
    kind: JobKind = "analyze"
    source: Source
    roles: list[Role] | None = None
    transcribe: bool = False
    spool: str | None = Field(None, description="directory holding uploaded files, removed when the job ends")


class Job(BaseModel):
    id: str
    kind: JobKind
    status: JobStatus
    created_at: float
    updated_at: float
    attempts: int = 0
    spec: JobSpec
    report_id: str | None = None
    error: str | None = None
    error_code: int | None = None
    assessment: dict[str, Any] | None = None


def error_code(exc: BaseException) -> int:
    """The HTTP status an error maps to (also used for failed jobs)."""
    if isinstance(exc, LimitError):
        return 413
    if isinstance(exc, FetchError):
        return 502
    if isinstance(exc, InputError):
        return 422
    if isinstance(exc, ModelError | StoreError):
        return 503
    return 500


class JobStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        with store.connect() as db:
            db.executescript(SCHEMA)
            if "worker" not in db.columns("jobs"):  # added with the job queue: which host:pid runs the job
                db.lock_schema()
                if "worker" not in db.columns("jobs"):
                    db.execute("ALTER TABLE jobs ADD COLUMN worker TEXT")

    def create(self, spec: JobSpec, key_id: str, job_id: str | None = None, files: list[Path] | None = None,
               publish: Callable[[str], None] | None = None) -> Job:  # fmt: skip
        """A queued job; ``files`` (uploads) are stored with it, in the same transaction, for workers on other
        hosts (the ``job_files`` table of ``service.queue``). ``publish(job_id)`` runs last, before the commit: a
        job whose message could not be sent is not created, and a message is never lost for a job that was."""
        now = time.time()
        job = Job(id=job_id or new_job_id(), kind=spec.kind, status="queued", created_at=now, updated_at=now,
                  spec=spec)  # fmt: skip
        with self.store.connect() as db:
            db.execute(
                "INSERT INTO jobs (id, key_id, kind, status, created_at, updated_at, spec) VALUES (?,?,?,?,?,?,?)",
                (job.id, key_id, job.kind, job.status, now, now, spec.model_dump_json()),
            )
            for i, path in enumerate(files or []):
                db.execute("INSERT INTO job_files (job_id, idx, name, data) VALUES (?, ?, ?, ?)",
                           (job.id, i, path.name, path.read_bytes()))  # fmt: skip
            if publish is not None:
                publish(job.id)
        return job

    def finish(self, job_id: str, status: Literal["done", "failed"], report_id: str | None = None,
               error: str | None = None, error_code: int | None = None,
               assessment: dict[str, Any] | None = None) -> bool:  # fmt: skip
        """End a job that has not ended (one statement: of two runs of a job, the first to end decides)."""
        with self.store.connect() as db:
            cur = db.execute(
                "UPDATE jobs SET status = ?, report_id = ?, error = ?, error_code = ?, assessment = ?, updated_at = ?"
                " WHERE id = ? AND status IN ('queued', 'running')",
                (status, report_id, error, error_code, json.dumps(assessment) if assessment is not None else None,
                 time.time(), job_id),
            )  # fmt: skip
            return cur.rowcount == 1

    def get(self, job_id: str) -> Job | None:
        with self.store.connect() as db:
            row = db.execute(
                "SELECT id, kind, status, created_at, updated_at, attempts, spec, report_id, error, error_code,"
                " assessment FROM jobs WHERE id = ?", (job_id,)).fetchone()  # fmt: skip
        if row is None:
            return None
        return Job(id=row[0], kind=row[1], status=row[2], created_at=row[3], updated_at=row[4], attempts=row[5],
                   spec=JobSpec.model_validate_json(row[6]), report_id=row[7], error=row[8], error_code=row[9],
                   assessment=json.loads(row[10]) if row[10] else None)  # fmt: skip

    def update(self, job_id: str, **fields: Any) -> None:
        allowed = {"status", "attempts", "report_id", "error", "error_code", "assessment", "spec", "worker"}
        if not set(fields) <= allowed:
            raise ValueError(f"unknown job fields {set(fields) - allowed}")
        if "assessment" in fields and fields["assessment"] is not None:
            fields["assessment"] = json.dumps(fields["assessment"])
        if isinstance(fields.get("spec"), JobSpec):
            fields["spec"] = fields["spec"].model_dump_json()
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.store.connect() as db:
            db.execute(f"UPDATE jobs SET {cols}, updated_at = ? WHERE id = ?", (*fields.values(), time.time(), job_id))

    def unfinished(self) -> list[Job]:
        with self.store.connect() as db:
            ids = [r[0] for r in db.execute(
                "SELECT id FROM jobs WHERE status IN ('queued', 'running') ORDER BY created_at")]  # fmt: skip
        return [j for j in (self.get(i) for i in ids) if j is not None]

    def delete_finished(self, before: float) -> int:
        """Forget jobs that ended before ``before`` (queued and running ones are never deleted)."""
        with self.store.connect() as db:
            cur = db.execute("DELETE FROM jobs WHERE status IN ('done', 'failed') AND updated_at < ?", (before,))
            return cur.rowcount

    def counts(self) -> dict[str, int]:
        with self.store.connect() as db:
            return dict(db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())


def new_job_id() -> str:
    return secrets.token_hex(8)


def spool_dir(settings: Settings, job_id: str) -> Path:
    return private_dir(settings.data_dir / "spool" / job_id)


def audio_dir(settings: Settings) -> Path:
    return settings.data_dir / "audio"


def prune(settings: Settings, jobs: JobStore, now: float | None = None) -> tuple[int, int]:
    """Retention: delete kept leg audio written more than ``api.keep_audio_days`` ago (one directory per call;
    the report stays, and a leg analysed from a local file can still be extracted again) and job records that
    ended more than ``api.keep_jobs_days`` ago. Returns (calls whose audio went, jobs deleted)."""
    now = time.time() if now is None else now
    calls = 0
    root = audio_dir(settings)
    if settings.api.keep_audio_days and root.is_dir():
        cutoff = now - settings.api.keep_audio_days * 86400
        for call in root.iterdir():
            try:
                written = max((f.stat().st_mtime for f in call.iterdir()), default=call.stat().st_mtime)
            except OSError:  # not a directory, or removed meanwhile
                continue
            if written < cutoff:
                shutil.rmtree(call, ignore_errors=True)
                calls += 1
    deleted = jobs.delete_finished(now - settings.api.keep_jobs_days * 86400) if settings.api.keep_jobs_days else 0
    return calls, deleted


def run_job(spec: JobSpec, settings: Settings) -> tuple[CallReport, bool]:
    """Fetch (when remote), analyse and store one call. Runs in a worker process; raises CallqaError."""
    from callqa.service.recordings import analyze_recording
    from callqa.sources.http import fetch_http
    from callqa.sources.sftp import fetch_sftp

    settings = with_transcription(settings, spec.transcribe)
    store = Store(settings.db)
    src = spec.source
    if src.vicidial is not None:
        from callqa.service.vicidial import analyze_recording_id

        return analyze_recording_id(src.vicidial, settings)
    with tempfile.TemporaryDirectory(prefix="callqa-fetch-") as tmp:
        if src.files:  # an upload, or a recording the service has fetched already
            paths, labels = [Path(f) for f in src.files], src.labels or [Path(f).name for f in src.files]
        elif src.url:
            paths, labels = [fetch_http(src.url, settings.fetch, Path(tmp))], [src.url]
        elif src.sftp:
            paths, labels = [fetch_sftp(src.sftp, settings.fetch, Path(tmp))], [f"sftp:{src.sftp}"]
        else:
            raise InputError("the job names no recording")
        hashes = src.hashes if src.files and src.hashes and len(src.hashes) == len(src.files) else None
        return analyze_recording(paths, settings, spec.roles, store, labels=labels, audio_dir=audio_dir(settings),
                             hashes=hashes)  # fmt: skip


def with_transcription(settings: Settings, transcribe: bool) -> Settings:
    """The settings with transcription switched on when a request asks for it (it is never switched off)."""
    if not transcribe or settings.analysis.transcribe:
        return settings
    return settings.model_copy(update={"analysis": settings.analysis.model_copy(update={"transcribe": True})})


def remove_spool(spec: JobSpec) -> None:
    if spec.spool:
        shutil.rmtree(spec.spool, ignore_errors=True)


def safe_run(spec_json: str, settings_json: str) -> dict[str, Any]:
    """Process-pool entry point: JSON in, JSON out, every error turned into a result (never a pickling issue)."""
    settings = Settings.model_validate_json(settings_json)
    spec = JobSpec.model_validate_json(spec_json)
    src = spec.source
    try:
        report, cached = run_job(spec, settings)
        return {"ok": True, "report": report.model_dump_json(), "cached": cached}
    except CallqaError as exc:  # without server paths: a spooled file is named by its upload label
        error = public_message(str(exc), src.files, src.labels, [settings.data_dir])
        return {"ok": False, "error": error, "code": error_code(exc)}
    except Exception as exc:  # noqa: BLE001 - a bug must fail the job with its message, not kill the worker
        incident = secrets.token_hex(4)  # the client sees this id; the service log has it with the traceback
        return {"ok": False, "error": f"internal error {incident} ({type(exc).__name__}); see the service log",
                "code": 500, "incident": incident, "trace": traceback.format_exc()}  # fmt: skip


def worker_init(nice: int) -> None:
    """Start of a worker process: a lower CPU priority, and death with the parent (Linux PR_SET_PDEATHSIG), so a
    service that is killed never leaves analysis processes behind."""
    import ctypes
    import signal

    os.nice(nice)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def warm_up(settings_json: str) -> bool:
    """Load the models once in a worker process, so the first job does not pay for it."""
    from callqa import model_loaders

    settings = Settings.model_validate_json(settings_json)
    model_loaders.silero_vad_session(settings.models_dir)
    if settings.analysis.dnsmos:
        model_loaders.dnsmos_sessions()
    if settings.analysis.transcribe:
        model_loaders.whisper(settings.analysis.whisper_model, settings.analysis.whisper_compute_type, settings.threads)
    return True
