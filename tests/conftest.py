"""Shared fixtures.

The core suite makes its own inputs (speech from espeak-ng in ``calls.py``, SIP/RTP captures from the
project's generator in ``captures.py``) and runs everywhere. Reference-parity tests compare with the external
reference set, read from ``../shared/testdata`` next to the repository (override with CALLQA_SHARED), and with
the NISQA weights beside it: a test that takes the ``testdata`` or ``nisqa_weights`` fixture is marked
``parity`` and skips when that data is absent; the summary says how many ran.
"""

from __future__ import annotations

import importlib.util
import os
import wave
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from callqa.config import AnalysisSettings, Settings

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CALLQA_SHARED", REPO.parent / "shared"))
TESTDATA = SHARED / "testdata"
NISQA_WEIGHTS = SHARED / "models" / "nisqa" / "nisqa.tar"


def _example_turns() -> list[tuple[float, str, str]]:
    """(start second, speaker, text) of the bundled example call, from the script that made it."""
    spec = importlib.util.spec_from_file_location("make_example", REPO / "examples" / "make_example.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [(start, who, text) for start, who, _voice, text in module.TURNS]


EXAMPLE_TURNS = _example_turns()


PARITY_FIXTURES = {"testdata", "nisqa_weights"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "parity: compares with the external reference set (skips without it)")


@pytest.hookimpl(tryfirst=True)  # before ``-m`` selects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if PARITY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.parity)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    """How many reference-parity tests ran, and any core test that skipped (it should not)."""
    outcome: dict[str, tuple[str, bool, str]] = {}  # nodeid -> (outcome, parity, skip reason)
    for category in ("passed", "failed", "error", "skipped", "xfailed", "xpassed"):
        for rep in terminalreporter.stats.get(category, []):
            nodeid = getattr(rep, "nodeid", None)
            if nodeid is None or (nodeid in outcome and category == "skipped"):
                continue
            reason = str(rep.longrepr[2]) if category == "skipped" and isinstance(rep.longrepr, tuple) else ""
            parity_test = "parity" in getattr(rep, "keywords", {})  # a collection error has no keywords
            outcome[nodeid] = (category, parity_test, reason.removeprefix("Skipped: "))
    parity = Counter(o for o, p, _ in outcome.values() if p)
    if not outcome:
        return
    ran, skipped = sum(parity.values()) - parity["skipped"], parity["skipped"]
    where = []
    if not TESTDATA.is_dir():
        where.append(f"reference set not found at {TESTDATA}")
    if not NISQA_WEIGHTS.is_file():
        where.append(f"NISQA weights not found at {NISQA_WEIGHTS}")
    how = f" ({'; '.join(where)}; see README 'Reference data')" if skipped and where else ""
    terminalreporter.write_line(f"reference parity tests: {ran} ran, {skipped} skipped{how}")
    core_skips = Counter(r for o, p, r in outcome.values() if not p and o == "skipped")
    for reason, n in core_skips.most_common():
        terminalreporter.write_line(f"core tests skipped: {n} ({reason})", yellow=True)


@pytest.fixture(scope="session")
def testdata() -> Path:
    if not TESTDATA.is_dir():
        pytest.skip(f"reference set not found at {TESTDATA} (see README 'Reference data')")
    return TESTDATA


@pytest.fixture(scope="session")
def nisqa_weights() -> Path:
    pytest.importorskip("torch", reason="NISQA needs the 'nisqa' extra")
    if not NISQA_WEIGHTS.is_file():
        pytest.skip(f"NISQA weights not found at {NISQA_WEIGHTS} (see README 'Reference data')")
    return NISQA_WEIGHTS


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Default analysis, a private store, no NISQA (tests that want it pass the weights)."""
    return Settings(db=tmp_path / "store.sqlite3", models_dir=tmp_path / "models",
                    analysis=AnalysisSettings(nisqa=False))  # fmt: skip


def write_wav(path: Path, x: np.ndarray, rate: int) -> Path:
    """16-bit PCM WAV; ``x`` is (n,) or (channels, n) in [-1, 1]."""
    data = np.atleast_2d(x)
    pcm = np.clip(np.round(data.T * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(data.shape[0])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


# --- PostgreSQL and RabbitMQ (the scaled-out deployment) ---------------------------------------------------------
# The servers on 127.0.0.1 (PostgreSQL 5432 with trust for postgres, RabbitMQ 5672 guest/guest), as .ci/run starts
# them. Each test makes its own database / queue and drops it. Without a server the tests skip, unless
# CALLQA_REQUIRE_POSTGRES / CALLQA_REQUIRE_RABBITMQ is set (CI sets them, so there they fail instead).
PG_ADMIN = os.environ.get("CALLQA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("CALLQA_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")


def _unreachable(what: str, env: str, exc: BaseException) -> None:
    if os.environ.get(env):
        pytest.fail(f"{env} is set but {what} is unreachable: {exc}")
    pytest.skip(f"no {what} ({exc}); .ci/run starts one")


def _pg_admin():  # type: ignore[no-untyped-def]
    psycopg = pytest.importorskip("psycopg", reason="PostgreSQL needs the 'scale' extra")
    try:
        return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        _unreachable("PostgreSQL server on 127.0.0.1:5432", "CALLQA_REQUIRE_POSTGRES", exc)
        raise


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped after the test."""
    import secrets

    from callqa.db import close_pools

    name = f"callqa_test_{secrets.token_hex(6)}"
    with _pg_admin() as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        close_pools()
        with _pg_admin() as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def amqp_queue() -> Iterator[tuple[str, str]]:
    """(broker URL, a new queue name) on the RabbitMQ server; the queue and its delay/dead-letter queues are
    deleted after the test."""
    import secrets

    pika = pytest.importorskip("pika", reason="the job queue needs the 'scale' extra")
    try:
        conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL + "?connection_attempts=1&socket_timeout=3"))
    except pika.exceptions.AMQPError as exc:
        _unreachable("RabbitMQ server on 127.0.0.1:5672", "CALLQA_REQUIRE_RABBITMQ", exc)
        raise
    conn.close()
    name = f"callqa-test-{secrets.token_hex(6)}"
    yield AMQP_URL, name
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = conn.channel()
    for queue in (name, f"{name}.DQ", f"{name}.XQ"):
        channel.queue_delete(queue)
    conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_target(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """A store on each backend: a SQLite file, and a new PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "store.sqlite3"
    return str(request.getfixturevalue("pg_url"))
