"""Prometheus and Grafana: the per-group gauges on /metrics with bounded labels, the rules checked and unit-tested
by promtool, the dashboard built by the Grafana Foundation SDK, every metric they name served by the service, and
the dashboard's per-call SQL run on a real PostgreSQL against the call index; GET /trends, /incidents and
``callqa trends`` over stored calls."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient
from fleet import AGENTS, CARRIERS, HOUR, Degradation, fast_dir, make_call
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from callqa import rollups
from callqa.api.keys import KeyStore
from callqa.api.main import create_app
from callqa.callindex import CallIndex
from callqa.cli import app as cli
from callqa.config import AlertSettings, AnalysisSettings, MetricsSettings, Settings
from callqa.service.metrics import GROUP_METRICS, OTHER, Metrics
from callqa.store import Store

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "deploy" / "prometheus" / "callqa-rules.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "callqa-rules.test.yml"
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "callqa-quality.json"


def _builder() -> Any:
    spec = importlib.util.spec_from_file_location("build_dashboard", GRAFANA / "build_dashboard.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is not installed (setup.sh --dev installs Debian's prometheus)"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def recent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """Calls of the last 40 minutes: three carriers, eight agents; trunk-b with one-way audio on a third."""
    with fast_dir(tmp_path_factory.mktemp("recent")) as base:
        store = Store(base / "store.sqlite3")
        rng = np.random.default_rng(3)
        now = time.time()
        worse = Degradation("trunk-b", 0.0, one_way=0.33, mos_drop=1.0)
        for i in range(1, 121):
            store.put(make_call(i, now - 2400 + 20 * i, list(CARRIERS)[i % 3], rng, worse), now=now)
        yield store


def test_rules_pass_promtool_check_and_their_unit_tests() -> None:
    check = _promtool("check", "rules", str(RULES))
    assert check.returncode == 0 and "SUCCESS: 6 rules found" in check.stdout, check.stdout + check.stderr
    run = _promtool("test", "rules", str(RULE_TESTS))
    assert run.returncode == 0 and "SUCCESS" in run.stdout, run.stdout + run.stderr
    broken = RULES.read_text().replace("callqa_incidents_open > 0", "callqa_incidents_open >> 0")
    bad = RULE_TESTS.parent / f".broken-{secrets.token_hex(4)}.yml"
    try:  # the check can fail
        bad.write_text(broken)
        assert _promtool("check", "rules", str(bad)).returncode != 0
    finally:
        bad.unlink()


def test_dashboard_json_is_what_the_sdk_builds_and_parses_back(tmp_path: Path) -> None:
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import Dashboard

    builder = _builder()
    committed = json.loads(DASHBOARD.read_text())
    assert DASHBOARD.read_text() == builder.render(), "run python deploy/grafana/build_dashboard.py"
    parsed = Dashboard.from_json(committed)  # the SDK's own model reads it back unchanged
    assert json.loads(json.dumps(parsed, cls=JSONEncoder, sort_keys=True)) == committed
    assert committed["uid"] == "callqa-quality"
    sources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "callqa.yml").read_text())["datasources"]
    provisioned = {(d["type"], d["uid"]) for d in sources}
    used = {(p["datasource"]["type"], p["datasource"]["uid"]) for p in committed["panels"] if p.get("datasource")}
    assert used == provisioned  # both data sources used, by their fixed uids
    titles = {p["title"] for p in committed["panels"]}
    for dim in ("carrier", "agent", "campaign"):
        assert {f"Fault rates by {dim}", f"Median MOS by {dim}"} <= titles
    table = next(p for p in committed["panels"] if p["type"] == "table")
    links = table["fieldConfig"]["overrides"][0]["properties"][0]["value"]
    assert links[0]["url"] == "${callqa_url}/ui/calls/${__value.raw}"  # the web UI's call page (api/routes/ui.py)
    client = TestClient(create_app(Settings(db=tmp_path / "s.sqlite3", models_dir=tmp_path / "m"), provider=None))
    page = client.get("/ui/calls/0123456789abcdef", follow_redirects=False)  # the page exists: sign in first
    assert page.status_code in (302, 303, 307) and "/ui/login" in page.headers["location"]
    assert client.get("/ui/call/0123456789abcdef", follow_redirects=False).status_code == 404
    boards = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "callqa.yml").read_text())
    assert boards["providers"][0]["type"] == "file"


def _named_metrics() -> set[str]:
    """Every callqa metric a rule or a dashboard panel names (recording rules' own names left aside)."""
    rules = yaml.safe_load(RULES.read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    board = json.loads(DASHBOARD.read_text())
    exprs += [t["expr"] for p in board["panels"] for t in p.get("targets", []) if "expr" in t]
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    names = set()
    for e in exprs:
        names |= {m for m in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e) if "callqa" in m and m not in recorded}
    assert names and all(":" not in n for n in names), names
    return names


def test_every_metric_a_rule_or_panel_names_is_on_the_services_metrics(recent: Store, tmp_path: Path) -> None:
    settings = Settings(db=recent.path, models_dir=tmp_path / "models", analysis=AnalysisSettings(nisqa=False))
    token = KeyStore(recent).create("read", "prometheus")
    with TestClient(create_app(settings, provider=None)) as client:
        r = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    missing = _named_metrics() - set(families)
    assert not missing, f"named by a rule or panel but not served: {missing}"
    assert set(GROUP_METRICS) <= set(families)
    calls = {s.labels["group"]: s.value for s in families["callqa_group_calls"].samples
             if s.labels["dimension"] == "carrier"}  # fmt: skip
    assert calls == {"trunk-a": 40, "trunk-b": 40, "trunk-c": 40}
    ratio = {s.labels["group"]: s.value for s in families["callqa_group_fault_ratio"].samples
             if s.labels["dimension"] == "carrier" and s.labels["fault"] == "one_way_audio"}  # fmt: skip
    assert ratio["trunk-b"] > 0.15 and ratio["trunk-a"] < 0.1


def test_group_labels_are_capped_with_the_rest_as_other(recent: Store) -> None:
    metrics = Metrics()
    metrics.watch_groups(recent, MetricsSettings(top_groups=3), clock=time.time)
    text = generate_latest(metrics.registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    agents = {s.labels["group"]: s.value for s in families["callqa_group_calls"].samples
              if s.labels["dimension"] == "agent"}  # fmt: skip
    assert len(agents) == 4 and OTHER in agents and sum(agents.values()) == 120
    assert set(agents) - {OTHER} <= set(AGENTS)
    assert all(set(s.labels) <= {"dimension", "group", "fault", "quantile"} for f in families.values()
               for s in f.samples if f.name.startswith("callqa_group"))  # fmt: skip
    later = Metrics()
    later.watch_groups(recent, MetricsSettings(), clock=lambda: time.time() + 3 * HOUR)  # the window has moved on
    text = generate_latest(later.registry).decode()
    assert "callqa_group_calls{" not in text and "# TYPE callqa_group_calls gauge" in text


def _psql(*args: str, db: str = "postgres") -> str:
    run = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-qA",
                          *args], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr
    return run.stdout


def _literal(v: object) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, int | float):
        return repr(v)
    return "'" + str(v).replace("'", "''") + "'"


