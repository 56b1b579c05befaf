"""The store of reports: the cache and the history that ``callqa list``/``show`` read, in SQLite (WAL, the
default) or PostgreSQL (see ``callqa.db``).

A report is cached under its cache key (audio content hash + analysis settings + model versions) and served
while it is younger than the configured TTL; ``id`` is a short prefix of that key, so the same audio analysed
the same way keeps its id.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from callqa.db import Connection, Database, contains
from callqa.errors import StoreError
from callqa.private import private_file
from callqa.report import CallReport

# The schema, one numbered step at a time: a store records the last step it has (schema_version) and a newer
# version applies the steps after it, in one transaction, holding the schema lock (several processes may start at
# once). The DDL is what SQLite and PostgreSQL share; a step may also be a function (adding a column only where it
# is missing: stores made before the numbering have some of the steps already).
INDEX_COLUMNS: dict[str, str] = {  # the flat call index: figures the call list and searches filter and sort on
    "t": "DOUBLE PRECISION",  # when the call happened: SIP start, else the dialer's start, else when analysed
    "severity": "INTEGER",  # good 0, degraded 1, failed 2
    "kind": "TEXT",  # recording or capture ('' for a report this version cannot read: left out of listings)
    "label": "TEXT",  # the legs' sources
    "sip_from": "TEXT",
    "sip_to": "TEXT",
    "findings": "TEXT",  # ',code,code,' (each code once)
    "n_findings": "INTEGER",
    "roles": "TEXT",  # ',caller,callee,'
    "mos_1": "DOUBLE PRECISION",  # first leg: the call MOS (older reports: NISQA, else DNSMOS OVRL)
    "mos_2": "DOUBLE PRECISION",
    "mos": "DOUBLE PRECISION",  # the call: its lowest leg MOS
    "net_mos": "DOUBLE PRECISION",  # captured calls: the lowest network (E-model) MOS of a direction
    "context": "TEXT",  # the report's call context (JSON), for listings
}
MEDIA_COLUMNS: dict[str, str] = {  # what the rollups group and summarise by, besides the call context
    "site": "TEXT",  # the capture site that sent the call, else the dialer server that recorded it
    "codec": "TEXT",  # the first RTP stream's codec, else the first leg's
    "loss_pct": "DOUBLE PRECISION",  # captured calls: the worst direction's lost / expected packets, percent
    "jitter_ms": "DOUBLE PRECISION",  # captured calls: the worst direction's mean RFC 3550 jitter
}
DIRTY = "call_rollup_dirty_v1"  # quarter hours whose calls changed since the rollups (rollups.py) last saw them
QUARTER_S = 900.0
CONTEXT_COLUMNS = {"started_at": "DOUBLE PRECISION", "agent": "TEXT", "campaign": "TEXT", "carrier": "TEXT",
                   "direction": "TEXT"}  # fmt: skip
SEVERITY = {"good": 0, "degraded": 1, "failed": 2}
_URI_HOST = re.compile(r"(?:sips?:|https?://|sftp:)(?:[^@/;>\s]*@)?(\[[^\]]+\]|[^:;>/\s]+)")


def host_of(uri: str) -> str:
    """The host of a SIP/HTTP/SFTP URI ('' when there is none)."""
    m = _URI_HOST.search(uri)
    return m.group(1).lower() if m else ""


def _add_columns(columns: dict[str, str], indexes: tuple[str, ...]) -> Callable[[Connection], None]:
    def step(db: Connection) -> None:
        have = db.columns("reports")
        for name, kind in columns.items():
            if name not in have:
                db.execute(f"ALTER TABLE reports ADD COLUMN {name} {kind}")
        for name in indexes:
            db.execute(f"CREATE INDEX IF NOT EXISTS reports_{name} ON reports ({name})")

    return step


MIGRATIONS: list[str | Callable[[Connection], None]] = [
    """CREATE TABLE IF NOT EXISTS reports (
        id          TEXT PRIMARY KEY,
        cache_key   TEXT NOT NULL UNIQUE,
        created_at  DOUBLE PRECISION NOT NULL,
        source      TEXT NOT NULL,
        verdict     TEXT NOT NULL,
        duration_s  DOUBLE PRECISION NOT NULL,
        report      TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS reports_created ON reports (created_at)""",
    # 2: who took the call (a dialer's context)
    _add_columns(CONTEXT_COLUMNS, ("agent", "campaign", "carrier", "started_at")),
    # 3: the call index in the same rows (it was a table of its own, call_index_v1, kept in step after the fact);
    # rows written before are indexed on first use (Store.index_pending), from their JSON
    _add_columns(INDEX_COLUMNS, ("t",)),
    "DROP TABLE IF EXISTS call_index_v1",
    # 4: site, codec, loss and jitter for the rollups, and the quarter hours they have to recompute; every report
    # is indexed again from its JSON on first use (t NULL), which also marks its quarter hour
    _add_columns(MEDIA_COLUMNS, ("site",)),
    f"""CREATE TABLE IF NOT EXISTS {DIRTY} (start DOUBLE PRECISION PRIMARY KEY);
    UPDATE reports SET t = NULL;
    DROP TABLE IF EXISTS call_index_v2""",
]


_MIGRATED: set[tuple[str, int]] = set()


def migrate(db: Connection) -> int:
    """Bring the schema up to date; returns the version it has now. Call inside one transaction."""
    db.lock_schema()
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = db.execute("SELECT max(version) FROM schema_version").fetchone()
    have = int(row[0]) if row and row[0] is not None else 0
    for version, step in enumerate(MIGRATIONS, start=1):
        if version <= have:
            continue
        if callable(step):
            step(db)
        else:
            for statement in step.split(";"):
                if statement.strip():
                    db.execute(statement)
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
    return max(have, len(MIGRATIONS))


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
    """The reports (and, through ``connect()``, the other tables of the service) in SQLite or PostgreSQL."""

    def __init__(self, target: Path | str) -> None:
        self.db = Database(target)
        self.path = self.db.path  # the SQLite file; None on PostgreSQL
        try:
            if self.path is not None:
                private_file(self.path)  # 0600, and so are the WAL and shared-memory files SQLite makes beside it
                with closing(sqlite3.connect(self.path, timeout=30.0)) as raw:
                    raw.execute("PRAGMA journal_mode=WAL")
            if (self.db.target, os.getpid()) not in _MIGRATED:  # a server's database: once per process
                with self.db.connect() as db:
                    migrate(db)
                if self.path is None:  # (a SQLite file may be removed and made again: checked at every open)
                    _MIGRATED.add((self.db.target, os.getpid()))
        except (OSError, sqlite3.Error, StoreError) as exc:
            raise StoreError(f"cannot open the result store {self.db.describe()}: {exc}") from exc

    @property
    def dialect(self) -> str:
        return self.db.dialect

    def connect(self) -> AbstractContextManager[Connection]:
        """One connection and transaction on the store's database (for the tables other modules keep there)."""
        return self.db.connect()

    def cached(self, cache_key: str, ttl_s: float, now: float | None = None,
               any_call: bool = False) -> CallReport | None:  # fmt: skip
        """The report for this key if it is younger than ``ttl_s``, else None. A report stored for a call with a
        context (a dialer's row) is found only with ``any_call``: its analysis is reused, never its context."""
        now = time.time() if now is None else now
        where = "(cache_key = ? OR cache_key LIKE ?)" if any_call else "cache_key = ?"
        args: tuple[object, ...] = (cache_key, _stored_key(cache_key, "%")) if any_call else (cache_key,)
        with self.connect() as db:
            row = db.execute(
                f"SELECT report FROM reports WHERE {where} AND created_at > ? ORDER BY created_at DESC LIMIT 1",
                (*args, now - ttl_s),
            ).fetchone()
        return self._load(row[0]) if row else None

    def put(self, report: CallReport, now: float | None = None) -> None:
        """Store a report under its id (replacing an earlier one), with its index columns. A report with a context
        is one call of a dialer: several may share an analysis (identical audio), so its cache key is stored with
        its id."""
        now = time.time() if now is None else now
        source = " + ".join(leg.source for leg in report.legs)
        ctx = report.context
        key = report.cache_key if ctx is None else _stored_key(report.cache_key, report.id)
        text = report.model_dump_json()
        row = {"id": report.id, "cache_key": key, "created_at": now, "source": source, "verdict": report.verdict,
               "duration_s": report.duration_s, "report": text, **index_row(json.loads(text), now)}  # fmt: skip
        names = ", ".join(row)
        updates = ", ".join(f"{c} = excluded.{c}" for c in row if c != "id")
        try:
            with self.connect() as db:
                # the quarter hours whose calls change, for the rollups: the new row's and any row it replaces
                old = db.execute("SELECT t FROM reports WHERE (id = ? OR cache_key = ?) AND t IS NOT NULL",
                                 (report.id, key)).fetchall()  # fmt: skip
                _mark(db, [row["t"], *(r[0] for r in old)])
                # a replaced report's old row may hold the same cache key under another id (ids are key prefixes)
                db.execute("DELETE FROM reports WHERE cache_key = ? AND id != ?", (key, report.id))
                db.execute(f"INSERT INTO reports ({names}) VALUES ({', '.join('?' * len(row))}) "
                           f"ON CONFLICT (id) DO UPDATE SET {updates}", tuple(row.values()))  # fmt: skip
        except StoreError as exc:
            raise StoreError(f"cannot write to the result store: {exc}") from exc

    def delete(self, ids: builtins.list[str]) -> int:
        """Delete these reports (the rollups of their quarter hours are recomputed); returns how many went."""
        gone = 0
        with self.connect() as db:
            for report_id in ids:
                row = db.execute("SELECT t FROM reports WHERE id = ?", (report_id,)).fetchone()
                if row is None:
                    continue
                _mark(db, [row[0]] if row[0] is not None else [])
                db.execute("DELETE FROM reports WHERE id = ?", (report_id,))
                gone += 1
        return gone

    def get(self, id_prefix: str) -> CallReport | None:
        """A report by id or unambiguous id prefix (expired reports stay readable)."""
        text = self.get_json(id_prefix)
        return None if text is None else self._load(text)

    def get_json(self, id_prefix: str) -> str | None:
        """The stored JSON of a report, as written (what the API serves without re-encoding it)."""
        pattern = id_prefix.replace("\\", "").replace("%", "").replace("_", "") + "%"
        with self.connect() as db:
            rows = db.execute("SELECT report FROM reports WHERE id LIKE ? LIMIT 2", (pattern,)).fetchall()
        return rows[0][0] if len(rows) == 1 else None

    def list(self, limit: int = 50, verdict: str | None = None, query: CallQuery | None = None) -> list[StoredCall]:
        """Stored reports, newest analysed first, with their call context; ``query``'s filters apply."""
        self.index_pending()
        where, args = _where(query or CallQuery(verdict=verdict))
        sql = "SELECT id, created_at, source, verdict, duration_s, context FROM reports"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC LIMIT ?"
        with self.connect() as db:
            rows = db.execute(sql, (*args, limit)).fetchall()
        return [StoredCall(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]) if r[5] else None) for r in rows]

    def search(self, q: CallQuery) -> builtins.list[CallRow]:
        """Stored calls matching ``q``, newest first. Every value is a bound parameter."""
        self.index_pending()
        where, args = _where(q)
        columns = ("id, t, verdict, duration_s, source, sip_from, sip_to, findings, agent, campaign, carrier, "
                   "direction")  # fmt: skip
        sql = f"SELECT {columns} FROM reports WHERE kind != ''"
        if where:
            sql += " AND " + " AND ".join(where)
        sql += " ORDER BY t DESC, id LIMIT ? OFFSET ?"
        with self.connect() as db:
            rows = db.execute(sql, (*args, max(0, q.limit), max(0, q.offset))).fetchall()
        return [CallRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], tuple(c for c in r[7].split(",") if c),
                        *(v or "" for v in r[8:])) for r in rows]  # fmt: skip

    def index_pending(self) -> int:
        """Index the reports written without their index columns (by a version before them, or by plain SQL):
        read once from their JSON; a report this version cannot read gets ``kind = ''`` and is left out of
        listings. Returns the rows indexed."""
        done = 0
        while True:
            with self.connect() as db:
                rows = db.execute("SELECT id, created_at, report FROM reports WHERE t IS NULL LIMIT 500").fetchall()
                for report_id, created_at, text in rows:
                    try:
                        values = index_row(json.loads(text), created_at)
                    except (ValueError, TypeError, KeyError, AttributeError):
                        values = {**dict.fromkeys(INDEX_COLUMNS), "t": created_at, "kind": ""}
                    cols = ", ".join(f"{c} = ?" for c in values)
                    db.execute(f"UPDATE reports SET {cols} WHERE id = ?", (*values.values(), report_id))
                    if values["kind"]:
                        _mark(db, [values["t"]])
            done += len(rows)
            if len(rows) < 500:
                return done

    def writable(self) -> bool:
        """True when a write can be made now (the file system is writable and no one holds the lock long; the
        server is up and not a read-only standby)."""
        if self.path is None:
            try:
                with self.db.connect(timeout_s=2.0) as db:
                    return not db.execute("SELECT pg_is_in_recovery()").fetchone()[0]
            except StoreError:
                return False
        try:
            raw = sqlite3.connect(self.path, timeout=2.0, isolation_level=None)
            try:
                raw.execute("BEGIN IMMEDIATE")
                raw.execute("ROLLBACK")
            finally:
                raw.close()
            return True
        except sqlite3.Error:
            return False

    @staticmethod
    def _load(text: str) -> CallReport | None:
        try:
            return CallReport.model_validate_json(text)
        except ValidationError:
            return None  # written by an incompatible version: treat as a miss


