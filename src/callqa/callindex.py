"""A flat index of stored calls for browsing: the figures a call list filters and sorts on, one row per report.

Reports are JSON in ``reports``; filtering and sorting them by values deep inside (a leg's MOS, the agent)
would parse every report on every page. This table keeps those values in columns, next to the reports in the
same database. It is brought up to date before each query: reports added or replaced since (whoever wrote
them: the service, ``callqa pcap``, ``callqa sniff``) are read once, rows of deleted reports dropped.

Call context (agent, campaign, carrier/trunk, direction) comes from the report's optional ``context`` object
when a source provides one (``agent``, ``campaign_id``, ``carrier``, ``direction``); for captured calls
without a carrier the SIP host of the far side stands for the trunk (To for outbound calls, From for inbound).
The site is the capture site that sent the call (``site``, see docs/scaling.md), else the dialer server that
recorded it (``context.server_ip``); the codec is the first
RTP stream's (else the first leg's); loss and jitter are the worst RTP direction's (captured calls only).

The SQL here is plain (``?`` placeholders, ``INSERT ... ON CONFLICT ... DO UPDATE``, DOUBLE PRECISION for
times: PostgreSQL's REAL is 4 bytes, too coarse for epoch seconds): report fields are read from the parsed JSON
in Python, not with a database's JSON functions. Each sync also marks the quarter hours
whose calls changed in ``DIRTY``, for the rollups (``rollups.py``) to recompute.
"""

from __future__ import annotations

import json
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from callqa.ai.tools import host_of
from callqa.store import Store

