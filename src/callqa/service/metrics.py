"""Prometheus metrics. Labels are bounded sets (verdicts, model names, outcomes, route templates): no call
ids, phone numbers or addresses ever become labels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from callqa.report import CallReport

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
