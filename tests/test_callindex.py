"""The call index behind the call list and trends: kept in step with the stored reports, filtered, sorted and
paged; call context read from the report when a source provides it; trends per group and over time."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from callqa.api.keys import KeyStore
from callqa.audio.envelope import peak_envelope, wav_envelope
from callqa.audio.wav import write_wav
from callqa.callindex import CallEntry, CallIndex, ListQuery, context_of
from callqa.report import CallReport, Dnsmos, Finding, LegReport, Levels, Mos, SipInfo
from callqa.store import Store
from callqa.trends import Figures, compute
from callqa.web import session as sessions

NOW = datetime(2026, 3, 2, 10, 30, tzinfo=UTC).timestamp()


def _leg(role: str, mos: float | None) -> LegReport:
    return LegReport(role=role, source=f"{role}.wav", sample_rate=8000, duration_s=60.0,  # type: ignore[arg-type]
                     levels=Levels(rms_dbfs=-20, peak_dbfs=-3, clipping_ratio=0), speech_ratio=0.5, speech_s=30,
                     speech_segments=[], silences=[],
                     mos=Mos(dnsmos=Dnsmos(sig=3, bak=3, ovrl=mos, p808=3) if mos is not None else None))  # fmt: skip


def _report(i: int, verdict: str = "good", mos: tuple[float | None, float | None] = (3.5, 3.2),
            codes: tuple[str, ...] = (), sip_to: str = "", sip_from: str = "") -> CallReport:  # fmt: skip
    sip = SipInfo(call_id=f"c{i}", from_=sip_from, to=sip_to,
                  started_at=datetime.fromtimestamp(NOW - i * 3600, UTC)) if sip_to else None  # fmt: skip
    return CallReport(
        id=f"{i:016x}", created_at=datetime.fromtimestamp(NOW, UTC), verdict=verdict, duration_s=60.0 + i,  # type: ignore[arg-type]
        legs=[_leg("agent", mos[0]), _leg("customer", mos[1])], source="capture" if sip else "recording", sip=sip,
        findings=[Finding(code=c, severity="warning", message=c) for c in codes], cache_key=f"key{i}",
    )  # fmt: skip


COLUMNS = "(id, cache_key, created_at, source, verdict, duration_s, report)"  # the reports table has more columns now


def _with_context(store: Store, report: CallReport, context: dict[str, str], when: float) -> None:
    data = json.loads(report.model_dump_json())
    data["context"] = {"recording_id": 1, **context}  # a valid CallContext
    with store.connect() as db:  # written by plain SQL, without the index columns (as an older version did)
        row = (report.id, report.cache_key, when, "x", report.verdict, report.duration_s, json.dumps(data))
        db.execute("DELETE FROM reports WHERE id = ?", (report.id,))
        db.execute(f"INSERT INTO reports {COLUMNS} VALUES (?, ?, ?, ?, ?, ?, ?)", row)


@pytest.fixture
def store(db_target: str | Path) -> Store:
    """The same calls in a SQLite store and in a PostgreSQL one."""
    s = Store(db_target)
    s.put(_report(1, "degraded", (2.1, 3.9), ("low_mos",), sip_to="<sip:cust@trunk-b.example>",
                  sip_from="<sip:agent@pbx.local>"), now=NOW - 50)  # fmt: skip
    s.put(_report(2, "failed", (None, 1.2), ("one_way_audio", "no_audio")), now=NOW - 40)
    s.put(_report(3, "good", (4.1, 4.0)), now=NOW - 30)
    _with_context(
        s,
        _report(4, "degraded", (3.0, 2.9), ("dead_air",)),
        {"agent": "alice", "campaign_id": "SALES", "carrier": "trunk-a", "direction": "outbound"},
        NOW - 20,
    )
    _with_context(s, _report(5, "good", (3.8, 3.6)), {"agent": "bob", "campaign_id": "SALES"}, NOW - 10)
    return s


def ids(page: object) -> list[str]:
    return [c.id[-1] for c in page.calls]  # type: ignore[attr-defined]


def test_filters_sort_and_pages(store: Store) -> None:
    index = CallIndex(store)
    assert ids(index.page(ListQuery())) == ["5", "4", "3", "2", "1"]  # newest first (call 1: its SIP start)
    assert ids(index.page(ListQuery(verdict="degraded"))) == ["4", "1"]
    assert ids(index.page(ListQuery(finding="no_audio"))) == ["2"]
    assert ids(index.page(ListQuery(finding="audio"))) == []  # whole codes only
    assert ids(index.page(ListQuery(agent="alice"))) == ["4"]
    assert ids(index.page(ListQuery(campaign="SALES"))) == ["5", "4"]
    assert ids(index.page(ListQuery(carrier="trunk-b.example"))) == ["1"]  # SIP To host of the captured call
    assert ids(index.page(ListQuery(text="TRUNK-B"))) == ["1"]
    assert ids(index.page(ListQuery(text="agent.wav"))) == ["5", "4", "3", "2", "1"]
    assert ids(index.page(ListQuery(mos_min=3.0, mos_max=3.7))) == ["5"]  # the call's MOS: its lowest leg
    assert ids(index.page(ListQuery(sort="mos_1", descending=False))) == ["1", "4", "5", "3", "2"]  # no MOS last
    assert ids(index.page(ListQuery(sort="mos_1", descending=True))) == ["3", "5", "4", "1", "2"]
    assert ids(index.page(ListQuery(sort="verdict"))) == ["2", "4", "1", "5", "3"]
    assert ids(index.page(ListQuery(sort="duration", descending=False))) == ["1", "2", "3", "4", "5"]
    page = index.page(ListQuery(limit=2, offset=2))
    assert ids(page) == ["3", "2"] and page.total == 5
    assert page.facets == {"agent": ["alice", "bob"], "campaign": ["SALES"], "carrier": ["trunk-a", "trunk-b.example"],
                           "direction": ["outbound"]}  # fmt: skip


def test_index_follows_added_replaced_and_deleted_reports(store: Store) -> None:
    index = CallIndex(store)
    # put() writes a report with its index columns; the two written by plain SQL are indexed once, on first use
    assert index.sync() == 2 and index.sync() == 0
    store.put(_report(3, "failed", (1.5, 1.5), ("no_audio",)), now=NOW)  # analysed again: replaced
    store.put(_report(6), now=NOW + 1)
    assert index.sync() == 0
    assert ids(index.page(ListQuery(verdict="failed"))) == ["3", "2"]
    with store.connect() as db:
        db.execute("DELETE FROM reports WHERE id = ?", (f"{6:016x}",))
    assert "6" not in ids(index.page(ListQuery()))


def test_context_from_the_report_or_the_sip_hosts() -> None:
    sip = {"from": "<sip:+4420@carrier-in.example:5060>", "to": "<sip:agent7@pbx.local>"}
    assert context_of({"sip": sip}) == {"agent": "", "campaign": "", "carrier": "pbx.local", "direction": ""}
    got = context_of({"sip": sip, "context": {"direction": "inbound", "agent": 7}})
    assert got == {"agent": "7", "campaign": "", "carrier": "carrier-in.example", "direction": "inbound"}
    assert context_of({"sip": sip, "context": {"carrier": "BT"}})["carrier"] == "BT"
    assert context_of({"context": "not an object"}) == {"agent": "", "campaign": "", "carrier": "", "direction": ""}


def _entry(i: int, t: float, agent: str, verdict: str, mos: float | None, codes: tuple[str, ...]) -> CallEntry:
    return CallEntry(f"{i:016x}", t, verdict, 60.0, "recording", "", "", "", codes, ("a", "b"), mos, mos, mos, None,
                     agent, "", "", "")  # fmt: skip


def test_trends_per_group_over_time_with_the_worst_calls() -> None:
    day = 86400.0
    start = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
    entries = [
        _entry(1, start + 3600, "alice", "good", 4.0, ()),
        _entry(2, start + 7200, "alice", "failed", 1.5, ("one_way_audio",)),
        _entry(3, start + day + 60, "alice", "degraded", 2.2, ("low_mos", "dead_air")),
        _entry(4, start + day + 120, "", "degraded", 3.0, ("dead_air",)),
        _entry(5, start + 2 * day + 5, "bob", "good", None, ()),
        _entry(6, start + 9 * day, "bob", "failed", 1.0, ()),  # outside the range
    ]
    t = compute(entries, "agent", start, start + 3 * day)
    assert t.bucket_s == day and [g.key for g in t.groups] == ["alice", "(unknown)", "bob"]
    alice = t.groups[0]
    assert alice.figures == Figures(calls=3, one_way=1, dead_air=1, low_mos=1, median_mos=2.2)
    assert alice.figures.one_way_share == pytest.approx(1 / 3)
    assert [b.figures.calls for b in alice.series] == [2, 1, 0]
    assert [b.figures.median_mos for b in alice.series] == [2.75, 2.2, None]
    assert [c.id[-1] for c in alice.worst] == ["2", "3", "1"]  # failed, then degraded, then good
    assert t.overall.calls == 5 and t.overall.median_mos == 2.6
    hours = compute(entries, "hour", start, start + day)
    assert hours.bucket_s == 3600.0 and [g.key for g in hours.groups] == ["01:00", "02:00"]
    with pytest.raises(ValueError, match="group by"):
        compute(entries, "colour", start, start + day)  # type: ignore[arg-type]


def test_sessions_end_with_sign_out_expiry_or_a_revoked_key(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    keys = KeyStore(store)
    token = keys.create("read", "x")
    key = keys.verify(token)
    assert key is not None
    live = sessions.Sessions(store)
    cookie = live.create(key.id, now=1000.0)
    got = live.get(cookie, now=1001.0)
    assert got is not None and got.scope == "read" and not got.can_write
    assert got.check_csrf(got.csrf) and not got.check_csrf("x") and not got.check_csrf(None)
    assert live.get(cookie, now=1000.0 + sessions.TTL_S + 1) is None
    assert live.get(cookie + "x", now=1001.0) is None and live.get(None) is None
    keys.revoke(key.id)
    assert live.get(cookie, now=1001.0) is None
    other = live.create(key.id, now=1000.0)
    live.end(other)
    assert live.get(other, now=1001.0) is None
    with store.connect() as db:  # only hashes are stored
        assert all(cookie not in row[0] for row in db.execute("SELECT hash FROM ui_sessions"))


def test_envelope_of_the_kept_wav_block_by_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rate = 8000
    x = np.zeros(rate * 3)
    x[rate : rate + 800] = 0.5 * np.sin(np.arange(800) / 3)  # a burst in the second second
    env = peak_envelope(x, 30)
    assert env[:10].max() == -90.0 and env[10] == pytest.approx(20 * np.log10(0.5), abs=0.1)
    path = write_wav(tmp_path / "leg.wav", x, rate)
    monkeypatch.setattr("callqa.audio.envelope.BLOCK_FRAMES", 777)  # slices cut across blocks
    got, duration = wav_envelope(path, 30)
    assert duration == 3.0
    assert got == pytest.approx(peak_envelope(np.round(x * 32767) / 32768, 30), abs=0.01)


def test_an_unreadable_report_is_left_out_and_not_read_again(store: Store) -> None:
    index = CallIndex(store)
    with store.connect() as db:
        db.execute(f"INSERT INTO reports {COLUMNS} VALUES ('00000000000000ff', 'kff', ?, 'x', 'good', 1.0, "
                   "'{not json')", (NOW,))  # fmt: skip
    assert index.sync() == 3
    assert "f" not in ids(index.page(ListQuery())) and index.page(ListQuery()).total == 5
    with store.connect() as db:  # a new report arrives: only it is read
        db.execute(f"INSERT INTO reports {COLUMNS} SELECT '00000000000000fe', 'kfe', ?, source, verdict, duration_s, "
                   "report FROM reports WHERE id = ?", (NOW + 5, f"{3:016x}"))  # fmt: skip
    assert index.sync() == 1 and index.page(ListQuery()).total == 6


def test_the_site_is_the_capture_site_else_the_dialer_server(store: Store) -> None:
    """A call sent by a capture site is indexed (and rolled up) under that site's name; a dialer's call under
    the server that recorded it."""
    sent = _report(7).model_copy(update={"site": "branch-lyon"})
    store.put(sent, now=NOW + 2)
    _with_context(store, _report(8), {"agent": "carol", "server_ip": "10.9.0.4"}, NOW + 3)
    index = CallIndex(store)
    sites = {e.id: e.site for e in index.entries(0, NOW + 10**6)}
    assert sites[sent.id] == "branch-lyon" and sites[f"{8:016x}"] == "10.9.0.4"
    assert sites[f"{3:016x}"] == ""
