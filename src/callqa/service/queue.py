"""Analysis jobs on a message queue: the API enqueues, ``callqa worker`` processes on any number of hosts analyse
and store. Used when ``CALLQA_BROKER`` is set (with a PostgreSQL store); without it the in-process pool of
``service.runner`` runs the jobs.

The queue is Dramatiq on RabbitMQ (why, and what fails how: docs/scaling.md). A message carries only the job id;
the job row (``service.jobs``) is the truth:

- delivery is at least once: a message is acknowledged after its job has ended, so a worker that dies (killed,
  out of memory, its host gone) has its message handed to another worker as soon as RabbitMQ sees its connection
  close; there is no lease to tune against the length of a job.
- the effect is exactly once: a worker skips a job that has ended, the report is an upsert under its id (a
  rerun of the same audio writes the same row), and a job is marked done only from queued/running, in one
  statement. ``attempts`` counts the starts; a job started ``MAX_STARTS`` times is failed, not retried forever.
- a store that cannot be reached (PostgreSQL restarting, a failover) is a transient error: the message is retried
  with backoff (Dramatiq's Retries), the job goes on when the server is back.
- uploads travel in the database (``job_files``), so a worker needs no shared file system: it writes them to a
  temporary folder, analyses, and the rows go when the job ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import tempfile
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from callqa.ai.assistant import Assistant
from callqa.ai.providers import ConfigError
from callqa.config import Settings
from callqa.errors import CallqaError, StoreError
from callqa.private import private_dir
from callqa.report import CallReport
from callqa.service.jobs import Job, JobSpec, JobStore, remove_spool, safe_run
from callqa.service.metrics import Metrics
from callqa.service.runner import QueueFull
from callqa.store import Store

log = logging.getLogger("callqa.service.queue")

PRUNE_EVERY_S = 3600.0
MAX_STARTS = 5  # a job whose worker died this many times is failed (a recording that kills its worker)
TIME_LIMIT_MS = 30 * 60 * 1000  # one job's longest run
FILES_SCHEMA = """
CREATE TABLE IF NOT EXISTS job_files (
    job_id  TEXT NOT NULL,
    idx     INTEGER NOT NULL,
    name    TEXT NOT NULL,
    data    BYTEA NOT NULL,
    PRIMARY KEY (job_id, idx)
);
"""


class Transient(Exception):
    """The store could not be reached: the message is retried later."""


class QueueDown(StoreError):
    """The broker could not be reached (HTTP 503)."""


def check(settings: Settings) -> None:
    """A queue needs a store every host reaches: PostgreSQL."""
    if settings.broker is not None and not str(settings.db).startswith(("postgresql://", "postgres://")):
        raise ConfigError("CALLQA_BROKER needs a PostgreSQL store (CALLQA_DB=postgresql://...): workers on other "
                          "hosts cannot share a SQLite file")  # fmt: skip


@lru_cache
def _actor(url: str, queue: str) -> Any:
    """This process's broker and the analysis actor on ``queue`` (declared the same way by the API and workers)."""
    import dramatiq
    from dramatiq.brokers.rabbitmq import RabbitmqBroker
    from dramatiq.middleware import Retries

    broker = RabbitmqBroker(url=url, confirm_delivery=True)
    for m in list(broker.middleware):
        if isinstance(m, Retries):  # transient store errors: back off 1 s .. 15 s, for a few minutes at most
            m.max_retries, m.min_backoff, m.max_backoff = 30, 1000, 15000
    decorate = dramatiq.actor(broker=broker, actor_name="callqa_analyze", queue_name=queue, time_limit=TIME_LIMIT_MS,
                              retry_when=_retry_when)  # fmt: skip
    return decorate(_process)


def _retry_when(retries: int, exc: Exception) -> bool:
    return isinstance(exc, Transient | StoreError) and retries < 30


def actor_for(settings: Settings) -> Any:
    assert settings.broker is not None
    return _actor(settings.broker.get_secret_value(), settings.queue_name)


# --- the worker side ----------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}  # the worker process's settings (set by run_worker)


