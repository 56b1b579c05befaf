"""Every module's SQL on both stores: the SQLite file (the default) and PostgreSQL (a database of its own, skipped
without a server unless CALLQA_REQUIRE_POSTGRES is set): reports with their index columns and filters, the call
list, jobs, API keys, web sessions, ViciDial bookkeeping, conversations, the upsert style of new modules, and the
schema's migrations."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_callindex import NOW, _report

from callqa.ai.assistant import Assistant
from callqa.api.keys import KeyStore
from callqa.callindex import CallIndex, ListQuery
from callqa.config import LlmSettings
from callqa.db import Database, contains
from callqa.errors import StoreError
from callqa.report import CallContext
from callqa.service.jobs import JobSpec, JobStore, Source
from callqa.service.vicidial import Bookkeeping
from callqa.store import MIGRATIONS, CallQuery, Store
from callqa.web.session import Sessions


@pytest.fixture
def store(db_target: str | Path) -> Store:
    s = Store(db_target)
    s.put(_report(1, "degraded", (2.1, 3.9), ("low_mos",), sip_to="<sip:cust@trunk-b.example>",
                  sip_from="<sip:agent_1@pbx.local>"), now=NOW - 50)  # fmt: skip
    s.put(_report(2, "failed", (None, 1.2), ("one_way_audio", "no_audio")), now=NOW - 40)
    ctx = CallContext(recording_id=7, agent="alice", campaign_id="SALES", carrier="trunk-a", direction="outbound",
                      call_date=datetime.fromtimestamp(NOW - 7200, UTC))  # fmt: skip
    s.put(_report(3, "good", (4.1, 4.0)).model_copy(update={"context": ctx}), now=NOW - 30)
    return s


def test_reports_filters_and_the_call_list(store: Store) -> None:
    assert store.get("0000000000000001") is not None and store.get("00000") is None  # ambiguous prefix
    rows = store.search(CallQuery())
    assert [r.id[-1] for r in rows] == ["2", "1", "3"]  # by when the call happened: analysis, SIP start, dialer start
    assert rows[1].when == pytest.approx(NOW - 3600) and rows[2].when == pytest.approx(NOW - 7200)
    assert rows[0].findings == ("one_way_audio", "no_audio")
    assert [r.id[-1] for r in store.search(CallQuery(finding="no_audio"))] == ["2"]
    assert store.search(CallQuery(finding="no_audi")) == []  # a whole code, not a part of one
    assert store.search(CallQuery(finding="no%audio")) == []  # LIKE's wildcards are literal
    assert [r.id[-1] for r in store.search(CallQuery(text="AGENT_1"))] == ["1"]
    assert store.search(CallQuery(text="agentX1")) == []  # '_' is not a wildcard
    assert [r.id[-1] for r in store.search(CallQuery(agent="alice", campaign="SALES"))] == ["3"]
    assert [r.id[-1] for r in store.search(CallQuery(carrier="trunk-b.example"))] == ["1"]  # the SIP host as trunk
    assert [r.id[-1] for r in store.search(CallQuery(since=NOW - 4000, until=NOW))] == ["2", "1"]
    listed = store.list(10)
    assert [c.id[-1] for c in listed] == ["3", "2", "1"] and listed[0].context and listed[0].context["agent"] == "alice"
    page = CallIndex(store).page(ListQuery(sort="mos", descending=False))
    assert [c.id[-1] for c in page.calls] == ["2", "1", "3"] and page.total == 3
    assert page.facets["agent"] == ["alice"] and page.calls[0].mos == pytest.approx(1.2)
    store.put(_report(2, "good", (3.0, 3.1)), now=NOW)  # analysed again: replaced, not added
    assert [c.id[-1] for c in store.list()].count("2") == 1
    assert store.search(CallQuery(finding="no_audio")) == []
    assert store.writable()


def test_rows_written_without_the_index_are_indexed_once(store: Store) -> None:
    with store.connect() as db:
        db.execute("INSERT INTO reports (id, cache_key, created_at, source, verdict, duration_s, report) "
                   "SELECT '00000000000000fe', 'kfe', ?, source, verdict, duration_s, report FROM reports WHERE id = ?",
                   (NOW + 5, f"{1:016x}"))  # fmt: skip
        db.execute("INSERT INTO reports (id, cache_key, created_at, source, verdict, duration_s, report) "
                   "VALUES ('00000000000000ff', 'kff', ?, 'x', 'good', 1.0, '{not json')", (NOW,))  # fmt: skip
    assert store.index_pending() == 2 and store.index_pending() == 0
    assert [r.id[-1] for r in store.search(CallQuery(finding="low_mos"))] == ["1", "e"]  # same SIP start: by id
    assert CallIndex(store).page(ListQuery()).total == 4  # the unreadable one is left out


def test_jobs_keys_sessions_bookkeeping_and_conversations(store: Store) -> None:
    jobs = JobStore(store)
    job = jobs.create(JobSpec(source=Source(url="https://example.org/a.wav")), "k1")
    jobs.update(job.id, status="running", attempts=1)
    assert jobs.counts() == {"running": 1} and [j.id for j in jobs.unfinished()] == [job.id]
    assert jobs.finish(job.id, "done", report_id="0000000000000001", assessment={"summary": "ok"})
    assert not jobs.finish(job.id, "failed", error="late")  # the first to end decides
    done = jobs.get(job.id)
    assert done is not None and (done.status, done.attempts, done.assessment) == ("done", 1, {"summary": "ok"})
    assert jobs.delete_finished(before=done.updated_at + 1) == 1 and jobs.get(job.id) is None

    keys = KeyStore(store)
    token = keys.create("write", "ops")
    key = keys.verify(token)
    assert key is not None and key.scope == "write" and keys.verify(token + "x") is None
    sessions = Sessions(store)
    cookie = sessions.create(key.id, now=NOW)
    assert (s := sessions.get(cookie, now=NOW + 1)) is not None and s.can_write
    assert keys.revoke(key.id) and sessions.get(cookie, now=NOW + 1) is None  # a revoked key ends its sessions

    book = Bookkeeping(store, "dialer-a")
    book.mark(4_000_000_000, "done", "fp1", "0000000000000003")  # ids beyond 32 bits (int unsigned on the dialer)
    book.mark(4_000_000_000, "failed", "fp2", error="gone")  # the same row again: updated in place
    assert book.fingerprints() == {4_000_000_000: ("failed", "fp2")}
    assert book.get(4_000_000_000) == ("failed", "fp2", None, "gone")

    assistant = Assistant(LlmSettings(provider="offline"), store, None)
    assistant.save_conversation("c1", "k1", [{"role": "user", "content": "why? 100% sure"}])
    assistant.save_conversation("c1", "k1", [{"role": "user", "content": "again"}])
    assert assistant.load_conversation("c1", "k1") == [{"role": "user", "content": "again"}]
    assert assistant.load_conversation("c1", "other key") is None


def test_a_new_modules_upserts_and_placeholders(store: Store) -> None:
    """What a module adding its own table writes: portable DDL, ``?`` placeholders, ON CONFLICT upserts."""
    with store.connect() as db:
        db.executescript("CREATE TABLE IF NOT EXISTS rollup (bucket DOUBLE PRECISION NOT NULL, grp TEXT NOT NULL, "
                         "n INTEGER NOT NULL, PRIMARY KEY (bucket, grp));")  # fmt: skip
        sql = ("INSERT INTO rollup (bucket, grp, n) VALUES (?, ?, ?) "
               "ON CONFLICT (bucket, grp) DO UPDATE SET n = rollup.n + excluded.n")  # fmt: skip
        db.executemany(sql, [(NOW, "a?b", 1), (NOW, "a?b", 2), (NOW, "100%", 5)])
    with store.connect() as db:
        mean = db.execute("SELECT avg(n), sum(n), count(*) FROM rollup").fetchone()
        assert tuple(mean) == (4.0, 8, 2) and isinstance(mean[0], float)  # the same types from both engines
        rows = db.execute("SELECT grp, n, 'literal ? and %' FROM rollup WHERE grp LIKE ? ESCAPE '\\' ORDER BY grp",
                          (contains("?"),)).fetchall()  # fmt: skip
        assert [tuple(r) for r in rows] == [("a?b", 3, "literal ? and %")]
    with pytest.raises(StoreError), store.connect() as db:  # a failed statement rolls the transaction back
        db.execute("INSERT INTO rollup (bucket, grp, n) VALUES (?, ?, ?)", (1.0, "x", 1))
        db.execute("INSERT INTO rollup (bucket, grp, n) VALUES (?, ?, ?)", (1.0, "x", 1))
    with store.connect() as db:
        assert db.execute("SELECT count(*) FROM rollup WHERE grp = ?", ("x",)).fetchone()[0] == 0


def test_schema_version_and_a_second_open(db_target: str | Path) -> None:
    Store(db_target)
    Store(db_target)  # nothing to do the second time
    with Database(db_target).connect() as db:
        assert db.execute("SELECT max(version) FROM schema_version").fetchone()[0] == len(MIGRATIONS)
        assert db.execute("SELECT count(*) FROM schema_version").fetchone()[0] == len(MIGRATIONS)
        assert {"t", "mos", "findings", "agent", "context"} <= db.columns("reports")


def test_a_store_of_the_first_release_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as raw:  # the first schema, and a report written by it
        raw.executescript("""CREATE TABLE reports (id TEXT PRIMARY KEY, cache_key TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL, source TEXT NOT NULL, verdict TEXT NOT NULL, duration_s REAL NOT NULL,
            report TEXT NOT NULL); CREATE TABLE call_index_v1 (id TEXT PRIMARY KEY);""")  # fmt: skip
        r = _report(1, "degraded", (2.1, 3.9), ("low_mos",))
        raw.execute("INSERT INTO reports VALUES (?, ?, ?, 'a.wav', ?, ?, ?)",
                    (r.id, r.cache_key, NOW, r.verdict, r.duration_s, r.model_dump_json()))  # fmt: skip
    store = Store(path)
    assert [(c.id, c.mos) for c in CallIndex(store).page(ListQuery()).calls] == [(r.id, pytest.approx(2.1))]
    with store.connect() as db:
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'call_index_v1'").fetchone()[0] == 0


def test_an_unreachable_server_is_a_store_error(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("psycopg_pool", reason="PostgreSQL needs the 'scale' extra")
    monkeypatch.setenv("CALLQA_DB_WAIT_S", "1")  # not the 30 s a restarting server is given
    from callqa.db import close_pools

    try:
        with pytest.raises(StoreError, match="cannot open the result store") as exc:
            Store("postgresql://nobody:secret@127.0.0.1:1/none?connect_timeout=1")
        assert "secret" not in str(exc.value)
    finally:
        close_pools()  # its pool would go on trying to connect
