"""SQLite store (WAL) for reports: the cache and the history that ``callqa list``/``show`` read.

A report is cached under its cache key (audio content hash + analysis settings + model versions) and served
while it is younger than the configured TTL; ``id`` is a short prefix of that key, so the same audio analysed
the same way keeps its id.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

from pydantic import ValidationError

from callqa.errors import StoreError
from callqa.private import private_file
from callqa.report import CallReport

SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    id          TEXT PRIMARY KEY,
    cache_key   TEXT NOT NULL UNIQUE,
    created_at  REAL NOT NULL,
    source      TEXT NOT NULL,
    verdict     TEXT NOT NULL,
    duration_s  REAL NOT NULL,
    report      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_created ON reports (created_at);
"""

# columns added after the first release: added to an existing store when missing (no migration step), filled from
# each report's call context (who took the call) and start time, so listings filter on them with plain SQL
ADDED_COLUMNS = {"started_at": "REAL", "agent": "TEXT", "campaign": "TEXT", "carrier": "TEXT", "direction": "TEXT"}
ADDED_INDEXES = ("agent", "campaign", "carrier", "started_at")


# when a call happened: the SIP start of captured calls or the dialer's start time (the started_at column, or the
# JSON of reports stored before it existed), else when it was analysed (epoch seconds)
_WHEN = "COALESCE(started_at, CAST(strftime('%s', json_extract(report, '$.sip.started_at')) AS REAL), created_at)"
_FROM = "COALESCE(json_extract(report, '$.sip.from'), '')"
_TO = "COALESCE(json_extract(report, '$.sip.to'), '')"
_CODE = "json_extract(value, '$.code')"
_CODES = f"(SELECT group_concat({_CODE}) FROM json_each(report, '$.findings'))"


@dataclass(frozen=True)
class StoredCall:
    id: str
    created_at: float
    source: str
    verdict: str
    duration_s: float
    context: dict[str, object] | None = None


@dataclass(frozen=True)
class CallQuery:
    """A typed, parameterised filter over stored calls (what the API and the LLM tools may ask)."""

    verdict: str | None = None
    finding: str | None = None  # a finding code present in the call
    since: float | None = None  # epoch seconds, on the call's start (SIP) or analysis time
    until: float | None = None
    text: str | None = None  # substring of the source, SIP From or SIP To
    agent: str | None = None  # call context (ViciDial): the agent's user, campaign or in-group, carrier, direction
    campaign: str | None = None
    carrier: str | None = None
    direction: str | None = None
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True)
class CallRow:
    id: str
    when: float
    verdict: str
    duration_s: float
    source: str
    sip_from: str
    sip_to: str
    findings: tuple[str, ...]
    agent: str = ""
    campaign: str = ""
    carrier: str = ""
    direction: str = ""


