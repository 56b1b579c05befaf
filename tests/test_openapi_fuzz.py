"""Schemathesis generates requests from the published OpenAPI schema and sends them to the service running
under uvicorn on 127.0.0.1 (worker processes started, models loaded): no input may cause a 5xx."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings

from callqa.api.keys import KeyStore
from callqa.api.main import create_app
from callqa.config import AnalysisSettings, ApiSettings, Settings
from callqa.store import Store

TOKEN: dict[str, str] = {}


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    config = Settings(db=tmp / "s.sqlite3", analysis=AnalysisSettings(nisqa=False),
                      api=ApiSettings(rate_per_minute=100_000, queue_max=5, max_upload_bytes=1024**2))  # fmt: skip
    TOKEN["write"] = KeyStore(Store(config.db)).create("write")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(config, provider=None), host="127.0.0.1", port=port,
                                           log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    app = server.config.loaded_app
    while time.monotonic() < deadline:  # wait for the workers to load their models, so /ready may say 200
        state = getattr(getattr(app, "app", app), "state", None)
        if state is None or getattr(state, "callqa", None) is None or state.callqa.runner.ready():
            break
        time.sleep(0.1)
    yield schemathesis.openapi.from_url(f"http://127.0.0.1:{port}/openapi.json")
    server.should_exit = True
    thread.join(30)


def test_no_server_errors(api_schema) -> None:  # type: ignore[no-untyped-def]
    """Every operation, 25 generated requests each (valid and invalid by the schema)."""
    auth = {"Authorization": f"Bearer {TOKEN['write']}"}
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.label for op in operations} >= {
        "POST /analyze",
        "POST /ask",
        "GET /calls/{call_id}/audio/{leg}",
        "POST /calls",
    }
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case) -> None:  # type: ignore[no-untyped-def]
            response = case.call(headers=auth, timeout=60)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:200]}")

        run()
    assert not failures, "\n".join(failures[:10])
    metrics = httpx.get(api_schema.get_base_url().rstrip("/") + "/metrics", headers=auth).text
    sent = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("callqa_http_requests_total{"))  # fmt: skip
    assert sent >= 10 * len(operations), (api_schema.get_base_url(), metrics[-1500:])  # they reached the service
