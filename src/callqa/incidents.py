"""Systemic faults: a group's fault rate or median MOS in the current window against its own baseline.

One bad call is a finding; the same fault on 6% of a carrier's calls in the last hour, against 0.5% the same
hours of the last week, is an incident. Every evaluation (``evaluate``) judges each group of each dimension
(agent, campaign, carrier, capture site, codec) that had at least ``min_calls`` calls in the window
``[now - window_s, now)``:

- fault rates (calls with a one_way_audio, dead_air, no_media or low_mos finding): the window's count against
  the baseline's, with the exact conditional test of two Poisson rates (given both counts' sum, the window's
  share is binomial; ``scipy.stats.binomtest``, one-sided), so a short baseline weighs as little as it should;
  raised when p < ``alpha``, the rate is ``min_ratio`` times the baseline's and ``min_rate_delta`` above it;
- the median MOS: a sign test (the share of the window's calls below the baseline's median against one half),
  raised when p < ``alpha`` and the median fell by ``mos_drop`` or more.

The baseline is the group's calls in the same hours of each of the last ``baseline_days`` days, or the whole of
those days when the same hours hold fewer than ``baseline_min_calls`` calls, or every call's (dimension ``all``)
when the group itself has too few (a new carrier). Figures come from the rollups (``rollups.py``).

A carrier's fault shows in every agent who used that carrier too. So raised checks are taken strongest first,
and each one taken explains its calls away: the others are judged again without the calls of groups already
raised for the same fault, and only those still raised count. An incident opens for each raised check that has
none open, keeps its evidence at opening and its latest, lists the worst calls, and closes when its check has not
held (p < ``close_alpha`` and the effect half there) for ``clear_after_s``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from scipy.stats import binomtest

from callqa import rollups
from callqa.callindex import CallEntry, CallIndex
from callqa.config import AlertSettings
from callqa.rollups import ALL, DAY_S, DIMENSIONS, FAULTS, Rollup
from callqa.store import Store
from callqa.trends import badness

METRICS = (*FAULTS, "median_mos")
PRIORITY = ("carrier", "site", "codec", "campaign", "agent")  # equal evidence: the network side first
TABLE = "incidents_v1"
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id          TEXT PRIMARY KEY,
    dimension   TEXT NOT NULL,
    grp         TEXT NOT NULL,
    metric      TEXT NOT NULL,
    state       TEXT NOT NULL,  -- open or closed
    opened_at   DOUBLE PRECISION NOT NULL,
    last_seen   DOUBLE PRECISION NOT NULL,  -- the last evaluation at which the fault still held
    closed_at   DOUBLE PRECISION,
    evidence    TEXT NOT NULL,  -- JSON: the check that opened it
    latest      TEXT NOT NULL,  -- JSON: the latest check that held
    worst       TEXT NOT NULL   -- JSON: ids of the worst calls of the window
);
CREATE INDEX IF NOT EXISTS {TABLE}_state ON {TABLE} (state, opened_at);
"""


def rate_test(k: int, n: int, base_k: int, base_n: int) -> float:
    """One-sided p-value that k faults in n calls come at a higher rate than base_k in base_n.

    The exact conditional test of two Poisson rates: given the k + base_k faults of both, each is the window's
    with probability n / (n + base_n) when the rates are equal, so k follows a binomial law."""
    if k == 0 or n <= 0 or base_n <= 0:
        return 1.0
    return float(binomtest(k, k + base_k, n / (n + base_n), alternative="greater").pvalue)


@dataclass(frozen=True)
class Check:
    """One group and metric judged in one window."""

    dimension: str
    group: str
    metric: str
    window_start: float
    window_end: float
    calls: int  # calls in the window (with a MOS, for median_mos)
    count: int  # of them: with the fault (below the baseline's median, for median_mos)
    value: float | None  # the window's rate, or its median MOS
    baseline_calls: int
    baseline_value: float | None  # the baseline's rate or median MOS
    baseline_kind: str  # same_hours, whole_days or all_calls
    p_value: float
    raised: bool  # opens an incident
    holds: bool  # keeps one open

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Incident:
    id: str
    dimension: str
    group: str
    metric: str
    state: str
    opened_at: float
    last_seen: float
    closed_at: float | None
    evidence: dict[str, Any]
    latest: dict[str, Any]
    worst: list[str]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def summary(self) -> str:
        e = self.latest
        if self.metric == "median_mos":
            what = f"median MOS {e['value']} against {e['baseline_value']}"
        else:
            now, before = 100 * (e["value"] or 0), 100 * (e["baseline_value"] or 0)
            what = f"{self.metric} on {now:.1f}% of calls against {before:.2f}%"
        return f"{self.dimension} {self.group}: {what} ({e['count']} of {e['calls']} calls, p={e['p_value']:.2g})"


