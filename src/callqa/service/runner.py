"""The job runner: a bounded queue in front of a pool of worker processes.

Analyses are CPU-bound, so they run in separate processes (spawned, each loading the models once, at a lower
CPU priority so that answering requests comes first); the event loop only moves JSON. The queue bound counts
queued and running jobs; a full queue refuses new work with a Retry-After estimate instead of accepting work it
cannot do. Job state is persisted (see ``callqa.service.jobs``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from callqa.ai.assistant import Assistant
from callqa.config import Settings
from callqa.report import CallReport
from callqa.service.drain import DrainRate
from callqa.service.jobs import MAX_ATTEMPTS, Job, JobSpec, JobStore, remove_spool, safe_run, warm_up, worker_init
from callqa.service.metrics import Metrics
from callqa.service.prefetch import Prefetcher

FINISHED_KEPT = 64

log = logging.getLogger("callqa.service.jobs")


class QueueFull(Exception):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"the analysis queue is full; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class Runner:
    def __init__(self, settings: Settings, jobs: JobStore, metrics: Metrics, assistant: Assistant) -> None:
        self.settings, self.jobs, self.metrics, self.assistant = settings, jobs, metrics, assistant
        # the workers get the dialer's DSN (a secret) too; never the language model's keys
        self.settings_json = settings.model_dump_json(exclude={"llm"}, context={"reveal_secrets": True})
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.running = 0
        self.events: dict[str, asyncio.Event] = {}
        self.finished: dict[str, CallReport] = {}  # reports of jobs just done, for a request waiting on them
        self.avg_job_s = 5.0
        self.drain = DrainRate()  # Retry-After comes from how fast jobs really finish
        self.pool: ProcessPoolExecutor | None = None
        self.warm: list[Future[Any]] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.prefetch = Prefetcher(settings, jobs, self._enqueue, self._fail)  # fetches outside the workers

    # --- lifecycle -------------------------------------------------------------------------------------

    def _new_pool(self) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(self.settings.api.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=worker_init, initargs=(self.settings.api.worker_nice,))  # fmt: skip
        self.warm = [pool.submit(warm_up, self.settings_json) for _ in range(self.settings.api.workers)]
        return pool

    async def start(self) -> None:
        self.pool = self._new_pool()
        self.resume()
        self.tasks = [asyncio.create_task(self._work()) for _ in range(self.settings.api.workers)]

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, self.prefetch.stop(), return_exceptions=True)
        if self.pool is not None:
            # stop the workers now (an analysis in progress is abandoned: its job stays 'running' in the store
            # and is resumed by the next start), then reap them
            for process in list(getattr(self.pool, "_processes", {}).values()):
                process.terminate()
            self.pool.shutdown(wait=True, cancel_futures=True)

    def resume(self) -> None:
        """Re-queue the jobs a previous process accepted but did not finish; fail those that cannot run."""
        for job in self.jobs.unfinished():
            missing = [f for f in job.spec.source.files if not os.path.exists(f)]
            if job.attempts >= MAX_ATTEMPTS:
                self._fail(job, f"interrupted {job.attempts} times by service restarts; not retried", 500)
            elif missing:
                self._fail(job, "the uploaded recording was lost before the job could run; upload it again", 410)
            else:
                self.jobs.update(job.id, status="queued")
                self.prefetch.admit(job)

    def ready(self) -> bool:
        return bool(self.warm) and all(f.done() and not f.exception() for f in self.warm)

    # --- queue -----------------------------------------------------------------------------------------

    def depth(self) -> int:
        return self.queue.qsize() + self.running + self.prefetch.active

    def retry_after(self) -> int:
        return self.drain.retry_after(self.depth(), self.avg_job_s, self.settings.api.workers)

    def _enqueue(self, job_id: str) -> None:
        self.events.setdefault(job_id, asyncio.Event())
        self.queue.put_nowait(job_id)
        self.metrics.queue.set(self.depth())

    def submit(self, spec: JobSpec, key_id: str, job_id: str | None = None) -> Job:
        if self.depth() >= self.settings.api.queue_max:
            self.metrics.jobs.labels("rejected").inc()
            raise QueueFull(self.retry_after())
        job = self.jobs.create(spec, key_id, job_id)
        self.events.setdefault(job.id, asyncio.Event())
        self.prefetch.admit(job)
        return job

    def take_report(self, job: Job) -> CallReport | None:
        """A done job's report: the one just parsed when a waiting request takes it, else from the store."""
        report = self.finished.pop(job.id, None)
        if report is None and job.report_id:
            report = self.jobs.store.get(job.report_id)
        return report

    async def wait(self, job_id: str, timeout_s: float) -> Job | None:
        event = self.events.get(job_id)
        if event is not None and timeout_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout_s)
        return self.jobs.get(job_id)

    def _fail(self, job: Job, error: str, code: int) -> None:
        self.jobs.update(job.id, status="failed", error=error, error_code=code)
        self.metrics.jobs.labels("failed").inc()
        remove_spool(job.spec)
        if (event := self.events.pop(job.id, None)) is not None:
            event.set()

    # --- work ------------------------------------------------------------------------------------------

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            job_id = await self.queue.get()
            job = self.jobs.get(job_id)
            if job is None or job.status not in ("queued", "running"):
                continue
            self.jobs.update(job_id, status="running", attempts=job.attempts + 1)
            self.running += 1
            try:
                result = await self._run(loop, job.spec)
            finally:
                self.running -= 1
                self.metrics.queue.set(self.depth())
            await self._finish(job, result)
            self.drain.done(time.monotonic(), self.depth())
            event = self.events.pop(job_id, None)
            if event is not None:
                event.set()

    async def _run(self, loop: asyncio.AbstractEventLoop, spec: JobSpec) -> dict[str, Any]:
        assert self.pool is not None
        try:
            return await loop.run_in_executor(self.pool, safe_run, spec.model_dump_json(), self.settings_json)
        except BrokenProcessPool:
            self.pool = self._new_pool()  # a worker died (killed, out of memory): the next job gets a new one
            return {"ok": False, "error": "the analysis worker process died (out of memory?)", "code": 500}

    async def _finish(self, job: Job, result: dict[str, Any]) -> None:
        if not result["ok"]:
            if "trace" in result:  # a bug: logged with the job and the id the client was given
                log.error("job %s: internal error %s\n%s", job.id, result["incident"], result["trace"])
            self._fail(job, result["error"], result["code"])
            return
        report = CallReport.model_validate_json(result["report"])
        self.metrics.observe_report(report, result["cached"])
        if not result["cached"]:
            self.avg_job_s = 0.8 * self.avg_job_s + 0.2 * report.timings.total_s
        assessment = None
        if job.kind == "ai-analyze":
            answer = await asyncio.to_thread(self.assistant.assess, report)
            assessment = answer.__dict__
        self.jobs.update(job.id, status="done", report_id=report.id, assessment=assessment)
        self.finished[job.id] = report  # a request waiting on it takes the parsed report (no second read)
        while len(self.finished) > FINISHED_KEPT:  # nobody waited for the oldest: they are in the store
            self.finished.pop(next(iter(self.finished)))
        self.metrics.jobs.labels("done").inc()
        remove_spool(job.spec)
