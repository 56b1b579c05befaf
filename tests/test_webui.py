"""The web pages in a real browser: headless Chromium (Debian's package) driven by Playwright, against the
service running under uvicorn on 127.0.0.1 with calls made by the project's own pipeline (the bundled example
call, transcribed, and a generated SIP/RTP capture). Every test checks that its pages logged no console
error and asked for nothing outside the service; screenshots go to the test's temporary directory."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from calls import capture_file

from callqa.api.keys import KeyStore
from callqa.api.main import create_app
from callqa.config import AnalysisSettings, ApiSettings, Settings
from callqa.service.cache import recording_key
from callqa.service.captures import analyze_capture
from callqa.service.jobs import audio_dir
from callqa.service.recordings import analyze_recording
from callqa.store import Store

sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (dev extra)")
CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[1]
AGENT = REPO / "examples" / "call-agent.wav"
CUSTOMER = REPO / "examples" / "call-customer.wav"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _with_context(store: Store, report_id: str, context: dict[str, object]) -> str:
    """A copy of a stored report carrying a ``context`` object (what a dialler integration adds), under a new id."""
    with store.connect() as db:
        text, created = db.execute("SELECT report, created_at FROM reports WHERE id = ?", (report_id,)).fetchone()
        report = json.loads(text)
        new_id = ("c0" + report_id)[:16]
        report.update(id=new_id, cache_key=new_id * 4, context=context)
        db.execute("INSERT INTO reports (id, cache_key, created_at, source, verdict, duration_s, report) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)", (new_id, new_id * 4, created + 1.0, "ctx", report["verdict"],
                                                   report["duration_s"], json.dumps(report)))  # fmt: skip
    return new_id


class Site:
    def __init__(self, base: str, settings: Settings, read: str, write: str, calls: dict[str, Any],
                 shots: Path) -> None:  # fmt: skip
        self.base, self.settings, self.read, self.write = base, settings, read, write
        self.calls, self.shots = calls, shots


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    tmp = tmp_path_factory.mktemp("webui")
    settings = Settings(db=tmp / "store.sqlite3", models_dir=tmp / "models", analysis=AnalysisSettings(nisqa=False),
                        api=ApiSettings(max_upload_bytes=8 * 1024**2))  # type: ignore[call-arg]  # fmt: skip
    store = Store(settings.db)
    keys = KeyStore(store)
    write, read = keys.create("write", "qa lead"), keys.create("read", "supervisor")
    transcribed = settings.model_copy(update={"analysis": settings.analysis.model_copy(update={"transcribe": True})})
    example, _ = analyze_recording([AGENT, CUSTOMER], transcribed, store=store, audio_dir=audio_dir(settings))
    pcap = tmp / "calls.pcap"
    capture_file(pcap, 5, 12.0)
    captured, _ = analyze_capture(pcap, settings, store)
    context = {
        "recording_id": 1,
        "agent": "alice",
        "campaign_id": "SALES",
        "carrier": "trunk-a",
        "direction": "outbound",
    }
    with_context = _with_context(store, example.id, context)
    calls = {"example": example, "captured": captured, "context": with_context}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings, provider=None), host="127.0.0.1", port=port,
                                           log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the service did not start"
    shots = tmp / "screenshots"
    shots.mkdir()
    try:
        yield Site(f"http://127.0.0.1:{port}", settings, read, write, calls, shots)
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


class Watched:
    """A page whose console errors, uncaught exceptions and requests to other hosts are recorded."""

    def __init__(self, context: Any, base: str) -> None:
        self.page = context.new_page()
        self.errors: list[str] = []
        self.foreign: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: None if r.url.startswith((base, "data:")) else self.foreign.append(r.url))

    def clean(self) -> None:
        assert self.errors == [], self.errors
        assert self.foreign == [], self.foreign


def sign_in(browser: Any, site: Site, key: str, viewport: dict[str, int] | None = None) -> tuple[Any, Watched]:
    context = browser.new_context(viewport=viewport or {"width": 1280, "height": 900})
    w = Watched(context, site.base)
    w.page.goto(f"{site.base}/ui/")
    assert "/ui/login" in w.page.url  # no session: the sign-in page
    w.page.fill("input[name=key]", key)
    w.page.click("button[type=submit]")
    w.page.wait_for_url(f"{site.base}/ui/")
    return context, w


def rows(page: Any) -> list[dict[str, str]]:
    return page.eval_on_selector_all(
        "table.calls tbody tr:has(a)",
        "trs => trs.map(tr => ({id: tr.querySelector('a').getAttribute('href'),"
        " verdict: tr.querySelector('.verdict').textContent, cells: [...tr.cells].map(c => c.innerText)}))",
    )


def test_sign_in_session_cookie_and_sign_out(site: Site, browser: Any) -> None:
    context = browser.new_context()
    w = Watched(context, site.base)
    w.page.goto(f"{site.base}/ui/calls/{site.calls['example'].id}")
    assert "/ui/login" in w.page.url
    w.page.fill("input[name=key]", "cqa_00000000_not-a-key")
    w.page.click("button[type=submit]")
    assert "not valid" in w.page.inner_text(".error")
    w.page.fill("input[name=key]", site.read)
    w.page.click("button[type=submit]")
    w.page.wait_for_url(f"{site.base}/ui/calls/{site.calls['example'].id}")  # back where the reader was going
    cookie = next(c for c in context.cookies() if c["name"] == "callqa_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert w.page.evaluate("document.cookie") == ""  # scripts cannot read the session
    # a POST without the session's CSRF token is refused, even with the cookie
    assert context.request.post(f"{site.base}/ui/logout", form={"csrf": "forged"}).status == 403
    assert context.request.post(f"{site.base}/ui/upload", multipart={"csrf": "x", "files": {
        "name": "a.wav", "mimeType": "audio/wav", "buffer": AGENT.read_bytes()}}).status == 403  # fmt: skip
    # the JSON API reads with the cookie (the page's JSON link and audio players), but never writes with it
    assert context.request.get(f"{site.base}/calls/{site.calls['example'].id}").json()["id"] == site.calls["example"].id
    assert context.request.post(f"{site.base}/analyze", multipart={"files": {
        "name": "a.wav", "mimeType": "audio/wav", "buffer": AGENT.read_bytes()}}).status == 401  # fmt: skip
    w.page.click("form.signout button")
    w.page.wait_for_url(re.compile(r".*/ui/login.*"))
    w.page.goto(f"{site.base}/ui/")
    assert "/ui/login" in w.page.url  # the session is gone on the server too
    assert context.request.get(f"{site.base}/calls/{site.calls['example'].id}").status == 401
    w.clean()
    context.close()


def test_call_list_filters_and_sorts(site: Site, browser: Any) -> None:
    context, w = sign_in(browser, site, site.read)
    page = w.page
    all_rows = rows(page)
    assert len(all_rows) == 7  # the example, its copy with a dialler context, five captured calls
    assert page.locator("#upload").count() == 0  # a read key cannot upload
    page.screenshot(path=str(site.shots / "calls.png"), full_page=True)
    # newest first: the capture's calls (November 2023) after today's analyses
    assert [r["id"].rsplit("/", 1)[1] for r in all_rows[:2]] == [site.calls["context"], site.calls["example"].id]
    page.select_option("select[name=verdict]", "degraded")
    page.click("form.filters button[type=submit]")
    page.wait_for_url(re.compile(r".*verdict=degraded.*"))
    degraded = rows(page)
    assert degraded and all(r["verdict"] == "degraded" for r in degraded)
    made = [site.calls["example"], *site.calls["captured"]]
    assert len(degraded) == sum(1 for c in made if c.verdict == "degraded") + 1  # + the copy with a context
    page.goto(f"{site.base}/ui/")
    page.select_option("select[name=agent]", "alice")
    page.click("form.filters button[type=submit]")
    page.wait_for_url(re.compile(r".*agent=alice.*"))
    assert [r["id"].rsplit("/", 1)[1] for r in rows(page)] == [site.calls["context"]]
    page.goto(f"{site.base}/ui/")
    page.fill("input[name=text]", "cust3@")  # SIP To of one captured call
    page.click("form.filters button[type=submit]")
    page.wait_for_url(re.compile(r".*text=cust3.*"))
    captured3 = next(c for c in site.calls["captured"] if c.sip and "cust3@" in c.sip.to)
    assert [r["id"].rsplit("/", 1)[1] for r in rows(page)] == [captured3.id]
    # sorting by the first leg's MOS, lowest first, then highest first
    page.goto(f"{site.base}/ui/")
    page.click("th a:text('MOS leg 1')")  # first click: highest first
    page.wait_for_url(re.compile(r".*sort=mos_1.*"))
    page.click("th a:text('MOS leg 1')")
    page.wait_for_url(re.compile(r".*sort=mos_1.*dir=asc.*"))
    values = [float(r["cells"][3].split()[0]) for r in rows(page) if r["cells"][3].split()[0] != "–"]
    assert len(values) == 7 and values == sorted(values)
    page.goto(f"{site.base}/ui/?mos_min=3.0&mos_max=5")
    reports = [site.calls["example"], *site.calls["captured"]]
    lowest = {r.id: min(leg.mos.call.value for leg in r.legs if leg.mos.call) for r in reports}  # the call MOS
    expected = {i for i, m in lowest.items() if m >= 3.0}
    if lowest[reports[0].id] >= 3.0:
        expected.add(site.calls["context"])  # the copy has the example's figures
    assert {r["id"].rsplit("/", 1)[1] for r in rows(page)} == expected
    page.goto(f"{site.base}/ui/?per=25&sort=time&dir=desc&page=2")
    assert rows(page) == [] and "page 2 of 1" in page.inner_text(".pager")
    w.clean()
    context.close()


def test_call_detail_plays_audio_and_seeks_from_the_transcript(site: Site, browser: Any) -> None:
    report = site.calls["example"]
    context, w = sign_in(browser, site, site.read)
    page = w.page
    page.goto(f"{site.base}/ui/calls/{report.id}")
    assert "Dead air" in page.inner_text(".problems")  # the example's finding, in plain words, at the top
    assert "Check:" in page.inner_text(".problems")
    for i, leg in enumerate(report.legs):
        duration = page.wait_for_function(
            f"() => {{ const a = document.querySelector('audio[data-leg=\"{i}\"]'); "
            "return a && a.readyState >= 1 && a.duration > 0 ? a.duration : false; }",
            timeout=15000,
        ).json_value()
        assert duration == pytest.approx(leg.duration_s, abs=0.05)
        speech = page.locator(f"#leg-{i} svg.wave rect.band.speech")
        assert speech.count() == len(leg.speech_segments)
        assert page.locator(f"#leg-{i} svg.wave rect.band.silence").count() == len(leg.silences)
    lines = page.locator(".transcript button.seek")
    assert lines.count() == len(report.transcript) == 6
    third = report.transcript[2]
    leg = [lg.role for lg in report.legs].index(third.leg)
    lines.nth(2).click()
    at = page.wait_for_function(
        f"() => {{ const a = document.querySelector('audio[data-leg=\"{leg}\"]'); "
        f"return Math.abs(a.currentTime - {third.start_s}) < 0.5 ? a.currentTime : false; }}",
        timeout=10000,
    ).json_value()
    assert at == pytest.approx(third.start_s, abs=0.5)
    # the waveform's dead-air band sits where the finding says
    dead = next(f for f in report.findings if f.code == "dead_air")
    band = page.locator("#leg-0 svg.wave rect.band.warning").first
    x = float(band.get_attribute("x") or 0)
    assert (x - 44.0) / 948.0 * report.legs[0].duration_s == pytest.approx(dead.start_s, abs=0.5)
    page.screenshot(path=str(site.shots / "call.png"), full_page=True)
    json_link = page.get_attribute("#json-link", "href")
    assert context.request.get(f"{site.base}{json_link}").json()["id"] == report.id
    w.clean()
    context.close()


def test_captured_call_shows_the_ladder_and_the_network(site: Site, browser: Any) -> None:
    report = next(r for r in site.calls["captured"] if any(s.lost > 0 for s in r.streams))
    context, w = sign_in(browser, site, site.read, viewport={"width": 390, "height": 844})  # a phone
    page = w.page
    page.goto(f"{site.base}/ui/calls/{report.id}")
    labels = page.eval_on_selector_all("svg.ladder g.msg text", "ts => ts.map(t => t.textContent)")
    assert labels == ["INVITE", "200 OK (INVITE)", "ACK", "BYE", "200 OK (BYE)"]
    table = page.inner_text("section.network table")
    for s in report.streams:
        assert f"{s.src} → {s.dst}" in table and str(s.lost) in table
    assert page.locator("section.network svg.chart").count() == 2  # loss and jitter over time
    lossy = next(s for s in report.streams if s.lost > 0)
    assert sum(max(i.lost, 0) for i in lossy.intervals) == lossy.lost
    page.screenshot(path=str(site.shots / "captured-phone.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1  # no sideways scrolling on a phone
    page.set_viewport_size({"width": 1280, "height": 900})
    page.screenshot(path=str(site.shots / "captured.png"), full_page=True)
    w.clean()
    context.close()


def test_upload_shows_progress_and_opens_the_result(site: Site, browser: Any, tmp_path: Path) -> None:
    context, w = sign_in(browser, site, site.write)
    page = w.page
    page.click("#upload summary")
    page.set_input_files("#upload-form input[type=file]", [str(AGENT), str(CUSTOMER)])
    page.fill("#upload-form input[name=roles]", "customer,agent")  # a new analysis (other roles): a real job
    seen: list[tuple[str, int, str]] = []

    def record(route: Any) -> None:  # the answers the page's script gets, read on their way to it
        response = route.fetch()
        seen.append((route.request.url, response.status, response.text()))
        route.fulfill(response=response)

    page.route(re.compile(r".*/ui/jobs/.*"), record)  # (an upload's body cannot pass through a route)
    page.on("response", lambda r: seen.append((r.url, r.status, r.text())) if r.url.endswith("/ui/upload") else None)
    page.click("#upload-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/ui/calls/[0-9a-f]{16}$"), timeout=120000)
    # the upload started a job (202), whose progress the page followed until it was done
    assert seen[0][0].endswith("/ui/upload") and seen[0][1] == 202
    job = json.loads(seen[0][2])["job_id"]
    progress = [json.loads(text)["status"] for url, status, text in seen[1:] if f"/ui/jobs/{job}" in url]
    assert progress and progress[-1] == "done" and set(progress) <= {"queued", "running", "done"}
    expected = recording_key([AGENT, CUSTOMER], site.settings, ["customer", "agent"])[:16]
    assert page.url.endswith(f"/ui/calls/{expected}")
    assert page.locator("audio").count() == 2
    page.screenshot(path=str(site.shots / "uploaded.png"), full_page=True)
    # the assessment button (write keys): the offline summary when no model is configured
    page.click("#assess-form button")
    page.wait_for_function("() => document.getElementById('assessment').textContent.includes('Offline summary')")
    w.clean()
    context.close()


def test_trends_by_agent_and_carrier(site: Site, browser: Any) -> None:
    context, w = sign_in(browser, site, site.read)
    page = w.page
    page.goto(f"{site.base}/ui/trends?by=agent")
    keys = page.eval_on_selector_all("table.trends tbody tr td:first-child", "tds => tds.map(t => t.innerText)")
    assert keys == ["(unknown)", "alice"]  # today's calls: the example without context, its copy with one
    page.screenshot(path=str(site.shots / "trends.png"), full_page=True)
    page.click("table.trends tbody tr:has-text('alice') a.worst")
    page.wait_for_url(f"{site.base}/ui/calls/{site.calls['context']}")
    assert "agent alice" in page.inner_text(".meta")
    page.goto(f"{site.base}/ui/trends?by=carrier&since=2023-11-14&until=2023-11-15&metric=calls")
    carriers = page.eval_on_selector_all("table.trends tbody tr td:first-child", "tds => tds.map(t => t.innerText)")
    assert sorted(carriers) == sorted(r.sip.to.split("@")[1].rstrip(">") for r in site.calls["captured"] if r.sip)
    assert page.locator("svg.chart path.line").count() == len(carriers)
    w.clean()
    context.close()


def test_docs_work_offline(site: Site, browser: Any) -> None:
    context = browser.new_context()
    w = Watched(context, site.base)
    w.page.goto(f"{site.base}/docs")
    w.page.wait_for_selector(".swagger-ui .info .title", timeout=15000)
    assert "callqa" in w.page.inner_text(".swagger-ui .info .title")
    assert w.page.locator(".opblock").count() > 5  # the operations were read from /openapi.json and drawn
    w.page.screenshot(path=str(site.shots / "docs.png"))
    w.clean()
    context.close()
