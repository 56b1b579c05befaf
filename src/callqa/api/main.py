"""The FastAPI application: ``create_app(settings)``; ``callqa serve`` runs it under uvicorn."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from callqa import __version__
from callqa.ai.assistant import Assistant
from callqa.ai.providers import Provider, make_provider
from callqa.api import logs
from callqa.api.deps import AppState, RateLimiter
from callqa.api.keys import KeyStore
from callqa.api.metrics import Metrics
from callqa.api.routes import ai, analyze, calls, live, ops
from callqa.api.runner import Runner
from callqa.config import Settings, get_settings
from callqa.errors import CallqaError
from callqa.jobs import JobStore, error_code, prune
from callqa.public import public_message
from callqa.store import Store

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


def create_app(settings: Settings | None = None, provider: Provider | None | bool = True) -> FastAPI:
    """The app. ``provider=True`` builds the configured LLM provider (raising ConfigError on unsafe settings);
    tests may pass a provider or None (offline)."""
    settings = settings or get_settings()
    logs.install()
    llm = make_provider(settings.llm) if provider is True else provider or None
    store = Store(settings.db)
    metrics = Metrics()
    assistant = Assistant(settings.llm, store, llm, metrics.observe_llm)
    jobs = JobStore(store)
    state = AppState(settings=settings, store=store, keys=KeyStore(store), jobs=jobs, metrics=metrics,
                     assistant=assistant, runner=Runner(settings, jobs, metrics, assistant),
                     limiter=RateLimiter(settings.api.rate_per_minute, settings.api.read_rate_per_minute))  # fmt: skip

    async def retention() -> None:
        """Old kept audio and job records go at start (below), then every hour."""
        while True:
            await asyncio.sleep(PRUNE_EVERY_S)
            await asyncio.to_thread(prune, settings, jobs)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(prune, settings, jobs)
        await state.runner.start()
        pruner = asyncio.create_task(retention())
        try:
            yield
        finally:
            state.hub.close()  # WebSocket followers are told the service is going away, not left waiting
            pruner.cancel()
            await state.runner.stop()

    app = FastAPI(title="callqa", version=__version__, lifespan=lifespan,
                  description="Objective quality analysis of VoIP calls: recordings and captured calls in, "
                              "CallReports, AI assessments and answers out.")  # fmt: skip
    app.state.callqa = state
    for module in (analyze, calls, ai, live, ops):
        app.include_router(module.router)

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