TABLE = "call_index_v2"  # a new version of the row layout gets a new table, filled from the reports
OLD_TABLES = ("call_index_v1",)  # earlier layouts, dropped (they are rebuilt from the reports)
DIRTY = "call_rollup_dirty_v1"  # quarter hours (epoch seconds of their start) whose calls changed since the rollups
QUARTER_S = 900.0
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id          TEXT PRIMARY KEY,
    stored_at   DOUBLE PRECISION NOT NULL,  -- reports.created_at of the indexed version (a replaced report differs)
    t           DOUBLE PRECISION NOT NULL,  -- when the call happened: SIP start, dialer's call date, or stored
    verdict     TEXT NOT NULL,
    severity    INTEGER NOT NULL,  -- good 0, degraded 1, failed 2
    duration_s  DOUBLE PRECISION NOT NULL,
    kind        TEXT NOT NULL,  -- recording or capture
    label       TEXT NOT NULL,  -- the legs' sources
    sip_from    TEXT NOT NULL,
    sip_to      TEXT NOT NULL,
    findings    TEXT NOT NULL,  -- ',code,code,' (each code once)
    n_findings  INTEGER NOT NULL,
    roles       TEXT NOT NULL,  -- ',caller,callee,'
    mos_1       DOUBLE PRECISION,           -- first leg: NISQA MOS when present, else DNSMOS OVRL
    mos_2       DOUBLE PRECISION,           -- second leg
    mos         DOUBLE PRECISION,           -- the call: its lowest leg MOS
    net_mos     DOUBLE PRECISION,           -- captured calls: the lowest network (E-model) MOS of a direction
    agent       TEXT NOT NULL,
    campaign    TEXT NOT NULL,
    carrier     TEXT NOT NULL,
    direction   TEXT NOT NULL,
    site        TEXT NOT NULL,  -- the capture site that sent the call, else the dialer server (context.server_ip)
    codec       TEXT NOT NULL,  -- first RTP stream's codec, else the first leg's
    loss_pct    DOUBLE PRECISION,           -- captured calls: the worst direction's lost / expected packets, percent
    jitter_ms   DOUBLE PRECISION            -- captured calls: the worst direction's mean RFC 3550 jitter
);
CREATE INDEX IF NOT EXISTS {TABLE}_t ON {TABLE} (t);
CREATE TABLE IF NOT EXISTS {DIRTY} (start DOUBLE PRECISION PRIMARY KEY);
"""
NAMES = ("id", "stored_at", "t", "verdict", "severity", "duration_s", "kind", "label", "sip_from", "sip_to", "findings",
         "n_findings", "roles", "mos_1", "mos_2", "mos", "net_mos", "agent", "campaign", "carrier", "direction", "site",
         "codec", "loss_pct", "jitter_ms")  # fmt: skip
UPSERT = (f"INSERT INTO {TABLE} ({', '.join(NAMES)}) VALUES ({', '.join('?' * len(NAMES))}) ON CONFLICT (id) DO UPDATE "
          "SET " + ", ".join(f"{n} = excluded.{n}" for n in NAMES[1:]))  # fmt: skip

SEVERITY = {"good": 0, "degraded": 1, "failed": 2}
SORTS: dict[str, str] = {  # sort name -> column (a fixed list: never a column name from a request)
    "time": "t", "duration": "duration_s", "verdict": "severity", "mos_1": "mos_1", "mos_2": "mos_2",
    "mos": "mos", "findings": "n_findings", "agent": "agent", "campaign": "campaign", "carrier": "carrier",
}  # fmt: skip
Sort = Literal["time", "duration", "verdict", "mos_1", "mos_2", "mos", "findings", "agent", "campaign", "carrier"]
COLUMNS = ("id, t, verdict, duration_s, kind, label, sip_from, sip_to, findings, roles, mos_1, mos_2, mos, net_mos, "
           "agent, campaign, carrier, direction, site, codec, loss_pct, jitter_ms")  # fmt: skip


@dataclass(frozen=True)
class CallEntry:
    """One stored call as the list shows it."""

    id: str
    t: float
    verdict: str
    duration_s: float
    kind: str
    label: str
    sip_from: str
    sip_to: str
    findings: tuple[str, ...]
    roles: tuple[str, ...]
    mos_1: float | None
    mos_2: float | None
    mos: float | None
    net_mos: float | None
    agent: str
    campaign: str
    carrier: str
    direction: str
    site: str = ""
    codec: str = ""
    loss_pct: float | None = None
    jitter_ms: float | None = None

    @classmethod
    def from_row(cls, r: tuple[Any, ...]) -> CallEntry:
        return cls(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], _codes(r[8]), _codes(r[9]), *r[10:])


@dataclass(frozen=True)
class ListQuery:
    """Filters, order and page of the call list. Every value is bound as a parameter."""

    verdict: str | None = None
    finding: str | None = None
    since: float | None = None  # epoch seconds, on the call's time
    until: float | None = None
    text: str | None = None  # substring of the sources, SIP From or SIP To (case-insensitive)
    agent: str | None = None  # exact values
    campaign: str | None = None
    carrier: str | None = None
    direction: str | None = None
    mos_min: float | None = None  # on the call's MOS (its lowest leg); calls without a MOS are left out
    mos_max: float | None = None
    sort: Sort = "time"
    descending: bool = True
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True)
class Page:
    calls: list[CallEntry]
    total: int  # calls matching the filters, on every page
    query: ListQuery
    facets: dict[str, list[str]] = field(default_factory=dict)  # known agents, campaigns, carriers, directions


def _codes(text: str) -> tuple[str, ...]:
    return tuple(c for c in text.split(",") if c)


def leg_mos(leg: dict[str, Any]) -> float | None:
    """A leg's perceptual MOS: NISQA when it ran, else DNSMOS OVRL (as the low_mos detector judges it)."""
    mos = leg.get("mos") or {}
    if isinstance(mos.get("nisqa"), dict) and mos["nisqa"].get("mos") is not None:
        return float(mos["nisqa"]["mos"])
    if isinstance(mos.get("dnsmos"), dict) and mos["dnsmos"].get("ovrl") is not None:
        return float(mos["dnsmos"]["ovrl"])
    return None


def context_of(report: dict[str, Any]) -> dict[str, str]:
    """agent, campaign, carrier and direction of a report (JSON as stored); '' where unknown."""
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


