"""The FastAPI application: ``create_app(settings)``; ``callqa serve`` runs it under uvicorn."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from callqa import __version__
from callqa.ai.assistant import Assistant
from callqa.ai.providers import Provider, make_provider
from callqa.api import logs
from callqa.api.deps import AppState, RateLimiter
from callqa.api.docs import install_docs
from callqa.api.keys import KeyStore
from callqa.api.routes import ai, analyze, calls, live, ops, sites, trends, ui
from callqa.config import Settings, get_settings
from callqa.errors import CallqaError, StoreError
from callqa.private import open_to_others, private_dir
from callqa.public import public_message
from callqa.service.alerts import run_evaluation
from callqa.service.jobs import JobStore, audio_dir, error_code, prune
from callqa.service.metrics import Metrics
from callqa.service.queue import QueueRunner
from callqa.service.runner import Runner
from callqa.store import Store

log = logging.getLogger("callqa.api")
PRUNE_EVERY_S = 3600.0  # retention: kept audio and finished jobs past their age are deleted this often

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes: at once from Content-Length, else while they stream."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0
        started = over = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    raise _TooLarge
            return message  # type: ignore[no-any-return]

        async def tracking_send(message: dict[str, Any]) -> None:
            # a body parser may turn the interruption into its own error (400 "error parsing the body"): once
            # the limit is crossed, the answer is 413 whatever the app says
            nonlocal started
            if over:
                if not started and message["type"] == "http.response.start":
                    started = True
                    await self._refuse(send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Any) -> None:
        body = json.dumps({"detail": f"request body larger than {self.limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})


async def alerts_loop(state: AppState) -> None:
    """Systemic fault detection every ``alerts.interval_s``: incidents opened, closed and sent (docs/alerts.md)."""
    while True:
        await asyncio.sleep(state.settings.alerts.interval_s)
        try:
            await asyncio.to_thread(run_evaluation, state.store, state.settings.alerts)
        except Exception:  # a locked store, a bug: logged, and the next round runs as usual
            log.exception("fault detection failed")


async def vicidial_sync_loop(state: AppState) -> None:
    """The dialer's new or changed recordings become jobs every ``vicidial.sync_interval_s`` (one round at a time;
    a round that finds the queue full leaves the rest for the next one)."""
    from callqa.service.jobs import JobSpec, Source
    from callqa.service.runner import QueueFull
    from callqa.service.vicidial import schedule_round

    loop = asyncio.get_running_loop()

    async def submit(recording_id: int) -> bool:
        try:
            state.runner.submit(JobSpec(source=Source(vicidial=recording_id)), "vicidial-sync")
        except QueueFull:
            return False
        return True

    def submit_from_thread(recording_id: int) -> bool:
        return asyncio.run_coroutine_threadsafe(submit(recording_id), loop).result()

    while True:
        try:
            result = await asyncio.to_thread(schedule_round, state.settings, submit_from_thread)
            log.info("vicidial sync: %d rows, %d queued, %d unchanged, %d failed", result.rows, result.analysed,
                     result.unchanged, len(result.failures))  # fmt: skip
        except CallqaError as exc:
            log.warning("vicidial sync failed: %s", exc)
        await asyncio.sleep(state.settings.vicidial.sync_interval_s)


def warn_open_data(settings: Settings) -> list[str]:
    """Warn (once, at start) about the store, kept audio and upload spool when other users can read them: new
    ones are created private, but a store made by an older version or by hand keeps its mode. Returns the lines."""
    places = [audio_dir(settings), settings.data_dir / "spool"]
    if isinstance(settings.db, Path):  # a SQLite store and its write-ahead log
        places += [settings.db, settings.db.with_name(settings.db.name + "-wal")]
    lines = []
    for path, mode in open_to_others(places):
        fix = "700" if path.is_dir() else "600"
        lines.append(f"{path} is open to other users (mode {mode:o}): it holds call data; chmod {fix} {path}")
    for line in lines:
        log.warning(line)
    return lines


def create_app(settings: Settings | None = None, provider: Provider | None | bool = True) -> FastAPI:
    """The app. ``provider=True`` builds the configured LLM provider (raising ConfigError on unsafe settings);
    tests may pass a provider or None (offline)."""
    settings = settings or get_settings()
    logs.install()
    llm = make_provider(settings.llm) if provider is True else provider or None
    store = Store(settings.db)
    try:
        private_dir(settings.data_dir)  # the spool and kept audio (beside a SQLite store, it exists already)
    except OSError as exc:
        raise StoreError(f"cannot create the working directory {settings.data_dir}: {exc}") from exc
    metrics = Metrics()
    metrics.watch_groups(store, settings.metrics)
    assistant = Assistant(settings.llm, store, llm, metrics.observe_llm)
    jobs = JobStore(store)
    runner = (QueueRunner if settings.broker is not None else Runner)(settings, jobs, metrics, assistant)
    state = AppState(settings=settings, store=store, keys=KeyStore(store), jobs=jobs, metrics=metrics,
                     assistant=assistant, runner=runner,
                     limiter=RateLimiter(settings.api.rate_per_minute, settings.api.read_rate_per_minute))  # fmt: skip

    async def retention() -> None:
        """Old kept audio and job records go at start (below), then every hour."""
        while True:
            await asyncio.sleep(PRUNE_EVERY_S)
            await asyncio.to_thread(prune, settings, jobs)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warn_open_data(settings)
        await asyncio.to_thread(prune, settings, jobs)
        await state.runner.start()
        tasks = [asyncio.create_task(retention())]
        if settings.alerts.interval_s > 0:
            tasks.append(asyncio.create_task(alerts_loop(state)))
        if settings.vicidial.dsn is not None and settings.vicidial.sync_interval_s > 0:
            tasks.append(asyncio.create_task(vicidial_sync_loop(state)))
        try:
            yield
        finally:
            state.hub.close()  # WebSocket followers are told the service is going away, not left waiting
            for task in tasks:
                task.cancel()
            await state.runner.stop()

    app = FastAPI(title="callqa", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Objective quality analysis of VoIP calls: recordings and captured calls in, "
                              "CallReports, AI assessments and answers out.")  # fmt: skip
    app.state.callqa = state
    for module in (analyze, calls, ai, live, ops, sites, trends):
        app.include_router(module.router)
    ui.install(app)  # the web pages under /ui/
    install_docs(app)  # /docs from packaged Swagger UI files

    @app.exception_handler(CallqaError)
    async def callqa_error(request: Request, exc: CallqaError) -> JSONResponse:
        return JSONResponse({"detail": public_message(str(exc), roots=[settings.data_dir])},
                            status_code=error_code(exc))  # fmt: skip

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        """A bug: logged with its traceback under an id the client is given (no paths, no internals)."""
        incident = secrets.token_hex(4)
        logs.log.error("request %s %s: internal error %s", request.method, logs.redact(str(request.url.path)),
                       incident, exc_info=exc)  # fmt: skip
        return JSONResponse({"detail": f"internal error {incident}; see the service log", "error_id": incident},
                            status_code=500)  # fmt: skip

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        metrics.requests.labels(request.method, template, str(response.status_code)).inc()
        return response

    app.add_middleware(BodyLimit, limit=settings.api.max_upload_bytes)
    return app
