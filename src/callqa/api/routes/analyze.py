"""POST /analyze, POST /ai-analyze, GET /jobs/{id}: a recording in, a CallReport out (now or as a job)."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile
from fastapi.responses import JSONResponse

from callqa.api.deps import ReadKey, State, WriteKey
from callqa.api.schemas import AiAnalysis, Assessment, JobOut, Problem
from callqa.errors import CallqaError, FetchError
from callqa.pii import mask_file_name
from callqa.private import open_private
from callqa.report import CallReport
from callqa.service.jobs import Job, JobSpec, Source, new_job_id, spool_dir, with_transcription
from callqa.service.recordings import cached_recording, parse_roles
from callqa.service.runner import QueueFull
from callqa.sources import safe_name
from callqa.sources.http import allowed
from callqa.sources.sftp import resolve

router = APIRouter(tags=["analysis"])

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem} for code in (401, 403, 404, 409, 410, 413, 422, 429, 502, 503)
}
Files = Annotated[list[UploadFile] | None, File(description="one recording (stereo or mixed) or two legs")]
Wait = Annotated[float, Query(ge=0, le=3600, description="seconds to wait for the result before answering 202")]
SourceForm = Annotated[str | None, Form(max_length=2000)]
Transcribe = Annotated[bool, Form(description="add the transcript, conversation metrics and phrase rules")]
VicidialId = Annotated[int | None, Form(ge=1, le=2**32, description="recording_log.recording_id on the dialer")]


def _job_out(state: State, job: Job) -> JobOut:
    report = state.store.get(job.report_id) if job.report_id else None
    return JobOut(id=job.id, kind=job.kind, status=job.status, created_at=job.created_at, updated_at=job.updated_at,
                  attempts=job.attempts, source=job.spec.source.describe(), error=job.error,
                  error_code=job.error_code, report=report,
                  assessment=Assessment.model_validate(job.assessment) if job.assessment else None)  # fmt: skip


async def _spool_uploads(folder: Path, files: list[UploadFile]) -> tuple[list[str], list[str], list[str]]:
    """Uploads written to the job's spool folder: (paths, labels, SHA-256 of each, taken as it streams in)."""
    paths, labels, hashes = [], [], []
    for i, upload in enumerate(files):
        name = safe_name(mask_file_name(upload.filename or ""), f"leg{i}")  # no email or number in a label
        dest = folder / f"{i}-{name}"
        total, h = 0, hashlib.sha256()
        with open_private(dest) as out:
            while chunk := await upload.read(1 << 20):
                total += len(chunk)
                h.update(chunk)
                out.write(chunk)
        if total == 0:
            raise HTTPException(422, f"uploaded file {name!r} is empty")
        paths.append(str(dest))
        labels.append(f"upload:{name}")
        hashes.append(h.hexdigest())
    return paths, labels, hashes


def _check_remote(state: State, url: str | None, sftp: str | None) -> None:
    """Refuse a source that can never be fetched now, instead of a job that fails later."""
    if url is not None:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError):
            raise HTTPException(422, f"not a valid URL: {url!r}") from None
        if not allowed(parsed, state.settings.fetch.http_hosts):
            raise HTTPException(403, f"{parsed.host or url!r} is not an allowed recording host")
    if sftp is not None:
        try:
            resolve(sftp, state.settings.fetch.sftp_servers)
        except FetchError as exc:  # not a configured server, or outside its recording directory
            raise HTTPException(403, str(exc)) from None
        except CallqaError as exc:  # malformed reference
            raise HTTPException(422, str(exc)) from None


async def _assess(state: State, report: CallReport) -> Assessment:
    answer = await asyncio.to_thread(state.assistant.assess, report)
    return Assessment.model_validate(answer.__dict__)


async def _done(state: State, kind: str, report: CallReport, assessment: Assessment | None = None) -> Any:
    if kind == "analyze":
        return report
    return AiAnalysis(report=report, assessment=assessment or await _assess(state, report))


