"""A flat index of stored calls for browsing: the figures a call list filters and sorts on, one row per report.

Reports are JSON in ``reports``; filtering and sorting them by values deep inside (a leg's MOS, the agent)
would parse every report on every page. This table keeps those values in columns, next to the reports in the
same database. It is brought up to date before each query: reports added or replaced since (whoever wrote
them: the service, ``callqa pcap``, ``callqa sniff``) are read once, rows of deleted reports dropped.

Call context (agent, campaign, carrier/trunk, direction) comes from the report's optional ``context`` object
when a source provides one (``agent``, ``campaign_id``, ``carrier``, ``direction``); for captured calls
without a carrier the SIP host of the far side stands for the trunk (To for outbound calls, From for inbound).
"""

from __future__ import annotations

import json
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from callqa.ai.tools import host_of
from callqa.store import Store

TABLE = "call_index_v1"  # a new version of the row layout gets a new table, filled from the reports
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id          TEXT PRIMARY KEY,
    stored_at   REAL NOT NULL,  -- reports.created_at of the indexed version (a replaced report differs)
    t           REAL NOT NULL,  -- when the call happened: SIP start for captured calls, else analysis time
    verdict     TEXT NOT NULL,
    severity    INTEGER NOT NULL,  -- good 0, degraded 1, failed 2
    duration_s  REAL NOT NULL,
    kind        TEXT NOT NULL,  -- recording or capture
    label       TEXT NOT NULL,  -- the legs' sources
    sip_from    TEXT NOT NULL,
    sip_to      TEXT NOT NULL,
    findings    TEXT NOT NULL,  -- ',code,code,' (each code once)
    n_findings  INTEGER NOT NULL,
    roles       TEXT NOT NULL,  -- ',caller,callee,'
    mos_1       REAL,           -- first leg: the call MOS (older reports: NISQA, else DNSMOS OVRL)
    mos_2       REAL,           -- second leg
    mos         REAL,           -- the call: its lowest leg MOS
    net_mos     REAL,           -- captured calls: the lowest network (E-model) MOS of a direction
    agent       TEXT NOT NULL,
    campaign    TEXT NOT NULL,
    carrier     TEXT NOT NULL,
    direction   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS {TABLE}_t ON {TABLE} (t);
"""

SEVERITY = {"good": 0, "degraded": 1, "failed": 2}
SORTS: dict[str, str] = {  # sort name -> column (a fixed list: never a column name from a request)
    "time": "t", "duration": "duration_s", "verdict": "severity", "mos_1": "mos_1", "mos_2": "mos_2",
    "mos": "mos", "findings": "n_findings", "agent": "agent", "campaign": "campaign", "carrier": "carrier",
}  # fmt: skip
Sort = Literal["time", "duration", "verdict", "mos_1", "mos_2", "mos", "findings", "agent", "campaign", "carrier"]
COLUMNS = ("id, t, verdict, duration_s, kind, label, sip_from, sip_to, findings, roles, mos_1, mos_2, mos, net_mos, "
           "agent, campaign, carrier, direction")  # fmt: skip


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


def entry_values(report: dict[str, Any], stored_at: float) -> tuple[Any, ...]:
    """The index row of one report (JSON as stored), in SCHEMA order."""
    sip = report.get("sip") if isinstance(report.get("sip"), dict) else None
    when = stored_at
    if sip and sip.get("started_at"):
        with suppress(ValueError):
            start = datetime.fromisoformat(str(sip["started_at"]).replace("Z", "+00:00"))
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
        min(net) if net else None, ctx["agent"], ctx["campaign"], ctx["carrier"], ctx["direction"],
    )  # fmt: skip


SYNC_BATCH = 500
_MARKS: dict[str, tuple[Any, ...]] = {}  # store path -> (count, newest, sum of reports.created_at) at the last sync
_J = "json_extract"
_EXTRACT = f"""
SELECT r.id, r.created_at, r.verdict, r.duration_s,
       {_J}(r.report, '$.source', '$.sip.from', '$.sip.to', '$.sip.started_at', '$.context'),
       (SELECT json_group_array({_J}(value, '$.code')) FROM json_each(r.report, '$.findings')),
       (SELECT json_group_array(json({_J}(value, '$.role', '$.source', '$.mos.nisqa.mos', '$.mos.dnsmos.ovrl',
                                               '$.mos.call.value')))
        FROM json_each(r.report, '$.legs')),
       (SELECT json_group_array({_J}(value, '$.network_mos')) FROM json_each(r.report, '$.streams'))