def leg_mos(leg: dict[str, Any]) -> float | None:
    """A leg's perceptual MOS: the calibrated call MOS (as the low_mos detector judges it); for reports made
    before it existed NISQA when it ran, else DNSMOS OVRL."""
    mos = leg.get("mos") or {}
    if isinstance(mos.get("call"), dict) and mos["call"].get("value") is not None:
        return float(mos["call"]["value"])
    if isinstance(mos.get("nisqa"), dict) and mos["nisqa"].get("mos") is not None:
        return float(mos["nisqa"]["mos"])
    if isinstance(mos.get("dnsmos"), dict) and mos["dnsmos"].get("ovrl") is not None:
        return float(mos["dnsmos"]["ovrl"])
    return None


def context_of(report: dict[str, Any]) -> dict[str, str]:
    """agent, campaign, carrier and direction of a report (JSON as stored); '' where unknown. For captured calls
    without a carrier the SIP host of the far side stands for the trunk (To for outbound calls, From for inbound)."""
    raw = report.get("context")
    ctx: dict[str, Any] = raw if isinstance(raw, dict) else {}

    def text(*names: str) -> str:
        for name in names:
            value = ctx.get(name)
            if value not in (None, ""):
                return str(value)[:200]
        return ""

    direction = text("direction").lower()
    carrier = text("carrier", "trunk")
    sip = report.get("sip") if isinstance(report.get("sip"), dict) else None
    if not carrier and sip:
        far = sip.get("from", "") if direction.startswith("in") else sip.get("to", "")
        carrier = host_of(str(far or ""))
    return {"agent": text("agent", "user"), "campaign": text("campaign_id", "campaign"), "carrier": carrier,
            "direction": direction}  # fmt: skip