def _process(job_id: str) -> None:
    """One delivery of a job (runs in a ``callqa worker`` process)."""
    store: Store = _WORKER["store"]
    jobs: JobStore = _WORKER["jobs"]
    job = jobs.get(job_id)
    for _ in range(40):  # the message is sent just before the job's row is committed: give the commit a moment
        if job is not None:
            break
        time.sleep(0.05)
        job = jobs.get(job_id)
    if job is None:  # published just before its row was committed, or its request failed after publishing
        raise Transient(f"job {job_id} is not in the store (yet)")  # retried a while, then dead-lettered
    if job.status in ("done", "failed"):  # a second delivery of a job that ended: its effect is already stored,
        drop_files(store, job_id)  # but its uploads may not be gone (the store failed between the two writes)
        return
    if job.attempts >= MAX_STARTS:
        jobs.finish(job_id, "failed", error=f"the analysis worker died {job.attempts} times on this job",
                    error_code=500)  # fmt: skip
        drop_files(store, job_id)
        return
    jobs.update(job_id, status="running", attempts=job.attempts + 1, worker=f"{socket.gethostname()}:{os.getpid()}")
    try:
        _run(job, jobs, store)
    except (Transient, StoreError):
        raise  # retried with backoff
    except BaseException as exc:  # the time limit, or a bug outside the analysis: the job fails, it is not lost
        from dramatiq.middleware import TimeLimitExceeded

        if not isinstance(exc, TimeLimitExceeded | Exception):
            raise  # the worker is shutting down: the message is redelivered
        error = ("the analysis took longer than the time limit" if isinstance(exc, TimeLimitExceeded)
                 else f"internal error ({type(exc).__name__}); see the worker log")  # fmt: skip
        log.exception("job %s: %s", job_id, error)
        jobs.finish(job_id, "failed", error=error, error_code=500)
        drop_files(store, job_id)


def _run(job: Job, jobs: JobStore, store: Store) -> None:
    with tempfile.TemporaryDirectory(prefix="callqa-job-") as tmp:
        spec = fetch_files(store, job, Path(tmp))
        result = safe_run(spec.model_dump_json(), _WORKER["settings_json"])
    if not result["ok"] and result["code"] == 503:  # the store (or a model) was unavailable: try again later
        jobs.update(job.id, status="queued", attempts=job.attempts)  # not a start that counts against the job
        raise Transient(result["error"])
    if not result["ok"]:
        if "trace" in result:
            log.error("job %s: internal error %s\n%s", job.id, result["incident"], result["trace"])
        jobs.finish(job.id, "failed", error=result["error"], error_code=result["code"])
    else:
        report = CallReport.model_validate_json(result["report"])
        assessment = None
        if job.kind == "ai-analyze":
            assessment = _WORKER["assistant"].assess(report).__dict__
        jobs.finish(job.id, "done", report_id=report.id, assessment=assessment)
    drop_files(store, job.id)


def fetch_files(store: Store, job: Job, folder: Path) -> JobSpec:
    """The job's spec with its uploaded files written to ``folder`` (when they travelled in the database)."""
    with store.connect() as db:
        rows = db.execute("SELECT idx, name, data FROM job_files WHERE job_id = ? ORDER BY idx", (job.id,)).fetchall()
    if not rows:
        return job.spec  # a remote source (fetched by the worker) or a shared spool
    paths = []
    for idx, name, data in rows:
        path = folder / f"{idx}-{Path(name).name}"
        path.write_bytes(bytes(data))
        paths.append(str(path))
    source = job.spec.source.model_copy(update={"files": paths})
    return job.spec.model_copy(update={"source": source, "spool": None})


def drop_files(store: Store, job_id: str) -> None:
    with store.connect() as db:
        db.execute("DELETE FROM job_files WHERE job_id = ?", (job_id,))


def run_worker(settings: Settings, ready: threading.Event | None = None) -> None:
    """One worker process: load the models, consume the analysis queue one job at a time until SIGTERM/SIGINT."""
    import dramatiq

    from callqa.ai.providers import make_provider
    from callqa.service.jobs import prune, warm_up

    check(settings)
    private_dir(settings.data_dir)  # kept leg audio
    settings_json = settings.model_dump_json(exclude={"llm"}, context={"reveal_secrets": True})
    store = Store(settings.db)
    jobs = JobStore(store)
    with store.connect() as db:
        db.executescript(FILES_SCHEMA)
    warm_up(settings_json)
    _WORKER.update(settings=settings, settings_json=settings_json, store=store, jobs=jobs,
                   assistant=Assistant(settings.llm, store, make_provider(settings.llm)))  # fmt: skip
    actor = actor_for(settings)
    worker = dramatiq.Worker(actor.broker, worker_threads=1)
    worker.queue_prefetch = 1  # one message at a time: a dead worker holds back no other job
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker.start()
    log.info("worker %d consuming %s", os.getpid(), settings.queue_name)
    if ready is not None:
        ready.set()
    pruned = 0.0
    try:
        while not stop.wait(1.0):
            if time.monotonic() - pruned > PRUNE_EVERY_S:  # this host's kept audio, as the API does for its own
                pruned = time.monotonic()
                with contextlib.suppress(CallqaError, OSError):
                    prune(settings, jobs)
    finally:
        worker.stop(timeout=60_000)  # the job in progress ends first (its message is acknowledged)
        actor.broker.close()


