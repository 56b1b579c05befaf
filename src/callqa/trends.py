"""Quality trends over stored calls, per agent, campaign, carrier/trunk or hour of day.

For each group: how many calls, the share with one-way audio, with dead air and with a low MOS (each a call
with that finding, as the detectors decided it), the median call MOS (a call's MOS is its lowest leg's: NISQA
when it ran, else DNSMOS OVRL), the same figures per time bucket (a day, or an hour for short ranges), and its
worst calls (failed before degraded, then the lowest MOS). ``compute`` is a pure function of index entries;
``trends`` reads them from the store. Times are UTC.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from callqa.callindex import SEVERITY, CallEntry, CallIndex
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