def media_of(report: dict[str, Any]) -> dict[str, Any]:
    """site, codec, loss percent and mean jitter (ms) of a report (JSON as stored); '' or None where unknown."""
    raw = report.get("context")
    dialer = str(raw.get("server_ip") or "") if isinstance(raw, dict) else ""
    streams = [s for s in report.get("streams", []) if isinstance(s, dict)]
    legs = [lg for lg in report.get("legs", []) if isinstance(lg, dict)]
    codecs = [str(s.get("codec") or s.get("payload") or "").split(",")[0].strip() for s in streams]
    codecs += [str(lg.get("codec") or "").strip() for lg in legs]
    losses = [max(0, int(s["lost"])) * 100.0 / int(s["expected"]) for s in streams
              if int(s.get("expected") or 0) > 0 and s.get("lost") is not None]  # fmt: skip
    jitters = [float(s["mean_jitter_ms"]) for s in streams if s.get("mean_jitter_ms") is not None]
    return {"site": str(report.get("site") or dialer)[:200], "codec": next((c for c in codecs if c), "")[:40],
            "loss_pct": round(max(losses), 4) if losses else None,
            "jitter_ms": round(max(jitters), 3) if jitters else None}  # fmt: skip


def quarter(t: float) -> float:
    """The start of the quarter hour (epoch seconds, UTC) that holds ``t``."""
    return t - t % QUARTER_S