class Store:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            private_file(self.path)  # 0600, and so are the WAL and shared-memory files SQLite makes beside it
            with self._connect() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(SCHEMA)
                _add_columns(db)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the result store {self.path}: {exc}") from exc

    def connect(self) -> AbstractContextManager[sqlite3.Connection]:
        """One connection and transaction on the store's database (for the tables other modules keep there)."""
        return self._connect()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30.0)
        try:
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        finally:
            db.close()

    def cached(self, cache_key: str, ttl_s: float, now: float | None = None,
               any_call: bool = False) -> CallReport | None:  # fmt: skip
        """The report for this key if it is younger than ``ttl_s``, else None. A report stored for a call with a
        context (a dialer's row) is found only with ``any_call``: its analysis is reused, never its context."""
        now = time.time() if now is None else now
        where = "(cache_key = ? OR cache_key LIKE ?)" if any_call else "cache_key = ?"
        args: tuple[object, ...] = (cache_key, _stored_key(cache_key, "%")) if any_call else (cache_key,)
        with self._connect() as db:
            row = db.execute(
                f"SELECT report FROM reports WHERE {where} AND created_at > ? ORDER BY created_at DESC LIMIT 1",
                (*args, now - ttl_s),
            ).fetchone()
        return self._load(row[0]) if row else None

    def put(self, report: CallReport, now: float | None = None) -> None:
        """Store a report under its id (replacing an earlier one). A report with a context is one call of a
        dialer: several may share an analysis (identical audio), so its cache key is stored with its id."""
        now = time.time() if now is None else now
        source = " + ".join(leg.source for leg in report.legs)
        ctx = report.context
        key = report.cache_key if ctx is None else _stored_key(report.cache_key, report.id)
        when = report.sip.started_at if report.sip and report.sip.started_at else ctx.call_date if ctx else None
        started = None if when is None else (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
        try:
            with self._connect() as db:
                db.execute(
                    "INSERT OR REPLACE INTO reports (id, cache_key, created_at, source, verdict, duration_s, report,"
                    " started_at, agent, campaign, carrier, direction) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (report.id, key, now, source, report.verdict, report.duration_s, report.model_dump_json(),
                     started, ctx and ctx.agent or None, ctx and ctx.campaign_id or None, ctx and ctx.carrier or None,
                     ctx and ctx.direction or None),
                )  # fmt: skip
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to the result store {self.path}: {exc}") from exc

    def get(self, id_prefix: str) -> CallReport | None:
        """A report by id or unambiguous id prefix (expired reports stay readable)."""
        text = self.get_json(id_prefix)
        return None if text is None else self._load(text)

    def get_json(self, id_prefix: str) -> str | None:
        """The stored JSON of a report, as written (what the API serves without re-encoding it)."""
        pattern = id_prefix.replace("\\", "").replace("%", "").replace("_", "") + "%"
        with self._connect() as db:
            rows = db.execute("SELECT report FROM reports WHERE id LIKE ? LIMIT 2", (pattern,)).fetchall()
        return rows[0][0] if len(rows) == 1 else None

    def list(self, limit: int = 50, verdict: str | None = None, query: CallQuery | None = None) -> list[StoredCall]:
        """Stored reports, newest analysed first, with their call context; ``query``'s filters apply."""
        where, args = _where(query or CallQuery(verdict=verdict))
        sql = "SELECT id, created_at, source, verdict, duration_s, json_extract(report, '$.context') FROM reports"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC LIMIT ?"
        with self._connect() as db:
            rows = db.execute(sql, (*args, limit)).fetchall()
        return [StoredCall(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]) if r[5] else None) for r in rows]

    def search(self, q: CallQuery) -> builtins.list[CallRow]:
        """Stored calls matching ``q``, newest first. Every value is a bound parameter."""
        where, args = _where(q)
        columns = (
            f"id, {_WHEN} AS t, verdict, duration_s, source, {_FROM}, {_TO}, COALESCE({_CODES}, ''), "
            "COALESCE(agent, ''), COALESCE(campaign, ''), COALESCE(carrier, ''), COALESCE(direction, '')"
        )
        sql = f"SELECT {columns} FROM reports"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY t DESC LIMIT ? OFFSET ?"
        with self._connect() as db:
            rows = db.execute(sql, (*args, max(0, q.limit), max(0, q.offset))).fetchall()
        return [CallRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], tuple(c for c in r[7].split(",") if c), *r[8:])
                for r in rows]  # fmt: skip

    def writable(self) -> bool:
        """True when a write lock can be taken (the file system is writable and no one holds the lock long)."""
        try:
            db = sqlite3.connect(self.path, timeout=2.0, isolation_level=None)
            try:
                db.execute("BEGIN IMMEDIATE")
                db.execute("ROLLBACK")
            finally:
                db.close()
            return True
        except sqlite3.Error:
            return False

    @staticmethod
    def _load(text: str) -> CallReport | None:
        try:
            return CallReport.model_validate_json(text)
        except ValidationError:
            return None  # written by an incompatible version: treat as a miss


def _where(q: CallQuery) -> tuple[list[str], list[object]]:
    """SQL conditions (joined with AND) and their bound values for a query's filters."""
    where: list[str] = []
    args: list[object] = []
    if q.verdict:
        where.append("verdict = ?")
        args.append(q.verdict)
    if q.finding:
        where.append(f"EXISTS (SELECT 1 FROM json_each(report, '$.findings') WHERE {_CODE} = ?)")
        args.append(q.finding)
    if q.since is not None:
        where.append(f"{_WHEN} >= ?")
        args.append(q.since)
    if q.until is not None:
        where.append(f"{_WHEN} < ?")
        args.append(q.until)
    if q.text:
        where.append(f"(instr(lower(source), ?) > 0 OR instr(lower({_FROM}), ?) > 0 OR instr(lower({_TO}), ?) > 0)")
        args += [q.text.lower()] * 3
    for column, value in (
        ("agent", q.agent),
        ("campaign", q.campaign),
        ("carrier", q.carrier),
        ("direction", q.direction),
    ):
        if value:
            where.append(f"{column} = ?")
            args.append(value)
    return where, args


def _stored_key(cache_key: str, report_id: str) -> str:
    """The cache_key column of a report with a context: its analysis key and its own id (the column is unique)."""
    return f"{cache_key}@{report_id}"


def _add_columns(db: sqlite3.Connection) -> None:
    """Columns and indexes of later versions, added to a store made before them (several processes may race)."""
    have = {row[1] for row in db.execute("PRAGMA table_info(reports)")}
    for name, kind in ADDED_COLUMNS.items():
        if name not in have:
            try:
                db.execute(f"ALTER TABLE reports ADD COLUMN {name} {kind}")
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):
                    raise
    for name in ADDED_INDEXES:
        db.execute(f"CREATE INDEX IF NOT EXISTS reports_{name} ON reports ({name})")
