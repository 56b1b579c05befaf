"""SQLite store (WAL) for reports: the cache and the history that ``callqa list``/``show`` read.

A report is cached under its cache key (audio content hash + analysis settings + model versions) and served
while it is younger than the configured TTL; ``id`` is a short prefix of that key, so the same audio analysed
the same way keeps its id.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from callqa.errors import StoreError
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


@dataclass(frozen=True)
class StoredCall:
    id: str
    created_at: float
    source: str
    verdict: str
    duration_s: float


class Store:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the result store {self.path}: {exc}") from exc

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
        pattern = id_prefix.replace("\\", "").replace("%", "").replace("_", "") + "%"
        with self._connect() as db:
            rows = db.execute("SELECT report FROM reports WHERE id LIKE ? LIMIT 2", (pattern,)).fetchall()
        if len(rows) != 1:
            return None
        return self._load(rows[0][0])

    def list(self, limit: int = 50, verdict: str | None = None) -> list[StoredCall]:
        query = "SELECT id, created_at, source, verdict, duration_s FROM reports"
        args: tuple[object, ...] = ()
        if verdict:
            query += " WHERE verdict = ?"
            args = (verdict,)
        query += " ORDER BY created_at DESC LIMIT ?"
        with self._connect() as db:
            return [StoredCall(*row) for row in db.execute(query, (*args, limit))]

    @staticmethod
    def _load(text: str) -> CallReport | None:
        try:
            return CallReport.model_validate_json(text)
        except ValidationError:
            return None  # written by an incompatible version: treat as a miss