def test_the_worst_calls_panel_query_runs_on_postgresql_over_the_call_index(recent: Store, pg_url: str) -> None:
    """The panel's SQL, as Grafana expands it, on a real PostgreSQL store holding the same calls: the failed and
    degraded calls of the range, worst first, with their figures."""
    assert shutil.which("psql"), "psql not installed (Debian postgresql-client)"
    CallIndex(recent).sync()
    with recent.connect() as db:
        stored = db.execute("SELECT id, created_at FROM reports").fetchall()
        rows = db.execute("SELECT id, verdict, severity, t, mos FROM reports WHERE kind != ''").fetchall()
    central = Store(pg_url)
    for report_id, created_at in stored:
        report = recent.get(report_id)
        assert report is not None
        central.put(report, now=created_at)
    sql = _builder().WORST_CALLS_SQL
    start, end = min(r[3] for r in rows), max(r[3] for r in rows) + 1
    sql = sql.replace("$__unixEpochFilter(t)", f"t BETWEEN {start} AND {end}")  # as Grafana expands it
    got = list(csv.reader(io.StringIO(_psql("--csv", "-c", sql, db=pg_url.rsplit("/", 1)[1]))))
    head, body = got[0], got[1:]
    assert head[:3] == ["id", "time", "verdict"] and "findings" in head
    bad = sorted((r for r in rows if r[1] in ("degraded", "failed")),
                 key=lambda r: (-r[2], r[4] if r[4] is not None else 9.0, -r[3]))  # fmt: skip
    assert len(bad) > 10 and [r[0] for r in body] == [r[0] for r in bad][:200]
    assert all(not f.startswith(",") for f in (r[head.index("findings")] for r in body))