@dataclass
class Evaluation:
    now: float
    checks: list[Check] = field(default_factory=list)  # every group and metric judged
    raised: list[Check] = field(default_factory=list)  # after explaining away
    opened: list[Incident] = field(default_factory=list)
    closed: list[Incident] = field(default_factory=list)
    open: list[Incident] = field(default_factory=list)  # open after this evaluation (opened ones included)


def _baselines(store: Store, dimension: str, now: float, cfg: AlertSettings) -> dict[str, tuple[Rollup, str]]:
    """Each group's baseline figures and kind (see the module's doc)."""
    same: dict[str, Rollup] = {}
    for d in range(1, cfg.baseline_days + 1):
        end = now - d * DAY_S
        for key, r in rollups.totals(rollups.read(store, dimension, 900, end - cfg.window_s, end)).items():
            same[key] = same.get(key, Rollup()) + r
    today = now - now % DAY_S
    whole = rollups.totals(rollups.read(store, dimension, DAY_S, today - cfg.baseline_days * DAY_S, today))
    out: dict[str, tuple[Rollup, str]] = {}
    for key in set(same) | set(whole):
        if key in same and same[key].calls >= cfg.baseline_min_calls:
            out[key] = (same[key], "same_hours")
        elif key in whole:
            out[key] = (whole[key], "whole_days")
    return out


def _judge(dimension: str, group: str, metric: str, calls: Sequence[CallEntry], base: Rollup, kind: str,
           start: float, now: float, cfg: AlertSettings) -> Check | None:  # fmt: skip
    if metric == "median_mos":
        moss = [c.mos for c in calls if c.mos is not None]
        centre = base.median_mos
        if len(moss) < cfg.min_calls or centre is None or base.mos_calls < cfg.min_calls:
            return None
        below = sum(m < centre for m in moss)
        median = Rollup.of(c for c in calls if c.mos is not None).median_mos
        p = float(binomtest(below, len(moss), 0.5, alternative="greater").pvalue)
        drop = centre - (median if median is not None else centre)
        raised = p < cfg.alpha and drop >= cfg.mos_drop
        holds = p < cfg.close_alpha and drop >= cfg.mos_drop / 2
        return Check(dimension, group, metric, start, now, len(moss), below, median, base.mos_calls, centre, kind,
                     p, raised, holds)  # fmt: skip
    if len(calls) < cfg.min_calls or base.calls < cfg.min_calls:
        return None
    k = sum(metric in c.findings for c in calls)
    rate = k / len(calls)
    base_rate = base.rate(metric)
    p = rate_test(k, len(calls), base.count(metric), base.calls)
    raised = p < cfg.alpha and rate >= cfg.min_ratio * base_rate and rate - base_rate >= cfg.min_rate_delta
    holds = p < cfg.close_alpha and rate - base_rate >= cfg.min_rate_delta / 2
    return Check(dimension, group, metric, start, now, len(calls), k, round(rate, 5), base.calls,
                 round(base_rate, 5), kind, p, raised, holds)  # fmt: skip


def judge_window(
    store: Store, calls: Sequence[CallEntry], now: float, cfg: AlertSettings
) -> tuple[list[Check], list[Check]]:
    """Every check of the window's calls, and the raised ones after explaining away (strongest first)."""
    start = now - cfg.window_s
    everyone = _baselines(store, ALL, now, cfg).get("", (Rollup(), "all_calls"))[0]
    groups: dict[tuple[str, str], list[CallEntry]] = {}
    bases: dict[tuple[str, str], tuple[Rollup, str]] = {}
    for dim in DIMENSIONS:
        own = _baselines(store, dim, now, cfg)
        for key, members in rollups.by_group(calls, dim).items():
            groups[(dim, key)] = members
            base = own.get(key)
            bases[(dim, key)] = base if base and base[0].calls >= cfg.min_calls else (everyone, "all_calls")

    def run(excluded: dict[str, set[str]]) -> list[Check]:
        out = []
        for (dim, key), members in groups.items():
            for metric in METRICS:
                gone = excluded.get(metric, set())
                kept = [c for c in members if c.id not in gone] if gone else members
                check = _judge(dim, key, metric, kept, *bases[(dim, key)], start, now, cfg)
                if check is not None:
                    out.append(check)
        return out

    checks = run({})
    taken: list[Check] = []
    excluded: dict[str, set[str]] = {}
    current = checks
    while True:
        done = {(c.dimension, c.group, c.metric) for c in taken}
        pending = [c for c in current if c.raised and (c.dimension, c.group, c.metric) not in done]
        if not pending:
            break
        best = min(pending, key=lambda c: (c.p_value, PRIORITY.index(c.dimension), c.group))
        taken.append(best)
        excluded.setdefault(best.metric, set()).update(c.id for c in groups[(best.dimension, best.group)])
        current = run(excluded)
    return checks, taken