def media_of(report: dict[str, Any]) -> tuple[str, str, float | None, float | None]:
    """site, codec, loss percent and mean jitter (ms) of a report (JSON as stored); '' or None where unknown."""
    raw = report.get("context")
    dialer = str(raw.get("server_ip") or "") if isinstance(raw, dict) else ""
    site = str(report.get("site") or dialer)[:200]
    streams = [s for s in report.get("streams", []) if isinstance(s, dict)]
    legs = [lg for lg in report.get("legs", []) if isinstance(lg, dict)]
    codecs = [str(s.get("codec") or s.get("payload") or "").split(",")[0].strip() for s in streams]
    codecs += [str(lg.get("codec") or "").strip() for lg in legs]
    codec = next((c for c in codecs if c), "")[:40]
    losses = [max(0, int(s["lost"])) * 100.0 / int(s["expected"]) for s in streams
              if int(s.get("expected") or 0) > 0 and s.get("lost") is not None]  # fmt: skip
    jitters = [float(s["mean_jitter_ms"]) for s in streams if s.get("mean_jitter_ms") is not None]
    return site, codec, round(max(losses), 4) if losses else None, round(max(jitters), 3) if jitters else None


def entry_values(report: dict[str, Any], stored_at: float) -> tuple[Any, ...]:
    """The index row of one report (JSON as stored), in SCHEMA order."""
    sip = report.get("sip") if isinstance(report.get("sip"), dict) else None
    when = stored_at
    raw = report.get("context")
    started = (sip or {}).get("started_at") or (raw.get("call_date") if isinstance(raw, dict) else None)
    if started:  # the SIP start of a captured call, else the dialer's start of the recording
        with suppress(ValueError):
            start = datetime.fromisoformat(str(started).replace("Z", "+00:00"))
            when = (start if start.tzinfo else start.replace(tzinfo=UTC)).timestamp()
    legs = [lg for lg in report.get("legs", []) if isinstance(lg, dict)]
    moss = [leg_mos(lg) for lg in legs]
    known = [m for m in moss if m is not None]
    net = [float(s["network_mos"]) for s in report.get("streams", []) if s.get("network_mos") is not None]
    codes = list(dict.fromkeys(str(f.get("code", "")) for f in report.get("findings", [])))
    ctx = context_of(report)
    verdict = str(report.get("verdict", "good"))
    return (
        report["id"], stored_at, when, verdict, SEVERITY.get(verdict, 0), float(report.get("duration_s", 0.0)),
        str(report.get("source", "recording")), " + ".join(str(lg.get("source", "")) for lg in legs),
        str((sip or {}).get("from", "") or ""), str((sip or {}).get("to", "") or ""),
        "," + ",".join(codes) + ",", len(report.get("findings", [])),
        "," + ",".join(str(lg.get("role", "")) for lg in legs) + ",",
        moss[0] if moss else None, moss[1] if len(moss) > 1 else None, min(known) if known else None,
        min(net) if net else None, ctx["agent"], ctx["campaign"], ctx["carrier"], ctx["direction"], *media_of(report),
    )  # fmt: skip


SYNC_BATCH = 500
_MARKS: dict[str, tuple[Any, ...]] = {}  # store path -> (count, newest, sum of reports.created_at) at the last sync


def _unreadable(report_id: str, stored_at: float) -> tuple[Any, ...]:
    return (report_id, stored_at, 0.0, "", 0, 0.0, "", "", "", "", ",,", 0, ",,", None, None, None, None, "", "", "",
            "", "", "", None, None)  # fmt: skip


def quarter(t: float) -> float:
    return t - t % QUARTER_S