def test_trends_api_and_cli_over_stored_calls(recent: Store, tmp_path: Path) -> None:
    settings = Settings(db=recent.path, models_dir=tmp_path / "models", analysis=AnalysisSettings(nisqa=False))
    token = KeyStore(recent).create("read", "trends")
    auth = {"Authorization": f"Bearer {token}"}
    rollups.refresh(recent)
    with TestClient(create_app(settings, provider=None)) as client:
        r = client.get("/trends", params={"by": "carrier", "since": "2h", "bucket": "15m"}, headers=auth)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["bucket"] == "15m" and body["overall"]["calls"] == 120
        groups = {g["group"]: g for g in body["groups"]}
        assert set(groups) == set(CARRIERS) and all(g["calls"] == 40 for g in groups.values())
        assert sum(s["calls"] for s in groups["trunk-b"]["series"]) == 40 and len(groups["trunk-b"]["series"]) >= 8
        b = groups["trunk-b"]
        assert b["faults"]["one_way_audio"]["rate"] > 0.15 and b["mos"]["median"] < groups["trunk-a"]["mos"]["median"]
        assert sum(b["mos"]["distribution"].values()) == b["mos"]["calls"] == 40
        assert b["verdicts"]["failed"] == b["faults"]["one_way_audio"]["calls"]  # one-way audio is critical
        csv_text = client.get("/trends", params={"by": "agent", "since": "2h", "format": "csv"}, headers=auth)
        assert csv_text.headers["content-type"].startswith("text/csv")
        table = list(csv.reader(io.StringIO(csv_text.text)))
        assert table[0][:3] == ["group", "bucket_start", "calls"] and sum(int(r[2]) for r in table[1:]) == 120
        assert client.get("/trends", params={"by": "colour"}, headers=auth).status_code == 422
        assert client.get("/trends", params={"since": "yesterday-ish"}, headers=auth).status_code == 422
        assert client.get("/trends", params={"since": "1h", "until": "2h"}, headers=auth).status_code == 422
        assert client.get("/trends").status_code == 401
        r = client.get("/incidents", params={"status": "open"}, headers=auth)
        assert r.status_code == 200 and r.json() == []
    runner = CliRunner()
    got = runner.invoke(cli, ["trends", "--by", "carrier", "--since", "24h", "--format", "json", "--db",
                              str(recent.path)])  # fmt: skip
    assert got.exit_code == 0, got.output
    assert {g["group"] for g in json.loads(got.stdout)["groups"]} == set(CARRIERS)
    got = runner.invoke(cli, ["trends", "--by", "site", "--since", "24h", "--db", str(recent.path)])
    assert got.exit_code == 0 and "10.1.0.10" in got.stdout and "MOS p50" in got.stdout
    got = runner.invoke(cli, ["trends", "--by", "codec", "--format", "csv", "--db", str(recent.path)])
    assert got.exit_code == 0 and {r[0] for r in list(csv.reader(io.StringIO(got.stdout)))[1:]} == {"PCMA", "PCMU",
                                                                                                    "G729"}  # fmt: skip
    got = runner.invoke(cli, ["trends", "--since", "soon", "--db", str(recent.path)])
    assert got.exit_code == 2 and "not a time" in got.output
    got = runner.invoke(cli, ["incidents", "--evaluate", "--json", "--db", str(recent.path)])
    assert got.exit_code == 0, got.output
    assert isinstance(json.loads(got.stdout), list)


def test_the_service_evaluates_on_its_own_and_posts_the_incident(tmp_path: Path) -> None:
    """End to end: the service's loop finds a carrier gone bad against its week and posts it to a webhook."""
    import http.server
    import threading

    got: list[dict[str, Any]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with fast_dir(tmp_path) as base:
        _evaluates_on_its_own(base, server, got)


def _evaluates_on_its_own(base: Path, server: Any, got: list[dict[str, Any]]) -> None:
    store = Store(base / "store.sqlite3")
    rng = np.random.default_rng(5)
    now = time.time()
    worse = Degradation("trunk-b", now - 3600, one_way=0.4)
    i = 1
    for day in range(7, -1, -1):  # the same hour of each of the last 7 days, then today's with trunk-b broken
        for carrier in CARRIERS:  # 60 an hour: whatever the quarter hour, 45 or more in the judged window
            for t in np.sort(rng.uniform(now - day * 86400 - 3600, now - day * 86400, 60)):
                store.put(make_call(i, float(t), carrier, rng, worse), now=float(t) + 60)
                i += 1
    hook = f"http://127.0.0.1:{server.server_address[1]}/"
    settings = Settings(db=store.path, models_dir=base / "models", analysis=AnalysisSettings(nisqa=False),
                        alerts=AlertSettings(interval_s=0.5, webhook_url=hook))  # fmt: skip
    try:
        with TestClient(create_app(settings, provider=None)):
            deadline = time.monotonic() + 30
            while not got and time.monotonic() < deadline:
                time.sleep(0.2)
    finally:
        server.shutdown()
        server.server_close()
    assert got, "the service posted nothing"
    opened = {(e["incident"]["dimension"], e["incident"]["group"], e["incident"]["metric"]) for e in got}
    assert ("carrier", "trunk-b", "one_way_audio") in opened
    assert {g for _, g, _ in opened} == {"trunk-b"}
    assert got[0]["event"] == "opened" and got[0]["incident"]["evidence"]["baseline_kind"] == "same_hours"


def test_a_broken_store_leaves_the_group_families_empty_not_the_scrape_failed(tmp_path: Path) -> None:
    store = Store(tmp_path / "store.sqlite3")
    metrics = Metrics()
    metrics.watch_groups(store, MetricsSettings())
    store.path.write_bytes(b"not a database" * 100)
    text = generate_latest(metrics.registry).decode()
    assert "# TYPE callqa_group_calls gauge" in text and "callqa_group_calls{" not in text
    assert 'callqa_incidents_open{dimension="carrier",fault="one_way_audio"} 0.0' in text
