"""GET /health (liveness, no key), /ready (models, store, disk), /metrics (Prometheus)."""

from __future__ import annotations

import shutil

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from callqa.api.deps import ReadKey, State

router = APIRouter(tags=["operations"])


@router.get("/health")
def health() -> dict[str, str]:
    """The process answers (no API key needed)."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "not ready; the body says which check failed"}})
def ready(state: State, key: ReadKey) -> JSONResponse:
    """Ready to analyse: models loaded in the workers, the store writable, enough free disk."""
    free = shutil.disk_usage(state.settings.data_dir).free
    checks = {
        "models_loaded": state.runner.ready(),
        "store_writable": state.store.writable(),
        "disk_free_bytes": free,
        "disk_ok": free >= state.settings.api.min_free_bytes,
        "queue_depth": state.runner.depth(),
        "llm": state.assistant.provider.name if state.assistant.provider else "offline",
    }
    ok = checks["models_loaded"] and checks["store_writable"] and checks["disk_ok"]
    return JSONResponse({"ready": ok, **checks}, status_code=200 if ok else 503)


@router.get("/metrics", response_class=Response)
def metrics(state: State, key: ReadKey) -> Response:
    """Prometheus text format."""
    state.metrics.queue.set(state.runner.depth())
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
