"""The call list and trends: stored calls filtered, sorted and paged on the figures a list shows.

Reports are JSON; filtering and sorting them by values deep inside (a leg's MOS, the agent) would parse every
report on every page. The store keeps those values in columns of the same row (``store.index_row``: written with
the report, or filled once from the JSON of a report written without them), so this is one indexed query on
SQLite or PostgreSQL alike. It is the one index of call context: ``callqa list`` and the assistant's search
(``Store.search``) read the same columns.

Call context (agent, campaign, carrier/trunk, direction) comes from the report's optional ``context`` object
when a source provides one (``agent``, ``campaign_id``, ``carrier``, ``direction``); for captured calls
without a carrier the SIP host of the far side stands for the trunk (To for outbound calls, From for inbound).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from callqa.db import contains
from callqa.store import DIRTY, QUARTER_S, SEVERITY, Store, context_of, index_row, leg_mos, media_of, quarter

__all__ = ["DIRTY", "QUARTER_S", "SEVERITY", "SORTS", "CallEntry", "CallIndex", "ListQuery", "Page", "context_of",
           "index_row", "leg_mos", "media_of", "quarter"]  # fmt: skip

SORTS: dict[str, str] = {  # sort name -> column (a fixed list: never a column name from a request)
    "time": "t", "duration": "duration_s", "verdict": "severity", "mos_1": "mos_1", "mos_2": "mos_2",
    "mos": "mos", "findings": "n_findings", "agent": "agent", "campaign": "campaign", "carrier": "carrier",
}  # fmt: skip
Sort = Literal["time", "duration", "verdict", "mos_1", "mos_2", "mos", "findings", "agent", "campaign", "carrier"]
COLUMNS = ("id, t, verdict, duration_s, kind, label, sip_from, sip_to, findings, roles, mos_1, mos_2, mos, net_mos, "
           "agent, campaign, carrier, direction, COALESCE(site, ''), COALESCE(codec, ''), loss_pct, "
           "jitter_ms")  # fmt: skip


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
    site: str = ""  # the capture site that sent the call, else the dialer server that recorded it
    codec: str = ""
    loss_pct: float | None = None  # captured calls: the worst direction's
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


class CallIndex:
    def __init__(self, store: Store) -> None:
        self.store = store

    def sync(self) -> int:
        """Index the reports written without their index columns; returns how many (see ``Store.index_pending``)."""
        return self.store.index_pending()

    def _where(self, q: ListQuery) -> tuple[str, list[object]]:
        where: list[str] = ["kind != ''"]  # not the rows of unreadable reports
        args: list[object] = []
        for column, value in (("verdict", q.verdict), ("agent", q.agent), ("campaign", q.campaign),
                              ("carrier", q.carrier), ("direction", q.direction)):  # fmt: skip
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        if q.finding:
            where.append("findings LIKE ? ESCAPE '\\'")
            args.append(contains(f",{q.finding},"))
        for condition, bound in (("t >= ?", q.since), ("t < ?", q.until), ("mos >= ?", q.mos_min),
                                 ("mos <= ?", q.mos_max)):  # fmt: skip
            if bound is not None:
                where.append(condition)
                args.append(bound)
        if q.text:
            where.append("(lower(label) LIKE ? ESCAPE '\\' OR lower(sip_from) LIKE ? ESCAPE '\\' "
                         "OR lower(sip_to) LIKE ? ESCAPE '\\')")  # fmt: skip
            args += [contains(q.text.lower())] * 3
        return " WHERE " + " AND ".join(where), args

    def page(self, q: ListQuery) -> Page:
        """One page of calls matching ``q``, in its order (calls without the sorted value last), and the total."""
        self.sync()
        where, args = self._where(q)
        column = SORTS[q.sort]
        order = "DESC" if q.descending else "ASC"
        sql = (f"SELECT {COLUMNS} FROM reports{where} ORDER BY {column} IS NULL, {column} {order}, t DESC, id "
               "LIMIT ? OFFSET ?")  # fmt: skip
        with self.store.connect() as db:
            rows = db.execute(sql, (*args, max(0, q.limit), max(0, q.offset))).fetchall()
            total = db.execute(f"SELECT count(*) FROM reports{where}", args).fetchone()[0]
            facets = {name: [r[0] for r in db.execute(
                f"SELECT DISTINCT {name} FROM reports WHERE {name} != '' AND kind != '' ORDER BY {name} LIMIT 500")]
                for name in ("agent", "campaign", "carrier", "direction")}  # fmt: skip
        return Page([CallEntry.from_row(r) for r in rows], int(total), q, facets)

    def entries(self, since: float | None = None, until: float | None = None) -> list[CallEntry]:
        """Every indexed call in a time range, oldest first (for trends)."""
        self.sync()
        where, args = self._where(ListQuery(since=since, until=until))
        with self.store.connect() as db:
            rows = db.execute(f"SELECT {COLUMNS} FROM reports{where} ORDER BY t, id", args).fetchall()
        return [CallEntry.from_row(r) for r in rows]