async def _start(state: State, key_id: str, kind: Literal["analyze", "ai-analyze"], files: list[UploadFile] | None,
                 url: str | None, sftp: str | None, call_id: str | None, roles: str | None,
                 wait: float, transcribe: bool = False, vicidial: int | None = None) -> Any:  # fmt: skip
    files = files or []
    given = [bool(files), url is not None, sftp is not None, call_id is not None, vicidial is not None]
    if sum(given) != 1:
        raise HTTPException(422, "give exactly one of: files (upload), url, sftp, call_id, vicidial_recording_id")
    if vicidial is not None and state.settings.vicidial.dsn is None:
        raise HTTPException(409, "no ViciDial database is configured (CALLQA_VICIDIAL__DSN)")
    if len(files) > 2:
        raise HTTPException(422, f"expected one recording (stereo or mixed) or two legs, got {len(files)} files")
    try:
        role_list = parse_roles(roles, None)  # two roles: two files or a stereo file
    except CallqaError as exc:
        raise HTTPException(422, str(exc)) from None
    if call_id is not None:
        report = state.store.get(call_id) if len(call_id) >= 4 else None
        if report is None:
            raise HTTPException(404, f"no stored call with id {call_id!r}")
        state.metrics.observe_report(report, cached=True)
        return await _done(state, kind, report)
    _check_remote(state, url, sftp)
    job_id = new_job_id()
    source = Source(url=url, sftp=sftp, vicidial=vicidial)
    spool = None
    if files:
        spool = str(spool_dir(state.settings, job_id))
        try:
            paths, labels, hashes = await _spool_uploads(Path(spool), files)
        except BaseException:
            shutil.rmtree(spool, ignore_errors=True)  # an empty or interrupted upload leaves nothing behind
            raise
        source = Source(files=paths, labels=labels, hashes=hashes)
        try:
            settings = with_transcription(state.settings, transcribe)
            _, hit = cached_recording([Path(p) for p in paths], settings, role_list, state.store, labels, hashes)
        except BaseException:
            shutil.rmtree(spool, ignore_errors=True)
            raise
        if hit is not None:
            shutil.rmtree(spool, ignore_errors=True)
            state.metrics.observe_report(hit, cached=True)
            return await _done(state, kind, hit)
    spec = JobSpec(kind=kind, source=source, roles=role_list, spool=spool, transcribe=transcribe)
    try:
        job = state.runner.submit(spec, key_id, job_id)
    except QueueFull as exc:
        if spool:
            shutil.rmtree(spool, ignore_errors=True)
        raise HTTPException(429, str(exc), {"Retry-After": str(exc.retry_after_s)}) from None
    if wait > 0:
        waited = await state.runner.wait(job.id, min(wait, state.settings.api.max_wait_s))
        job = waited or job
    if job.status == "done":
        report = state.runner.take_report(job)
        if report is not None:
            assessment = Assessment.model_validate(job.assessment) if job.assessment else None
            return await _done(state, kind, report, assessment)
    if job.status == "failed":
        raise HTTPException(job.error_code or 500, job.error or "analysis failed")
    return JSONResponse(_job_out(state, job).model_dump(mode="json"), status_code=202,
                        headers={"Location": f"/jobs/{job.id}"})  # fmt: skip


@router.post("/analyze", response_model=CallReport, responses={202: {"model": JobOut}, **ERRORS})
async def analyze(state: State, key: WriteKey, files: Files = None, url: SourceForm = None, sftp: SourceForm = None,
                  call_id: SourceForm = None, roles: SourceForm = None, transcribe: Transcribe = False,
                  wait: Wait = 0.0, vicidial_recording_id: VicidialId = None) -> Any:  # fmt: skip
    """Analyse one call: an upload (one stereo/mixed file or two legs), an HTTP(S) URL on an allowed recording
    host, an SFTP path on a configured server (``name:/path``), a stored call id, or a recording of the configured
    ViciDial dialer (its report carries the call's context). Cache hits answer 200 at once; other work answers 202
    with a job (``GET /jobs/{id}``) unless it finishes within ``wait`` seconds."""
    return await _start(state, key.id, "analyze", files, url, sftp, call_id, roles, wait, transcribe,
                        vicidial_recording_id)  # fmt: skip


@router.post("/ai-analyze", response_model=AiAnalysis, responses={202: {"model": JobOut}, **ERRORS})
async def ai_analyze(state: State, key: WriteKey, files: Files = None, url: SourceForm = None,
                     sftp: SourceForm = None, call_id: SourceForm = None, roles: SourceForm = None,
                     transcribe: Transcribe = False, wait: Wait = 0.0,
                     vicidial_recording_id: VicidialId = None) -> Any:  # fmt: skip
    """As /analyze, plus a short assessment by the small language model (what is wrong, which side, likely
    cause, what to check), or the offline summary when no model is configured or it fails."""
    return await _start(state, key.id, "ai-analyze", files, url, sftp, call_id, roles, wait, transcribe,
                        vicidial_recording_id)  # fmt: skip


@router.get("/jobs/{job_id}", response_model=JobOut, responses=ERRORS)
async def get_job(state: State, key: ReadKey, job_id: str,
                  wait: Wait = 0.0) -> JobOut:  # fmt: skip
    """A job's status; its report (and assessment) once done. ``wait`` blocks until it ends or time runs out."""
    job = await state.runner.wait(job_id, min(wait, state.settings.api.max_wait_s)) if wait else state.jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return _job_out(state, job)