FROM reports r"""


def _compact(r: tuple[Any, ...]) -> dict[str, Any]:
    """The parts of a report the index reads, as extracted by ``_EXTRACT``, shaped like the report."""
    source, sip_from, sip_to, started_at, context = json.loads(r[4])
    legs = [{"role": role, "source": src, "mos": {"nisqa": {"mos": nisqa} if nisqa is not None else None,
                                                  "dnsmos": {"ovrl": dnsmos} if dnsmos is not None else None,
                                                  "call": {"value": call} if call is not None else None}}
            for role, src, nisqa, dnsmos, call in json.loads(r[6] or "[]")]  # fmt: skip
    sip = {"from": sip_from, "to": sip_to, "started_at": started_at} if sip_from is not None or started_at else None
    return {"id": r[0], "verdict": r[2], "duration_s": r[3], "source": source or "recording", "sip": sip,
            "findings": [{"code": c} for c in json.loads(r[5] or "[]")], "legs": legs, "context": context,
            "streams": [{"network_mos": m} for m in json.loads(r[7] or "[]")]}  # fmt: skip


def _unreadable(report_id: str, stored_at: float) -> tuple[Any, ...]:
    return (report_id, stored_at, 0.0, "", 0, 0.0, "", "", "", "", ",,", 0, ",,", None, None, None, None, "", "", "",
            "")  # fmt: skip


class CallIndex:
    def __init__(self, store: Store) -> None:
        self.store = store
        with store.connect() as db:
            db.executescript(SCHEMA)

    def sync(self) -> int:
        """Index reports added or replaced since the last call, forget deleted ones; returns rows written.

        The fields are extracted by SQLite's JSON functions (a whole report is never parsed in Python), and
        nothing is scanned when the reports' count and times are what they were at the last sync."""
        with self.store.connect() as db:
            mark = db.execute("SELECT count(*), max(created_at), total(created_at) FROM reports").fetchone()
            if mark == _MARKS.get(str(self.store.path)):
                return 0
            missing = db.execute(f"SELECT r.id, r.created_at FROM reports r LEFT JOIN {TABLE} i ON i.id = r.id "
                                 "AND i.stored_at = r.created_at WHERE i.id IS NULL").fetchall()  # fmt: skip
            for a in range(0, len(missing), SYNC_BATCH):  # a first sync of a large store: a batch at a time
                batch = dict(missing[a : a + SYNC_BATCH])
                marks = ", ".join("?" * len(batch))
                fresh = db.execute(f"{_EXTRACT} WHERE r.id IN ({marks}) AND json_valid(r.report)", list(batch))
                rows = []
                for r in fresh:
                    try:
                        rows.append(entry_values(_compact(r), r[1]))
                    except (ValueError, TypeError, KeyError, AttributeError):
                        continue
                    del batch[r[0]]
                # unreadable reports get an empty row: not read again, and kept out of the list as the store does
                rows += [_unreadable(report_id, created) for report_id, created in batch.items()]
                db.executemany(f"INSERT OR REPLACE INTO {TABLE} VALUES ({', '.join('?' * 21)})", rows)
            written = len(missing)
            db.execute(f"DELETE FROM {TABLE} WHERE id NOT IN (SELECT id FROM reports)")
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
