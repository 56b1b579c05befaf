"""Remote recordings are fetched by the service before their jobs reach the analysis workers.

A fetch waits on the network, an analysis on the CPU. When the workers fetched, one slow or stalled recording
host held an analysis worker (the only one, by default) for up to the whole fetch deadline while the queue
behind it waited. Here fetches run on a small thread pool of their own (``fetch.concurrency``): a job whose
source is a URL or an SFTP path is fetched into its spool directory first, then enters the analysis queue as
an upload would. A fetch that fails fails its job with the fetch's error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from callqa.config import Settings
from callqa.errors import CallqaError
from callqa.service.jobs import Job, JobSpec, JobStore, Source, error_code, spool_dir


def is_remote(spec: JobSpec) -> bool:
    return bool(spec.source.url or spec.source.sftp) and not spec.source.files


class Prefetcher:
    def __init__(self, settings: Settings, jobs: JobStore, enqueue: Callable[[str], None],
                 fail: Callable[[Job, str, int], None]) -> None:  # fmt: skip
        self.settings, self.jobs, self.enqueue, self.fail = settings, jobs, enqueue, fail
        self.pool = ThreadPoolExecutor(settings.fetch.concurrency, thread_name_prefix="callqa-fetch")
        self.active = 0  # jobs being fetched (they count towards the queue bound)
        self.tasks: set[asyncio.Task[None]] = set()

    def admit(self, job: Job) -> None:
        """Into the analysis queue (``enqueue``), after fetching when the recording is remote."""
        if not is_remote(job.spec):
            self.enqueue(job.id)
            return
        self.active += 1  # counted at once: the queue bound holds while the task starts
        task = asyncio.get_running_loop().create_task(self._fetch_then_enqueue(job))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _fetch_then_enqueue(self, job: Job) -> None:
        try:
            spec = await self.fetch(job.spec, job.id)
        except CallqaError as exc:
            spool = str(spool_dir(self.settings, job.id))  # a partial download goes with the job
            self.fail(job.model_copy(update={"spec": job.spec.model_copy(update={"spool": spool})}), str(exc),
                      error_code(exc))  # fmt: skip
            return
        self.jobs.update(job.id, spec=spec)
        self.enqueue(job.id)

    async def fetch(self, spec: JobSpec, job_id: str) -> JobSpec:
        """``spec`` with its recording fetched into the job's spool directory (a local file from now on).
        Raises what the fetch raises (FetchError, LimitError, InputError)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.pool, _fetch, spec, job_id, self.settings)
        finally:
            self.active -= 1

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.pool.shutdown(wait=False, cancel_futures=True)


def _fetch(spec: JobSpec, job_id: str, settings: Settings) -> JobSpec:
    from callqa.sources.http import fetch_http
    from callqa.sources.sftp import fetch_sftp

    folder = spool_dir(settings, job_id)
    src = spec.source
    if src.url:
        path, label = fetch_http(src.url, settings.fetch, Path(folder)), src.url
    else:
        path, label = fetch_sftp(str(src.sftp), settings.fetch, Path(folder)), f"sftp:{src.sftp}"
    source = Source(files=[str(path)], labels=[label], url=src.url, sftp=src.sftp)
    return spec.model_copy(update={"source": source, "spool": str(folder)})