def _worst(calls: Iterable[CallEntry], check: Check, n: int) -> list[str]:
    if check.metric == "median_mos":
        chosen = sorted((c for c in calls if c.mos is not None), key=lambda c: c.mos or 0.0)
    else:
        chosen = sorted((c for c in calls if check.metric in c.findings), key=badness)
    return [c.id for c in chosen[:n]]


def _incident(r: Sequence[Any]) -> Incident:
    return Incident(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8]), json.loads(r[9]),
                    json.loads(r[10]))  # fmt: skip


_COLUMNS = "id, dimension, grp, metric, state, opened_at, last_seen, closed_at, evidence, latest, worst"


def evaluate(store: Store, cfg: AlertSettings, now: float | None = None) -> Evaluation:
    """Judge the window ending ``now`` (rounded down to a quarter hour), open and close incidents."""
    now = time.time() if now is None else now
    now -= now % 900
    rollups.refresh(store)
    calls = CallIndex(store).entries(now - cfg.window_s, now)
    checks, raised = judge_window(store, calls, now, cfg)
    result = Evaluation(now, checks, raised)
    by_key = {(c.dimension, c.group, c.metric): c for c in checks}
    groups: dict[str, dict[str, list[CallEntry]]] = {dim: rollups.by_group(calls, dim) for dim in DIMENSIONS}
    with store.connect() as db:
        db.executescript(SCHEMA)
        open_now = {(i.dimension, i.group, i.metric): i for i in
                    map(_incident, db.execute(f"SELECT {_COLUMNS} FROM {TABLE} WHERE state = 'open'"))}  # fmt: skip
        for check in raised:
            key = (check.dimension, check.group, check.metric)
            if key in open_now:
                continue
            worst = _worst(groups[check.dimension].get(check.group, []), check, cfg.worst_calls)
            inc = Incident(secrets.token_hex(6), *key, "open", now, now, None, check.as_json(), check.as_json(), worst)
            db.execute(f"INSERT INTO {TABLE} ({_COLUMNS}) VALUES ({', '.join('?' * 11)})",
                       (inc.id, *key, "open", now, now, None, json.dumps(inc.evidence), json.dumps(inc.latest),
                        json.dumps(worst)))  # fmt: skip
            result.opened.append(inc)
        for key, inc in open_now.items():
            now_check = by_key.get(key)
            if now_check is not None and now_check.holds:
                check = now_check
                worst = _worst(groups[inc.dimension].get(inc.group, []), check, cfg.worst_calls)
                db.execute(f"UPDATE {TABLE} SET last_seen = ?, latest = ?, worst = ? WHERE id = ?",
                           (now, json.dumps(check.as_json()), json.dumps(worst), inc.id))  # fmt: skip
                result.open.append(Incident(inc.id, *key, "open", inc.opened_at, now, None, inc.evidence,
                                            check.as_json(), worst))  # fmt: skip
            elif now - inc.last_seen >= cfg.clear_after_s:
                db.execute(f"UPDATE {TABLE} SET state = 'closed', closed_at = ? WHERE id = ?", (now, inc.id))
                result.closed.append(Incident(inc.id, *key, "closed", inc.opened_at, inc.last_seen, now,
                                              inc.evidence, inc.latest, inc.worst))  # fmt: skip
            else:
                result.open.append(inc)
    result.open += result.opened
    return result


def incidents(store: Store, state: str | None = None, since: float | None = None, limit: int = 100) -> list[Incident]:
    """Stored incidents, newest opened first; ``state`` open or closed; ``since`` on the opening time."""
    where: list[str] = []
    args: list[object] = []
    if state:
        where.append("state = ?")
        args.append(state)
    if since is not None:
        where.append("opened_at >= ?")
        args.append(since)
    sql = f"SELECT {_COLUMNS} FROM {TABLE}" + (" WHERE " + " AND ".join(where) if where else "")
    with store.connect() as db:
        db.executescript(SCHEMA)
        rows = db.execute(sql + " ORDER BY opened_at DESC, id LIMIT ?", (*args, max(0, limit))).fetchall()
    return [_incident(r) for r in rows]