class CallIndex:
    def __init__(self, store: Store) -> None:
        self.store = store
        with store.connect() as db:
            for old in OLD_TABLES:
                db.execute(f"DROP TABLE IF EXISTS {old}")
            db.executescript(SCHEMA)

    def sync(self) -> int:
        """Index reports added or replaced since the last call, forget deleted ones; returns rows written.

        Nothing is scanned when the reports' count and times are what they were at the last sync; else only the
        reports missing from the index (or stored again since) are read and parsed."""
        with self.store.connect() as db:
            mark = tuple(db.execute("SELECT count(*), max(created_at), sum(created_at) FROM reports").fetchone())
            if mark == _MARKS.get(str(self.store.path)):
                return 0
            missing = db.execute(f"SELECT r.id, r.created_at FROM reports r LEFT JOIN {TABLE} i ON i.id = r.id "
                                 "AND i.stored_at = r.created_at WHERE i.id IS NULL").fetchall()  # fmt: skip
            dirty: set[float] = set()
            for a in range(0, len(missing), SYNC_BATCH):  # a first sync of a large store: a batch at a time
                batch = dict(missing[a : a + SYNC_BATCH])
                marks = ", ".join("?" * len(batch))
                old = db.execute(f"SELECT t FROM {TABLE} WHERE id IN ({marks})", list(batch)).fetchall()
                dirty.update(quarter(r[0]) for r in old)
                rows = []
                for report_id, created, text in db.execute(
                    f"SELECT id, created_at, report FROM reports WHERE id IN ({marks})", list(batch)
                ):
                    try:
                        row = entry_values({**json.loads(text), "id": report_id}, created)  # the row's id
                    except (ValueError, TypeError, KeyError, AttributeError):
                        row = _unreadable(report_id, created)  # not read again, and kept out of the list
                    rows.append(row)
                    if row[3]:
                        dirty.add(quarter(row[2]))
                db.executemany(UPSERT, rows)
            written = len(missing)
            gone = f"FROM {TABLE} WHERE id NOT IN (SELECT id FROM reports)"
            dirty.update(quarter(r[0]) for r in db.execute(f"SELECT t {gone}"))
            db.execute(f"DELETE {gone}")
            db.executemany(f"INSERT INTO {DIRTY} (start) VALUES (?) ON CONFLICT (start) DO NOTHING",
                           [(d,) for d in sorted(dirty)])  # fmt: skip
            _MARKS[str(self.store.path)] = mark
        return written

    def _where(self, q: ListQuery) -> tuple[str, list[object]]:
        where: list[str] = ["verdict != ''"]  # not the rows of unreadable reports
        args: list[object] = []
        for column, value in (("verdict", q.verdict), ("agent", q.agent), ("campaign", q.campaign),
                              ("carrier", q.carrier), ("direction", q.direction)):  # fmt: skip
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        if q.finding:
            where.append("instr(findings, ?) > 0")
            args.append(f",{q.finding},")
        for condition, bound in (("t >= ?", q.since), ("t < ?", q.until), ("mos >= ?", q.mos_min),
                                 ("mos <= ?", q.mos_max)):  # fmt: skip
            if bound is not None:
                where.append(condition)
                args.append(bound)
        if q.text:
            where.append("(instr(lower(label), ?) > 0 OR instr(lower(sip_from), ?) > 0 OR instr(lower(sip_to), ?) > 0)")
            args += [q.text.lower()] * 3
        return " WHERE " + " AND ".join(where), args

    def page(self, q: ListQuery) -> Page:
        """One page of calls matching ``q``, in its order (calls without the sorted value last), and the total."""
        self.sync()
        where, args = self._where(q)
        column = SORTS[q.sort]
        order = "DESC" if q.descending else "ASC"
        sql = (f"SELECT {COLUMNS} FROM {TABLE}{where} ORDER BY {column} IS NULL, {column} {order}, t DESC, id "
               "LIMIT ? OFFSET ?")  # fmt: skip
        with self.store.connect() as db:
            rows = db.execute(sql, (*args, max(0, q.limit), max(0, q.offset))).fetchall()
            total = db.execute(f"SELECT count(*) FROM {TABLE}{where}", args).fetchone()[0]
            facets = {name: [r[0] for r in db.execute(
                f"SELECT DISTINCT {name} FROM {TABLE} WHERE {name} != '' AND verdict != '' ORDER BY {name} LIMIT 500")]
                for name in ("agent", "campaign", "carrier", "direction")}  # fmt: skip
        return Page([CallEntry.from_row(r) for r in rows], int(total), q, facets)

    def entries(self, since: float | None = None, until: float | None = None) -> list[CallEntry]:
        """Every indexed call in a time range, oldest first (for trends)."""
        self.sync()
        where, args = self._where(ListQuery(since=since, until=until))
        with self.store.connect() as db:
            rows = db.execute(f"SELECT {COLUMNS} FROM {TABLE}{where} ORDER BY t, id", args).fetchall()
        return [CallEntry.from_row(r) for r in rows]
