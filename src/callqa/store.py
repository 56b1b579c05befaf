"""SQLite store (WAL) for reports: the cache and the history that ``callqa list``/``show`` read.

A report is cached under its cache key (audio content hash + analysis settings + model versions) and served
while it is younger than the configured TTL; ``id`` is a short prefix of that key, so the same audio analysed
the same way keeps its id.
"""

from __future__ import annotations

import builtins
import sqlite3
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
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


# when a call happened: the SIP start for captured calls, else when it was analysed (epoch seconds)
_WHEN = "COALESCE(CAST(strftime('%s', json_extract(report, '$.sip.started_at')) AS REAL), created_at)"
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


@dataclass(frozen=True)
class CallQuery:
    """A typed, parameterised filter over stored calls (what the API and the LLM tools may ask)."""

    verdict: str | None = None
    finding: str | None = None  # a finding code present in the call
    since: float | None = None  # epoch seconds, on the call's start (SIP) or analysis time
    until: float | None = None
    text: str | None = None  # substring of the source, SIP From or SIP To
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


class Store:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            private_file(self.path)  # 0600, and so are the WAL and shared-memory files SQLite makes beside it
            with self._connect() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(SCHEMA)
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

    def cached(self, cache_key: str, ttl_s: float, now: float | None = None) -> CallReport | None:
        """The report for this key if it is younger than ``ttl_s``, else None."""
        now = time.time() if now is None else now
        with self._connect() as db:
            row = db.execute(
                "SELECT report FROM reports WHERE cache_key = ? AND created_at > ?", (cache_key, now - ttl_s)
            ).fetchone()
        return self._load(row[0]) if row else None

    def put(self, report: CallReport, now: float | None = None) -> None:
        now = time.time() if now is None else now
        source = " + ".join(leg.source for leg in report.legs)
        try:
            with self._connect() as db:
                db.execute(
                    "INSERT OR REPLACE INTO reports (id, cache_key, created_at, source, verdict, duration_s, report) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (report.id, report.cache_key, now, source, report.verdict, report.duration_s,
                     report.model_dump_json()),
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

    def list(self, limit: int = 50, verdict: str | None = None) -> list[StoredCall]:
        query = "SELECT id, created_at, source, verdict, duration_s FROM reports"
        args: tuple[object, ...] = ()
        if verdict:
            query += " WHERE verdict = ?"
            args = (verdict,)
        query += " ORDER BY created_at DESC LIMIT ?"
        with self._connect() as db:
            return [StoredCall(*row) for row in db.execute(query, (*args, limit))]

    def search(self, q: CallQuery) -> builtins.list[CallRow]:
        """Stored calls matching ``q``, newest first. Every value is a bound parameter."""
        where: builtins.list[str] = []
        args: builtins.list[object] = []
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
        columns = f"id, {_WHEN} AS t, verdict, duration_s, source, {_FROM}, {_TO}, COALESCE({_CODES}, '')"
        sql = f"SELECT {columns} FROM reports"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY t DESC LIMIT ? OFFSET ?"
        with self._connect() as db:
            rows = db.execute(sql, (*args, max(0, q.limit), max(0, q.offset))).fetchall()
        return [CallRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], tuple(c for c in r[7].split(",") if c)) for r in rows]

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