def _mark(db: Connection, times: builtins.list[float]) -> None:
    """Mark the quarter hours of these call times as changed, for the rollups to recompute."""
    starts = sorted({quarter(t) for t in times if t is not None})
    db.executemany(f"INSERT INTO {DIRTY} (start) VALUES (?) ON CONFLICT (start) DO NOTHING",
                   [(q,) for q in starts])  # fmt: skip


def _epoch(value: object) -> float | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def index_row(report: dict[str, Any], stored_at: float) -> dict[str, Any]:
    """The index and context columns of one report (JSON as stored), analysed at ``stored_at``."""
    sip = report.get("sip") if isinstance(report.get("sip"), dict) else None
    raw_ctx = report.get("context") if isinstance(report.get("context"), dict) else None
    started = _epoch((sip or {}).get("started_at")) or _epoch((raw_ctx or {}).get("call_date"))
    legs = [lg for lg in report.get("legs", []) if isinstance(lg, dict)]
    moss = [leg_mos(lg) for lg in legs]
    known = [m for m in moss if m is not None]
    net = [float(s["network_mos"]) for s in report.get("streams", []) if s.get("network_mos") is not None]
    codes = list(dict.fromkeys(str(f.get("code", "")) for f in report.get("findings", [])))
    ctx = context_of(report)
    verdict = str(report.get("verdict", "good"))
    return {
        "t": started if started is not None else stored_at, "severity": SEVERITY.get(verdict, 0),
        "kind": str(report.get("source", "recording")), "label": " + ".join(str(lg.get("source", "")) for lg in legs),
        "sip_from": str((sip or {}).get("from", "") or ""), "sip_to": str((sip or {}).get("to", "") or ""),
        "findings": "," + ",".join(codes) + ",", "n_findings": len(report.get("findings", [])),
        "roles": "," + ",".join(str(lg.get("role", "")) for lg in legs) + ",",
        "mos_1": moss[0] if moss else None, "mos_2": moss[1] if len(moss) > 1 else None,
        "mos": min(known) if known else None, "net_mos": min(net) if net else None,
        "context": json.dumps(raw_ctx) if raw_ctx is not None else None, "started_at": started,
        "agent": ctx["agent"], "campaign": ctx["campaign"], "carrier": ctx["carrier"], "direction": ctx["direction"],
        **media_of(report),
    }  # fmt: skip


def _where(q: CallQuery) -> tuple[list[str], list[object]]:
    """SQL conditions (joined with AND) over the index columns, and their bound values, for a query's filters."""
    where: list[str] = []
    args: list[object] = []
    if q.verdict:
        where.append("verdict = ?")
        args.append(q.verdict)
    if q.finding:
        where.append("findings LIKE ? ESCAPE '\\'")
        args.append(contains(f",{q.finding},"))
    if q.since is not None:
        where.append("t >= ?")
        args.append(q.since)
    if q.until is not None:
        where.append("t < ?")
        args.append(q.until)
    if q.text:
        where.append("(lower(source) LIKE ? ESCAPE '\\' OR lower(sip_from) LIKE ? ESCAPE '\\' "
                     "OR lower(sip_to) LIKE ? ESCAPE '\\')")  # fmt: skip
        args += [contains(q.text.lower())] * 3
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
