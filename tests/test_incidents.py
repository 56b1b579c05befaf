"""Systemic faults over simulated days of calls (real CallReports stored through the store, tests/fleet.py):
rollups per group and bucket that add up to the calls, a degraded carrier found within two windows and nothing
else, incidents closed when the fault is gone, and their news sent to a webhook, over SMTP and to a real
Alertmanager."""

from __future__ import annotations

import http.server
import json
import math
import shutil
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fleet import BASE_ONE_WAY as BASE
from fleet import CARRIERS, DAY, HOUR, Degradation, fast_dir, make_call, simulate

from callqa import incidents, rollups
from callqa.callindex import CallIndex
from callqa.config import AlertSettings
from callqa.incidents import Evaluation, rate_test
from callqa.rollups import FAULTS, JITTER_EDGES, LOSS_EDGES, Rollup
from callqa.service.alerts import notify
from callqa.store import Store

DAY0 = datetime(2026, 3, 9, tzinfo=UTC).timestamp()  # a Monday
DEGRADED_AT = DAY0 + 10 * HOUR
FIXED_AT = DAY0 + 12.5 * HOUR
WORSE = Degradation("trunk-b", DEGRADED_AT, FIXED_AT)
CFG = AlertSettings()
EVALUATED = [DAY0 + 8 * HOUR + q * 900 for q in range(1, 33)]  # every quarter hour from 08:15 to 16:00


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A quiet week (10 calls an hour per carrier, 08:00-18:00) and a busy day (100 an hour, 08:00-15:00) on
    which trunk-b degrades at 10:00 and is fixed at 12:30. The store lives in memory-backed storage where there
    is one (fsync)."""
    with fast_dir(tmp_path_factory.mktemp("fleet")) as base:
        store = Store(base / "fleet.sqlite3")
        n = simulate(store, DAY0 - 7 * DAY, 7, (8, 18), 10)
        simulate(store, DAY0, 1, (8, 15), 100, WORSE, first_id=n)
        yield store


@pytest.fixture(scope="module")
def evaluations(fleet: Store) -> list[Evaluation]:
    return [incidents.evaluate(fleet, CFG, now) for now in EVALUATED]


def test_rollups_add_up_to_the_stored_calls(fleet: Store) -> None:
    rollups.refresh(fleet)
    entries = CallIndex(fleet).entries(DAY0, DAY0 + DAY)
    hours = rollups.read(fleet, "carrier", 3600, DAY0, DAY0 + DAY)
    assert {(k, s) for k, s, _ in hours} == {(c, DAY0 + h * HOUR) for c in CARRIERS for h in range(8, 15)}
    for key, start, r in hours:
        calls = [e for e in entries if e.carrier == key and start <= e.t < start + HOUR]
        assert r.calls == len(calls) == 100
        assert r.verdicts == tuple(sum(e.verdict == v for e in calls) for v in rollups.VERDICTS)
        assert r.faults == tuple(sum(f in e.findings for e in calls) for f in FAULTS)
        exact = statistics.median(e.mos for e in calls if e.mos is not None)
        assert r.median_mos == pytest.approx(exact, abs=0.05)  # 0.1-wide bins, interpolated
        for values, edges, got in (([e.loss_pct for e in calls], LOSS_EDGES, r.loss_quantile(0.95)),
                                   ([e.jitter_ms for e in calls], JITTER_EDGES, r.jitter_quantile(0.95))):  # fmt: skip
            true = float(np.percentile(values, 95))
            i = rollups._bin(edges, true)
            assert got is not None and edges[i] - 1e-9 <= got <= edges[i + 1] + 1e-9  # in the true value's bin
    quarters = rollups.totals(rollups.read(fleet, "carrier", 900, DAY0, DAY0 + DAY))
    days = rollups.totals(rollups.read(fleet, "carrier", 86400, DAY0, DAY0 + DAY))
    assert days == quarters == rollups.totals(hours)  # a day is the sum of its hours and of its quarters
    everyone = rollups.read(fleet, rollups.ALL, 86400, DAY0 - 7 * DAY, DAY0 + DAY)
    assert sum(r.calls for _, _, r in everyone) == 7 * 10 * 3 * 10 + 7 * 3 * 100
    agents = rollups.totals(rollups.read(fleet, "agent", 86400, DAY0, DAY0 + DAY))
    assert len(agents) == 8 and sum(r.calls for r in agents.values()) == 2100


def test_rollups_follow_added_replaced_and_deleted_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollups, "REFRESH_DAYS", 1)  # a transaction per day of changes
    store = Store(tmp_path / "s.sqlite3")
    rng = np.random.default_rng(1)
    t = DAY0 + 9 * HOUR + 60
    for i in range(1, 5):
        store.put(make_call(i, t + i, "trunk-a", rng, None))
    store.put(make_call(5, t - 3 * DAY, "trunk-c", rng, None))
    assert rollups.refresh(store) == 2
    assert rollups.totals(rollups.read(store, "carrier", 86400, DAY0, DAY0 + DAY))["trunk-a"].calls == 4
    earlier = rollups.totals(rollups.read(store, "carrier", 86400, DAY0 - 3 * DAY, DAY0 - 2 * DAY))
    assert earlier["trunk-c"].calls == 1 and "trunk-a" not in earlier
    worse = Degradation("trunk-a", 0.0, one_way=1.0)
    store.put(make_call(2, t + 2, "trunk-a", rng, worse))  # analysed again: now with one-way audio
    store.put(make_call(9, t + 3 * HOUR, "trunk-c", rng, None))  # another hour
    assert store.delete([f"{3:016x}", "0" * 16]) == 1  # (an unknown id is no error)
    assert rollups.refresh(store) == 2  # the two quarter hours that changed
    day = rollups.totals(rollups.read(store, "carrier", 86400, DAY0, DAY0 + DAY))
    assert day["trunk-a"].calls == 3 and day["trunk-a"].count("one_way_audio") >= 1 and day["trunk-c"].calls == 1
    hour = rollups.totals(rollups.read(store, "carrier", 3600, DAY0 + 9 * HOUR, DAY0 + 10 * HOUR))
    assert hour["trunk-a"] == day["trunk-a"] and "trunk-c" not in hour
    assert rollups.refresh(store) == 0  # nothing changed since


def test_rate_test_is_the_exact_conditional_test_of_two_poisson_rates() -> None:
    # 6 faults in 100 calls against 2 in 700: P(X >= 6), X ~ Binomial(8, 100/800), worked out by hand
    p = 1 / 8
    by_hand = sum(math.comb(8, k) * p**k * (1 - p) ** (8 - k) for k in range(6, 9))
    assert rate_test(6, 100, 2, 700) == pytest.approx(by_hand, rel=1e-9)
    assert rate_test(0, 100, 2, 700) == 1.0 and rate_test(1, 100, 7, 700) > 0.3  # the usual rate: nothing
    assert Rollup.of([]).median_mos is None and Rollup.of([]).rate("dead_air") == 0.0


def test_a_degraded_carrier_is_found_within_two_windows_and_nothing_else(evaluations: list[Evaluation]) -> None:
    opened = [(ev.now, i) for ev in evaluations for i in ev.opened]
    assert opened, "no incident opened"
    assert {(i.dimension, i.group) for _, i in opened} == {("carrier", "trunk-b")}  # no agent, campaign, site...
    before = [ev for ev in evaluations if ev.now <= DEGRADED_AT]
    assert before and all(not ev.opened and not ev.raised for ev in before)
    first = {i.metric: now for now, i in opened}
    assert first["median_mos"] <= DEGRADED_AT + 2 * CFG.window_s
    assert first["one_way_audio"] <= DEGRADED_AT + 2 * CFG.window_s
    # the evidence: the window against the carrier's own baseline (the whole quiet week: its same hours are few)
    one_way = next(i for _, i in opened if i.metric == "one_way_audio")
    e = one_way.evidence
    assert e["calls"] >= CFG.min_calls and e["value"] >= 0.04 and e["baseline_value"] < 0.01
    assert e["baseline_kind"] == "whole_days" and e["baseline_calls"] == 7 * 10 * 10 and e["p_value"] < CFG.alpha
    mos = next(i for _, i in opened if i.metric == "median_mos")
    assert mos.evidence["baseline_value"] - mos.evidence["value"] >= CFG.mos_drop


def test_incidents_keep_their_worst_calls_and_close_when_the_fault_is_gone(
    fleet: Store, evaluations: list[Evaluation]
) -> None:
    stored = incidents.incidents(fleet)
    assert stored and {i.group for i in stored} == {"trunk-b"}
    one_way = next(i for i in stored if i.metric == "one_way_audio")
    assert one_way.worst
    for call_id in one_way.worst:  # every worst call is one of trunk-b's with the fault
        report = fleet.get(call_id)
        assert report is not None and report.context is not None and report.context.carrier == "trunk-b"
        assert "one_way_audio" in {f.code for f in report.findings}
    # trunk-b is fixed at 12:30 while its calls go on: once the window holds no more of the bad calls the checks
    # stop holding, and an hour later (clear_after_s) the incidents close, before the calls stop at 15:00
    assert all(i.state == "closed" and i.closed_at is not None for i in stored)
    assert all(DEGRADED_AT < i.last_seen <= FIXED_AT + CFG.window_s for i in stored)
    assert all(i.closed_at - i.last_seen == CFG.clear_after_s for i in stored)  # type: ignore[operator]
    assert max(i.closed_at for i in stored) < DAY0 + 15 * HOUR  # type: ignore[type-var]
    closed = [i for ev in evaluations for i in ev.closed]
    assert sorted(i.id for i in closed) == sorted(i.id for i in stored)  # each closed once


def test_a_site_that_loses_media_is_blamed_not_the_agents_and_carriers_it_carries(tmp_path: Path) -> None:
    """No media on a fifth of one dialer server's calls: that site is raised; every campaign, carrier and codec
    had some of those calls too, and none of them is raised once the site has explained them away."""
    worse = Degradation("", DAY0 + 10 * HOUR, one_way=BASE, mos_drop=0.0, loss_pct=0.0, site="10.2.0.10",
                        no_media=0.2)  # fmt: skip
    with fast_dir(tmp_path) as base:
        store = Store(base / "s.sqlite3")
        n = simulate(store, DAY0 - 7 * DAY, 7, (9, 12), 10, seed=11)
        simulate(store, DAY0, 1, (10, 11), 60, worse, first_id=n, seed=11)
        cfg = AlertSettings(min_rate_delta=0.05)
        ev = incidents.evaluate(store, cfg, DAY0 + 11 * HOUR)
    raised = {(c.dimension, c.group, c.metric) for c in ev.raised}
    assert raised == {("site", "10.2.0.10", "no_media")}
    everyone = {(c.dimension, c.group) for c in ev.checks if c.metric == "no_media" and c.count > 0}
    assert {d for d, _ in everyone} == {"campaign", "carrier", "codec", "site"}  # (agents: too few calls each)
    first_pass = [c for c in ev.checks if c.metric == "no_media" and c.raised]
    assert len(first_pass) > 1  # judged alone, others looked raised too: explaining away is what leaves one


# --- notifications ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Hook(http.server.BaseHTTPRequestHandler):
    got: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.got.append({"type": self.headers["Content-Type"], "body": json.loads(body)})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    _Hook.got = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def smtp() -> Iterator[tuple[int, list[Any]]]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    got: list[Any] = []

    class Keep(Message):  # type: ignore[misc]
        def handle_message(self, message: Any) -> None:
            got.append(message)

    port = _free_port()
    controller = Controller(Keep(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, got
    finally:
        controller.stop()


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    assert binary, "Alertmanager is not installed (setup.sh --dev installs Debian's prometheus-alertmanager)"
    config = tmp_path / "am.yml"
    config.write_text("route:\n  receiver: none\n  group_wait: 1h\nreceivers:\n  - name: none\n")
    port, cluster = _free_port(), _free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", f"--cluster.listen-address=127.0.0.1:{cluster}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise AssertionError("Alertmanager did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_news_go_to_a_webhook_smtp_and_alertmanager(
    evaluations: list[Evaluation], webhook: str, smtp: tuple[int, list[Any]], alertmanager: str
) -> None:
    ev = next(e for e in evaluations if e.opened)
    cfg = AlertSettings(webhook_url=webhook, smtp_host="127.0.0.1", smtp_port=smtp[0], mail_to=["noc@example.com"],
                        alertmanager_url=alertmanager, public_url="https://callqa.example")  # fmt: skip
    sent = notify(cfg, ev)
    assert not sent.errors and sent.webhook == len(ev.opened) and sent.mails == 1 and sent.alerts == len(ev.open)
    posted = [g["body"] for g in _Hook.got]
    assert all(g["type"] == "application/json" for g in _Hook.got)
    assert {(p["event"], p["incident"]["group"], p["incident"]["metric"]) for p in posted} == {
        ("opened", i.group, i.metric) for i in ev.opened}  # fmt: skip
    assert all(link.startswith("https://callqa.example/ui/calls/") for p in posted for link in p["worst_calls"])
    mail = smtp[1][0]
    assert mail["To"] == "noc@example.com" and "opened" in mail["Subject"]
    assert "trunk-b" in mail.get_payload() and "/ui/calls/" in mail.get_payload()
    alerts = httpx.get(f"{alertmanager}/api/v2/alerts", timeout=5).json()  # what the real Alertmanager now holds
    held = {(a["labels"]["group"], a["labels"]["fault"]) for a in alerts}
    assert held == {(i.group, i.metric) for i in ev.open}
    assert all(a["labels"]["alertname"] == "CallqaSystemicFault" and a["status"]["state"] == "active" for a in alerts)
    closing = next(e for e in evaluations if e.closed)
    assert not notify(cfg, closing).errors  # sent with their closing time as endsAt: no longer active
    now_held = httpx.get(f"{alertmanager}/api/v2/alerts", timeout=5).json()
    active = {(a["labels"]["group"], a["labels"]["fault"]) for a in now_held if a["status"]["state"] == "active"}
    assert not {(i.group, i.metric) for i in closing.closed} & active


def test_a_receiver_that_fails_is_named_not_raised(evaluations: list[Evaluation]) -> None:
    ev = next(e for e in evaluations if e.opened)
    port = _free_port()  # nothing listens there
    cfg = AlertSettings(webhook_url=f"http://127.0.0.1:{port}/", alertmanager_url=f"http://127.0.0.1:{port}",
                        smtp_host="127.0.0.1", smtp_port=port, mail_to=["x@example.com"], timeout_s=2)  # fmt: skip
    sent = notify(cfg, ev)
    assert [e.split(":")[0] for e in sent.errors] == ["webhook", "smtp", "alertmanager"]


def test_incidents_are_listed_by_the_cli_and_the_api(
    fleet: Store, evaluations: list[Evaluation], tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from callqa.api.keys import KeyStore
    from callqa.api.main import create_app
    from callqa.cli import app as cli
    from callqa.config import AnalysisSettings, Settings

    stored = incidents.incidents(fleet)
    got = CliRunner().invoke(cli, ["incidents", "--json", "--db", str(fleet.path)])
    assert got.exit_code == 0, got.output
    listed = json.loads(got.stdout)
    assert [i["id"] for i in listed] == [i.id for i in stored]
    assert all("trunk-b" in i["summary"] and i["evidence"]["p_value"] < CFG.alpha for i in listed)
    table = CliRunner().invoke(cli, ["incidents", "--status", "closed", "--db", str(fleet.path)])
    assert table.exit_code == 0 and "closed" in table.stdout and "trunk-b" in table.stdout
    assert CliRunner().invoke(cli, ["incidents", "--status", "maybe", "--db", str(fleet.path)]).exit_code == 2
    token = KeyStore(fleet).create("read", "noc")
    settings = Settings(db=fleet.path, models_dir=tmp_path / "models", analysis=AnalysisSettings(nisqa=False))
    client = TestClient(create_app(settings, provider=None))  # no lifespan: no evaluation loop
    auth = {"Authorization": f"Bearer {token}"}
    r = client.get("/incidents", params={"status": "closed", "since": "2026-03-09"}, headers=auth)
    assert r.status_code == 200 and {i["id"] for i in r.json()} == {i.id for i in stored}
    assert r.json()[0]["worst"] and r.json()[0]["latest"]["calls"] >= CFG.min_calls
    assert client.get("/incidents", params={"status": "open"}, headers=auth).json() == []
    assert client.get("/incidents", params={"since": "2027-01-01"}, headers=auth).json() == []
    assert client.get("/incidents", params={"status": "gone"}, headers=auth).status_code == 422
    r = client.get("/trends", params={"by": "carrier", "since": "2026-03-09T08:00", "until": "2026-03-09T15:00",
                                      "bucket": "1h", "series": "false"}, headers=auth)  # fmt: skip
    groups = {g["group"]: g for g in r.json()["groups"]}
    assert (
        groups["trunk-b"]["faults"]["one_way_audio"]["rate"] > 2 * groups["trunk-a"]["faults"]["one_way_audio"]["rate"]
    )
    assert "series" not in groups["trunk-b"] and groups["trunk-b"]["calls"] == 700