# --- the API side ---------------------------------------------------------------------------------------------


class QueueRunner:
    """What the API uses to run jobs (the same interface as ``service.runner.Runner``), on the queue."""

    POLL_S = 0.2

    def __init__(self, settings: Settings, jobs: JobStore, metrics: Metrics, assistant: Assistant) -> None:
        check(settings)
        self.settings, self.jobs, self.metrics, self.assistant = settings, jobs, metrics, assistant
        self.avg_job_s = 5.0
        with jobs.store.connect() as db:
            db.executescript(FILES_SCHEMA)

    async def start(self) -> None:
        await asyncio.to_thread(actor_for, self.settings)  # connects lazily; declares the queue on first send

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            actor_for(self.settings).broker.close()

    def ready(self) -> bool:
        return True  # the models load in the workers

    def depth(self) -> int:
        counts = self.jobs.counts()
        return counts.get("queued", 0) + counts.get("running", 0)

    def retry_after(self) -> int:
        return max(1, int(self.depth() * self.avg_job_s / max(1, self.settings.api.workers)))

    def submit(self, spec: JobSpec, key_id: str, job_id: str | None = None) -> Job:
        if self.depth() >= self.settings.api.queue_max:
            self.metrics.jobs.labels("rejected").inc()
            raise QueueFull(self.retry_after())

        def publish(new_id: str) -> None:
            try:
                actor_for(self.settings).send(new_id)
            except Exception as exc:  # noqa: BLE001 - any broker failure: the job is not created, the caller is told
                log.warning("job %s: cannot enqueue: %s", new_id, exc)
                raise QueueDown("the job queue cannot be reached; try again") from exc

        try:  # the job row, its uploads and its message: all or nothing (the message goes last, before the commit)
            job = self.jobs.create(spec, key_id, job_id, files=[Path(f) for f in spec.source.files], publish=publish)
        finally:
            remove_spool(spec)  # the uploads are in the database now (or the request failed)
        return job

    def take_report(self, job: Job) -> CallReport | None:
        return self.jobs.store.get(job.report_id) if job.report_id else None

    async def wait(self, job_id: str, timeout_s: float) -> Job | None:
        deadline = time.monotonic() + timeout_s
        while True:
            job = await asyncio.to_thread(self.jobs.get, job_id)
            if job is None or job.status in ("done", "failed") or time.monotonic() >= deadline:
                return job
            await asyncio.sleep(self.POLL_S)


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)


def _child(settings_json: str, nice: int) -> None:
    from callqa.config import get_settings
    from callqa.service.jobs import worker_init

    worker_init(nice)  # dies with the supervisor
    _logging()
    settings = Settings.model_validate_json(settings_json).model_copy(update={"llm": get_settings().llm})
    run_worker(settings)


def supervise(settings: Settings, processes: int) -> None:
    """``callqa worker``: ``processes`` worker processes on this host (one job at a time each), restarted when
    one dies; SIGTERM/SIGINT stop them after their job in progress. One process runs in this one."""
    check(settings)
    _logging()
    if processes <= 1:
        run_worker(settings)
        return
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    settings_json = settings.model_dump_json(exclude={"llm"}, context={"reveal_secrets": True})
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def start() -> Any:
        p = ctx.Process(target=_child, args=(settings_json, settings.api.worker_nice), daemon=False)
        p.start()
        return p

    children = [start() for _ in range(processes)]
    while not stop.wait(1.0):
        for i, p in enumerate(children):
            if not p.is_alive():
                log.warning("worker %s ended (exit code %s): starting another", p.pid, p.exitcode)
                children[i] = start()
    for p in children:
        p.terminate()  # SIGTERM: each finishes its job in progress
    for p in children:
        p.join(90)
