"""Rollups of stored calls per group and time bucket: what trends, fault detection and the group metrics read.

A rollup is the figures of a set of calls that add up: counts (calls, verdicts, calls with each fault finding)
and histograms (call MOS, packet loss, jitter) on fixed bins, so a day is the sum of its hours and a week the
sum of its days. Medians and percentiles come from the histograms by linear interpolation inside a bin (as
Prometheus' ``histogram_quantile`` does): the MOS bins are 0.1 wide, so a median is within 0.05 of the exact one.

Groups: ``agent``, ``campaign``, ``carrier`` (trunk or SIP peer), ``site`` (capture site) and ``codec`` of each
call as the call index holds them, and ``all`` (every call, group ""). Buckets: 15 minutes, an hour, a day (UTC).
The table is kept up to date from the store's index columns: storing, replacing, deleting or first indexing a
report marks its quarter hour (``store.DIRTY``), ``refresh`` recomputes the marked quarters from the reports' index
columns, and the hours and days that hold them from the quarters. Plain SQL only (``?`` placeholders, portable
upserts); histograms are stored as text.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from callqa.callindex import COLUMNS, DIRTY, QUARTER_S, CallEntry, CallIndex
from callqa.store import Store

Dimension = Literal["agent", "campaign", "carrier", "site", "codec"]
DIMENSIONS: tuple[Dimension, ...] = ("agent", "campaign", "carrier", "site", "codec")
ALL = "all"  # the pseudo-dimension of every call (one group, "")
UNKNOWN = "(unknown)"  # the group of calls that do not say
FAULTS = ("one_way_audio", "dead_air", "no_media", "low_mos")  # finding codes counted per group (detectors.py)
VERDICTS = ("good", "degraded", "failed")
BUCKETS = {"15m": 900, "1h": 3600, "1d": 86400}
HOUR_S, DAY_S = 3600, 86400
MOS_EDGES = tuple(round(1.0 + 0.1 * i, 1) for i in range(41))  # 1.0 .. 5.0
LOSS_EDGES = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0)  # percent
JITTER_EDGES = (0.0, 2.0, 5.0, 10.0, 20.0, 30.0, 40.0, 60.0, 80.0, 100.0, 150.0, 200.0, 500.0, 1000.0)  # ms
ROLLUPS = "call_rollup_v1"
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {ROLLUPS} (
    dimension   TEXT NOT NULL,
    grp         TEXT NOT NULL,
    bucket_s    INTEGER NOT NULL,
    start       DOUBLE PRECISION NOT NULL,   -- epoch seconds (UTC) of the bucket's start
    calls       INTEGER NOT NULL,
    good        INTEGER NOT NULL,
    degraded    INTEGER NOT NULL,
    failed      INTEGER NOT NULL,
    one_way     INTEGER NOT NULL,
    dead_air    INTEGER NOT NULL,
    no_media    INTEGER NOT NULL,
    low_mos     INTEGER NOT NULL,
    mos         TEXT NOT NULL,   -- counts per MOS_EDGES bin, comma-separated
    loss        TEXT NOT NULL,   -- counts per LOSS_EDGES bin
    jitter      TEXT NOT NULL,   -- counts per JITTER_EDGES bin
    PRIMARY KEY (dimension, grp, bucket_s, start)
);
CREATE INDEX IF NOT EXISTS {ROLLUPS}_start ON {ROLLUPS} (bucket_s, start);
"""
_FIELDS = "calls, good, degraded, failed, one_way, dead_air, no_media, low_mos, mos, loss, jitter"


def _bin(edges: Sequence[float], value: float) -> int:
    """The bin of a value: [edges[i], edges[i+1]); values outside go to the first or last bin."""
    return min(max(bisect.bisect_right(edges, value) - 1, 0), len(edges) - 2)


