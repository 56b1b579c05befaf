"""Quality trends over stored calls, per agent, campaign, carrier/trunk or hour of day.

For each group: how many calls, the share with one-way audio, with dead air and with a low MOS (each a call
with that finding, as the detectors decided it), the median call MOS (a call's MOS is its lowest leg's: NISQA
when it ran, else DNSMOS OVRL), the same figures per time bucket (a day, or an hour for short ranges), and its
worst calls (failed before degraded, then the lowest MOS). ``compute`` is a pure function of index entries;
``trends`` reads them from the store (the web page's trends). Times are UTC.

``group_trends`` reads the rollups (``rollups.py``) instead: per agent, campaign, carrier, capture site or codec
and per 15 minutes, hour or day, with verdict counts, fault rates, the MOS distribution and loss/jitter
percentiles (``GET /trends``, ``callqa trends``).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from callqa import rollups
from callqa.callindex import SEVERITY, CallEntry, CallIndex
from callqa.errors import InputError
from callqa.store import Store

GroupBy = Literal["agent", "campaign", "carrier", "hour"]
GROUPS: tuple[GroupBy, ...] = ("agent", "campaign", "carrier", "hour")
UNKNOWN = "(unknown)"
DAY_S = 86400.0
HOUR_S = 3600.0


@dataclass(frozen=True)
class Figures:
    """Counts and shares over a set of calls."""

    calls: int
    one_way: int
    dead_air: int
    low_mos: int
    median_mos: float | None

    @property
    def one_way_share(self) -> float:
        return self.one_way / self.calls if self.calls else 0.0

    @property
    def dead_air_share(self) -> float:
        return self.dead_air / self.calls if self.calls else 0.0

    @property
    def low_mos_share(self) -> float:
        return self.low_mos / self.calls if self.calls else 0.0

    @classmethod
    def of(cls, calls: list[CallEntry]) -> Figures:
        moss = [c.mos for c in calls if c.mos is not None]
        return cls(
            calls=len(calls),
            one_way=sum("one_way_audio" in c.findings for c in calls),
            dead_air=sum("dead_air" in c.findings for c in calls),
            low_mos=sum("low_mos" in c.findings for c in calls),
            median_mos=round(statistics.median(moss), 3) if moss else None,
        )


@dataclass(frozen=True)
class Bucket:
    start: float  # epoch seconds (UTC)
    figures: Figures


@dataclass(frozen=True)
class GroupTrend:
    key: str  # the agent, campaign, carrier or "HH:00"; UNKNOWN where the calls do not say
    figures: Figures
    series: list[Bucket]  # every bucket of the range, empty ones included (calls 0)
    worst: list[CallEntry]


@dataclass(frozen=True)
class Trends:
    by: GroupBy
    since: float
    until: float
    bucket_s: float
    overall: Figures
    groups: list[GroupTrend]  # most calls first


def group_key(call: CallEntry, by: GroupBy) -> str:
    if by == "hour":
        return f"{datetime.fromtimestamp(call.t, UTC).hour:02d}:00"
    return getattr(call, by) or UNKNOWN


def badness(call: CallEntry) -> tuple[int, float, int]:
    """Sort key, worst first: failed before degraded before good, then the lowest MOS, then most findings."""
    return (-SEVERITY.get(call.verdict, 0), call.mos if call.mos is not None else 9.0, -len(call.findings))


def bucket_size(since: float, until: float) -> float:
    """A day per point, or an hour for ranges of up to two days."""
    return HOUR_S if until - since <= 2 * DAY_S else DAY_S


def compute(entries: Iterable[CallEntry], by: GroupBy, since: float, until: float, worst: int = 3,
            bucket_s: float | None = None) -> Trends:  # fmt: skip
    """Trends of the calls in [since, until) grouped ``by``."""
    if by not in GROUPS:
        raise ValueError(f"group by one of {', '.join(GROUPS)}, not {by!r}")
    step = bucket_s or bucket_size(since, until)
    first = since - since % step
    starts = [first + i * step for i in range(max(1, int((until - first + step - 1e-9) // step)))]
    calls = [c for c in entries if since <= c.t < until]
    groups: dict[str, list[CallEntry]] = {}
    for c in calls:
        groups.setdefault(group_key(c, by), []).append(c)
    out = []
    for key, members in groups.items():
        per: dict[float, list[CallEntry]] = {}
        for c in members:
            per.setdefault(c.t - c.t % step, []).append(c)
        series = [Bucket(s, Figures.of(per.get(s, []))) for s in starts]
        out.append(GroupTrend(key, Figures.of(members), series, sorted(members, key=badness)[:worst]))
    out.sort(key=lambda g: (-g.figures.calls, g.key))
    return Trends(by, since, until, step, Figures.of(calls), out)


def trends(store: Store, by: GroupBy, since: float, until: float, worst: int = 3) -> Trends:
    """Trends of the stored calls in [since, until) (epoch seconds, on each call's time)."""
    return compute(CallIndex(store).entries(since, until), by, since, until, worst)


# --- rollups: GET /trends and ``callqa trends`` ---------------------------------------------------------------

Bucket_ = Literal["15m", "1h", "1d"]


def pick_bucket(since: float, until: float) -> Bucket_:
    """15 minutes for up to 6 hours, an hour for up to 2 days, else a day."""
    span = until - since
    return "15m" if span <= 6 * HOUR_S else "1h" if span <= 2 * DAY_S else "1d"


@dataclass(frozen=True)
class GroupRollup:
    key: str
    total: rollups.Rollup
    series: list[tuple[float, rollups.Rollup]]  # every bucket of the range, empty ones included


@dataclass(frozen=True)
class RollupTrends:
    by: str
    bucket: Bucket_
    since: float  # the first bucket's start
    until: float
    overall: rollups.Rollup
    groups: list[GroupRollup]  # most calls first

    def as_json(self, series: bool = True) -> dict[str, object]:
        def iso(t: float) -> str:
            return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")

        return {
            "by": self.by, "bucket": self.bucket, "since": iso(self.since), "until": iso(self.until),
            "overall": self.overall.as_json(),
            "groups": [{"group": g.key, **g.total.as_json(),
                        **({"series": [{"start": iso(s), **r.as_json()} for s, r in g.series]} if series else {})}
                       for g in self.groups],
        }  # fmt: skip

    def csv_rows(self) -> list[list[object]]:
        """One row per group and bucket (calls 0 rows left out), with a header row."""
        rates = [f"{f}_rate" for f in rollups.FAULTS]
        head: list[object] = ["group", "bucket_start", "calls", *rollups.VERDICTS, *rates, "mos_median", "mos_p10",
                              "loss_p50", "loss_p95", "jitter_p50", "jitter_p95"]  # fmt: skip
        out: list[list[object]] = [head]
        for g in self.groups:
            for start, r in g.series:
                if r.calls:
                    out.append([g.key, datetime.fromtimestamp(start, UTC).isoformat().replace("+00:00", "Z"),
                                r.calls, *r.verdicts, *(round(r.rate(f), 5) for f in rollups.FAULTS), r.median_mos,
                                r.mos_quantile(0.1), r.loss_quantile(0.5), r.loss_quantile(0.95),
                                r.jitter_quantile(0.5), r.jitter_quantile(0.95)])  # fmt: skip
        return out


def group_trends(store: Store, by: str, since: float, until: float, bucket: Bucket_ | None = None,
                 limit: int = 50) -> RollupTrends:  # fmt: skip
    """Rollups of the stored calls per group (``rollups.DIMENSIONS``) and bucket over [since, until): the
    ``limit`` groups with the most calls, each with its total and its series. Buckets whose start is in the
    range count (the first starts at ``since`` rounded down to the bucket)."""
    if by not in rollups.DIMENSIONS:
        raise ValueError(f"group by one of {', '.join(rollups.DIMENSIONS)}, not {by!r}")
    if until <= since:
        raise ValueError("the range is empty: 'until' must be after 'since'")
    bucket = bucket or pick_bucket(since, until)
    if bucket not in rollups.BUCKETS:
        raise ValueError(f"bucket is one of {', '.join(rollups.BUCKETS)}, not {bucket!r}")
    step = rollups.BUCKETS[bucket]
    first = since - since % step
    if (until - first) / step > 5000:
        raise ValueError(f"too many {bucket} buckets in the range: choose a larger bucket or a shorter range")
    rollups.refresh(store)
    rows = rollups.read(store, by, step, first, until)
    sums = rollups.totals(rows)
    keep = sorted(sums, key=lambda k: (-sums[k].calls, k))[: max(1, limit)]
    starts = [first + i * step for i in range(int((until - first + step - 1e-9) // step))]
    per: dict[str, dict[float, rollups.Rollup]] = {k: {} for k in keep}
    for key, start, r in rows:
        if key in per:
            per[key][start] = r
    groups = [GroupRollup(k, sums[k], [(s, per[k].get(s, rollups.Rollup())) for s in starts]) for k in keep]
    overall = sum((r for _, _, r in rollups.read(store, rollups.ALL, step, first, until)), rollups.Rollup())
    return RollupTrends(by, bucket, first, until, overall, groups)


LAST_TIME = 253402300799.0  # 9999-12-31T23:59:59Z
_UNITS = {"m": 60.0, "h": HOUR_S, "d": DAY_S, "w": 7 * DAY_S}


def parse_time(text: str, now: float) -> float:
    """Epoch seconds of '24h', '90m', '7d', '2w' (that long before ``now``), epoch seconds, or an ISO 8601
    date or time (UTC unless it says), between 1970 and 9999. Raises InputError with what was wrong."""
    value = text.strip()
    t: float | None = None
    if len(value) >= 2 and value[-1].lower() in _UNITS and value[:-1].replace(".", "", 1).isdigit():
        t = now - float(value[:-1]) * _UNITS[value[-1].lower()]
    else:
        with suppress(ValueError):
            t = float(value)
        if t is None:
            with suppress(ValueError, OverflowError):
                d = datetime.fromisoformat(value.replace("Z", "+00:00"))
                t = (d if d.tzinfo else d.replace(tzinfo=UTC)).timestamp()
    if t is None or not 0 <= t <= LAST_TIME:  # NaN fails too
        raise InputError(f"not a time: {text[:40]!r} (use 24h, 7d, epoch seconds or an ISO date like 2026-03-09)")
    return t
