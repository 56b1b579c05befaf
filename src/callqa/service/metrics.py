"""Prometheus metrics. Labels are bounded sets (verdicts, model names, outcomes, route templates): no call
ids, phone numbers or addresses ever become labels.

Per-group quality (``GroupCollector``): on each scrape, the rollups of the stored calls over the trailing
``metrics.group_window_s`` per dimension (agent, campaign, carrier, site, codec). Only the ``top_groups`` groups
with the most calls of each dimension get their own ``group`` label; the rest are summed into ``group="other"``,
so a dimension never has more than ``top_groups + 1`` label values. They come from the store, so every process
that stores reports (the workers, ``callqa sniff``) counts, and a restart loses nothing."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import suppress

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from callqa import rollups
from callqa.config import MetricsSettings
from callqa.errors import CallqaError
from callqa.report import CallReport
from callqa.rollups import DIMENSIONS, FAULTS, Rollup
from callqa.store import Store

log = logging.getLogger("callqa.metrics")
OTHER = "other"
QUANTILES = (0.1, 0.5, 0.9)
GROUP_METRICS = ("callqa_group_calls", "callqa_group_fault_calls", "callqa_group_fault_ratio", "callqa_group_mos",
                 "callqa_group_loss_percent", "callqa_group_jitter_ms", "callqa_group_window_seconds",
                 "callqa_incidents_open")  # fmt: skip


def capped(sums: dict[str, Rollup], top: int) -> dict[str, Rollup]:
    """The ``top`` groups with the most calls, the rest summed as ``other`` (label values cut to 64 characters)."""
    order = sorted(sums, key=lambda k: (-sums[k].calls, k))
    out = {k[:64]: sums[k] for k in order[:top]}
    rest = [sums[k] for k in order[top:]]
    if rest:
        out[OTHER] = sum(rest, out.get(OTHER, Rollup()))
    return out


class GroupCollector(Collector):
    def __init__(self, store: Store, settings: MetricsSettings, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        from callqa import incidents  # the detection reads the rollups too; imported when first scraped

        window = self.settings.group_window_s
        now = self.clock()
        since = now - now % 900 - window + 900  # the quarter hours of the window, the current one included
        labels = ["dimension", "group"]
        calls = GaugeMetricFamily("callqa_group_calls", "Calls per group over the trailing window", labels=labels)
        faults = GaugeMetricFamily("callqa_group_fault_calls", "Calls with a fault finding per group",
                                   labels=[*labels, "fault"])  # fmt: skip
        ratio = GaugeMetricFamily("callqa_group_fault_ratio", "Share of a group's calls with a fault finding",
                                  labels=[*labels, "fault"])  # fmt: skip
        mos = GaugeMetricFamily("callqa_group_mos", "Call MOS quantiles per group", labels=[*labels, "quantile"])
        loss = GaugeMetricFamily("callqa_group_loss_percent", "Packet loss quantiles (worst direction) per group",
                                 labels=[*labels, "quantile"])  # fmt: skip
        jitter = GaugeMetricFamily("callqa_group_jitter_ms", "Mean jitter quantiles (worst direction) per group",
                                   labels=[*labels, "quantile"])  # fmt: skip
        try:
            rollups.refresh(self.store)
            for dim in DIMENSIONS:
                sums = capped(rollups.totals(rollups.read(self.store, dim, 900, since, now + 900)),
                              self.settings.top_groups)  # fmt: skip
                for key, r in sums.items():
                    calls.add_metric([dim, key], r.calls)
                    for fault in FAULTS:
                        faults.add_metric([dim, key, fault], r.count(fault))
                        ratio.add_metric([dim, key, fault], r.rate(fault))
                    for q in (0.5, 0.95):
                        for family, value in ((loss, r.loss_quantile(q)), (jitter, r.jitter_quantile(q))):
                            if value is not None:
                                family.add_metric([dim, key, str(q)], value)
                    for q in QUANTILES:
                        value = r.mos_quantile(q)
                        if value is not None:
                            mos.add_metric([dim, key, str(q)], value)
        except (sqlite3.Error, CallqaError) as exc:  # the store is busy or gone: empty families, not a failed scrape
            log.warning("per-group metrics skipped: %s", exc)
        yield from (calls, faults, ratio, mos, loss, jitter)
        yield GaugeMetricFamily("callqa_group_window_seconds", "The trailing window of the group gauges",
                                value=window)  # fmt: skip
        open_ = GaugeMetricFamily("callqa_incidents_open", "Open incidents by dimension and fault",
                                  labels=["dimension", "fault"])  # fmt: skip
        counts: dict[tuple[str, str], int] = {(d, m): 0 for d in DIMENSIONS for m in incidents.METRICS}
        with suppress(sqlite3.Error, CallqaError):
            for inc in incidents.incidents(self.store, state="open", limit=10_000):
                counts[(inc.dimension, inc.metric)] = counts.get((inc.dimension, inc.metric), 0) + 1
        for (dimension, metric), n in sorted(counts.items()):
            open_.add_metric([dimension, metric], n)
        yield open_


MOS_BUCKETS = (1.0, 1.5, 2.0, 2.5, 3.0, 3.25, 3.5, 3.75, 4.0, 4.25, 4.5, 5.0)
SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 60.0, 120.0, 300.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.calls = Counter("callqa_calls_analyzed", "Calls analysed, by verdict", ["verdict", "source"], registry=r)
        self.cache_hits = Counter("callqa_cache_hits", "Analyses served from the cache", registry=r)
        self.duration = Histogram("callqa_analysis_seconds", "Analysis time of one call (not cache hits)",
                                  buckets=SECONDS_BUCKETS, registry=r)  # fmt: skip
        self.mos = Histogram("callqa_mos", "MOS per leg or direction", ["model"], buckets=MOS_BUCKETS, registry=r)
        self.one_way = Counter("callqa_one_way_calls", "Calls with a one-way audio finding", registry=r)
        self.queue = Gauge("callqa_queue_depth", "Jobs queued or running", registry=r)
        self.jobs = Counter("callqa_jobs", "Jobs by outcome (done, failed, rejected)", ["outcome"], registry=r)
        self.llm_calls = Counter("callqa_llm_calls", "Language-model calls", ["provider", "model", "outcome"],
                                 registry=r)  # fmt: skip
        self.llm_tokens = Counter("callqa_llm_tokens", "Language-model tokens", ["provider", "model", "direction"],
                                  registry=r)  # fmt: skip
        self.llm_errors = Counter("callqa_llm_errors", "Language-model errors by kind", ["provider", "kind"],
                                  registry=r)  # fmt: skip
        self.site_calls = Counter("callqa_site_calls", "Calls received from capture sites, by outcome (stored, "
                                  "duplicate, refused)", ["outcome"], registry=r)  # fmt: skip
        self.requests = Counter("callqa_http_requests", "HTTP requests by route template and status",
                                ["method", "route", "status"], registry=r)  # fmt: skip

    def watch_groups(self, store: Store, settings: MetricsSettings, clock: Callable[[], float] = time.time) -> None:
        """Serve the per-group quality gauges of the stored calls (see the module's doc)."""
        self.registry.register(GroupCollector(store, settings, clock))

    def observe_report(self, report: CallReport, cached: bool) -> None:
        if cached:
            self.cache_hits.inc()
            return
        self.calls.labels(report.verdict, report.source).inc()
        self.duration.observe(report.timings.total_s)
        for leg in report.legs:
            if leg.mos.dnsmos:
                self.mos.labels("dnsmos_ovrl").observe(leg.mos.dnsmos.ovrl)
            if leg.mos.nisqa:
                self.mos.labels("nisqa").observe(leg.mos.nisqa.mos)
            if leg.mos.call:
                self.mos.labels("call").observe(leg.mos.call.value)
        for stream in report.streams:
            if stream.network_mos is not None:
                self.mos.labels("network").observe(stream.network_mos)
        if any(f.code == "one_way_audio" for f in report.findings):
            self.one_way.inc()

    def observe_llm(self, provider: str, model: str, outcome: str, input_tokens: int, output_tokens: int) -> None:
        self.llm_calls.labels(provider, model, outcome).inc()
        if outcome != "ok":
            self.llm_errors.labels(provider, outcome).inc()
        if input_tokens:
            self.llm_tokens.labels(provider, model, "input").inc(input_tokens)
        if output_tokens:
            self.llm_tokens.labels(provider, model, "output").inc(output_tokens)