def quantile(counts: Sequence[int], edges: Sequence[float], q: float) -> float | None:
    """The q-quantile of a histogram, interpolated linearly inside its bin; None when it is empty."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            return round(edges[i] + (edges[i + 1] - edges[i]) * max(0.0, rank - seen) / n, 3)
        seen += n
    return float(edges[-1])


def _zeros(edges: Sequence[float]) -> tuple[int, ...]:
    return (0,) * (len(edges) - 1)


@dataclass(frozen=True)
class Rollup:
    """Figures of a set of calls that add up (see the module's doc)."""

    calls: int = 0
    verdicts: tuple[int, int, int] = (0, 0, 0)  # good, degraded, failed
    faults: tuple[int, int, int, int] = (0, 0, 0, 0)  # calls with each of FAULTS
    mos: tuple[int, ...] = field(default_factory=lambda: _zeros(MOS_EDGES))
    loss: tuple[int, ...] = field(default_factory=lambda: _zeros(LOSS_EDGES))
    jitter: tuple[int, ...] = field(default_factory=lambda: _zeros(JITTER_EDGES))

    @classmethod
    def of(cls, calls: Iterable[CallEntry]) -> Rollup:
        verdicts, faults = [0, 0, 0], [0, 0, 0, 0]
        mos, loss, jitter = list(_zeros(MOS_EDGES)), list(_zeros(LOSS_EDGES)), list(_zeros(JITTER_EDGES))
        n = 0
        for c in calls:
            n += 1
            if c.verdict in VERDICTS:
                verdicts[VERDICTS.index(c.verdict)] += 1
            for i, code in enumerate(FAULTS):
                faults[i] += code in c.findings
            if c.mos is not None:
                mos[_bin(MOS_EDGES, c.mos)] += 1
            if c.loss_pct is not None:
                loss[_bin(LOSS_EDGES, c.loss_pct)] += 1
            if c.jitter_ms is not None:
                jitter[_bin(JITTER_EDGES, c.jitter_ms)] += 1
        return cls(n, tuple(verdicts), tuple(faults), tuple(mos), tuple(loss), tuple(jitter))  # type: ignore[arg-type]

    def __add__(self, other: Rollup) -> Rollup:
        def add(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
            return tuple(x + y for x, y in zip(a, b, strict=True))

        return Rollup(self.calls + other.calls, add(self.verdicts, other.verdicts), add(self.faults, other.faults),  # type: ignore[arg-type]
                      add(self.mos, other.mos), add(self.loss, other.loss), add(self.jitter, other.jitter))  # fmt: skip

    def count(self, fault: str) -> int:
        return self.faults[FAULTS.index(fault)]

    def rate(self, fault: str) -> float:
        """Share of the calls with this fault finding (0 without calls)."""
        return self.count(fault) / self.calls if self.calls else 0.0

    @property
    def mos_calls(self) -> int:
        return sum(self.mos)

    def mos_quantile(self, q: float) -> float | None:
        return quantile(self.mos, MOS_EDGES, q)

    @property
    def median_mos(self) -> float | None:
        return self.mos_quantile(0.5)

    def loss_quantile(self, q: float) -> float | None:
        return quantile(self.loss, LOSS_EDGES, q)

    def jitter_quantile(self, q: float) -> float | None:
        return quantile(self.jitter, JITTER_EDGES, q)

    def as_json(self) -> dict[str, Any]:
        """The figures as the API and ``callqa trends --format json`` give them."""
        return {
            "calls": self.calls,
            "verdicts": dict(zip(VERDICTS, self.verdicts, strict=True)),
            "faults": {f: {"calls": self.count(f), "rate": round(self.rate(f), 5)} for f in FAULTS},
            "mos": {"calls": self.mos_calls, "median": self.median_mos, "p10": self.mos_quantile(0.1),
                    "p90": self.mos_quantile(0.9),
                    "distribution": dict(zip((f"{e:.1f}" for e in MOS_EDGES), self.mos, strict=False))},
            "loss_pct": {"calls": sum(self.loss), "p50": self.loss_quantile(0.5), "p95": self.loss_quantile(0.95)},
            "jitter_ms": {"calls": sum(self.jitter), "p50": self.jitter_quantile(0.5),
                          "p95": self.jitter_quantile(0.95)},
        }  # fmt: skip

    def _row(self) -> tuple[Any, ...]:
        return (self.calls, *self.verdicts, *self.faults, *(",".join(map(str, h)) for h in (self.mos, self.loss,
                self.jitter)))  # fmt: skip

    @classmethod
    def _from_row(cls, r: Sequence[Any]) -> Rollup:
        def hist(text: str, edges: Sequence[float]) -> tuple[int, ...]:
            got = tuple(int(x) for x in text.split(",") if x)
            return got if len(got) == len(edges) - 1 else _zeros(edges)

        return cls(int(r[0]), (r[1], r[2], r[3]), (r[4], r[5], r[6], r[7]), hist(r[8], MOS_EDGES),
                   hist(r[9], LOSS_EDGES), hist(r[10], JITTER_EDGES))  # fmt: skip


def group_of(call: CallEntry, dimension: str) -> str:
    if dimension == ALL:
        return ""
    return str(getattr(call, dimension) or UNKNOWN)


def by_group(calls: Iterable[CallEntry], dimension: str) -> dict[str, list[CallEntry]]:
    out: dict[str, list[CallEntry]] = {}
    for c in calls:
        out.setdefault(group_of(c, dimension), []).append(c)
    return out


_INSERT = (f"INSERT INTO {ROLLUPS} (dimension, grp, bucket_s, start, {_FIELDS}) VALUES "
           f"({', '.join('?' * 15)})")  # fmt: skip


REFRESH_DAYS = 7  # days of changed quarter hours recomputed per transaction (writers wait on a long one)


def refresh(store: Store) -> int:
    """Bring the index and the rollups up to date; returns the quarter hours recomputed."""
    CallIndex(store).sync()
    with store.connect() as db:
        db.executescript(SCHEMA)
        quarters = sorted(r[0] for r in db.execute(f"SELECT start FROM {DIRTY}"))
    days = sorted({q - q % DAY_S for q in quarters})
    for a in range(0, len(days), REFRESH_DAYS):
        chosen = set(days[a : a + REFRESH_DAYS])
        with store.connect() as db:
            _recompute(db, [q for q in quarters if q - q % DAY_S in chosen])
    return len(quarters)


def _recompute(db: Any, quarters: list[float]) -> None:
    """Recompute these quarter hours from the index, and their hours and days from the quarters, in one
    transaction. Their marks go first: that write takes the lock, so a call indexed meanwhile marks its quarter
    again (for the next refresh) instead of being lost."""
    db.executemany(f"DELETE FROM {DIRTY} WHERE start = ?", [(q,) for q in quarters])
    for q in quarters:
        rows = db.execute(f"SELECT {COLUMNS} FROM reports WHERE kind != '' AND t >= ? AND t < ?",
                          (q, q + QUARTER_S)).fetchall()  # fmt: skip
        calls = [CallEntry.from_row(r) for r in rows]
        db.execute(f"DELETE FROM {ROLLUPS} WHERE bucket_s = ? AND start = ?", (int(QUARTER_S), q))
        fresh = [(dim, key, int(QUARTER_S), q, *Rollup.of(members)._row())
                 for dim in (ALL, *DIMENSIONS) for key, members in by_group(calls, dim).items()]  # fmt: skip
        db.executemany(_INSERT, fresh)
    for small, big in ((int(QUARTER_S), HOUR_S), (HOUR_S, DAY_S)):
        for start in sorted({q - q % big for q in quarters}):
            sums: dict[tuple[str, str], Rollup] = {}
            for r in db.execute(f"SELECT dimension, grp, {_FIELDS} FROM {ROLLUPS} WHERE bucket_s = ? AND "
                                "start >= ? AND start < ?", (small, start, start + big)):  # fmt: skip
                sums[(r[0], r[1])] = sums.get((r[0], r[1]), Rollup()) + Rollup._from_row(r[2:])
            db.execute(f"DELETE FROM {ROLLUPS} WHERE bucket_s = ? AND start = ?", (big, start))
            db.executemany(_INSERT, [(dim, key, big, start, *r._row()) for (dim, key), r in sums.items()])


def read(store: Store, dimension: str, bucket_s: int, since: float, until: float,
         groups: Sequence[str] | None = None) -> list[tuple[str, float, Rollup]]:  # fmt: skip
    """Rollup rows (group, bucket start, figures) of buckets starting in [since, until), oldest first.
    The caller refreshes first (``refresh``) when it needs the newest calls."""
    if dimension not in (ALL, *DIMENSIONS):
        raise ValueError(f"group by one of {', '.join(DIMENSIONS)}, not {dimension!r}")
    sql = (f"SELECT grp, start, {_FIELDS} FROM {ROLLUPS} WHERE dimension = ? AND bucket_s = ? AND start >= ? "
           "AND start < ?")  # fmt: skip
    args: list[object] = [dimension, int(bucket_s), since, until]
    if groups is not None:
        if not groups:
            return []
        sql += f" AND grp IN ({', '.join('?' * len(groups))})"
        args += list(groups)
    with store.connect() as db:
        db.executescript(SCHEMA)
        rows = db.execute(sql + " ORDER BY start, grp", args).fetchall()
    return [(r[0], float(r[1]), Rollup._from_row(r[2:])) for r in rows]


def totals(rows: Iterable[tuple[str, float, Rollup]]) -> dict[str, Rollup]:
    """Rollup rows summed per group."""
    out: dict[str, Rollup] = {}
    for key, _, r in rows:
        out[key] = out.get(key, Rollup()) + r
    return out
