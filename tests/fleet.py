"""Simulated days of a call centre's captured calls, stored as real CallReports through the store.

Three carriers (trunks), eight agents, three campaigns, two dialer servers (sites), codecs per carrier; calls
over business hours with per-call MOS, loss and jitter drawn around each carrier's usual figures, and faults at
each carrier's usual rate. A ``Degradation`` makes one carrier worse from a known time on until it is fixed
(one-way audio on 6% of its calls instead of 0.5%, a lower MOS, more loss). The low_mos findings and the
verdicts come from the real detectors.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from callqa.config import AnalysisSettings
from callqa.quality import detectors
from callqa.report import CallContext, CallReport, Dnsmos, Finding, LegReport, Levels, Mos, RtpStream, SipInfo
from callqa.store import Store

CARRIERS = {"trunk-a": ("PCMA", 3.9), "trunk-b": ("PCMU", 3.85), "trunk-c": ("G729", 3.6)}  # codec, usual MOS
AGENTS = [f"agent{i}" for i in range(8)]
CAMPAIGNS = ["SALES", "SUPPORT", "RENEWALS"]
SITES = ["10.1.0.10", "10.2.0.10"]
BASE_ONE_WAY = 0.005
BASE_DEAD_AIR = 0.02
DAY = 86400.0
HOUR = 3600.0


@dataclass(frozen=True)
class Degradation:
    carrier: str  # the carrier that degrades, or "" with ``site``
    start: float  # epoch seconds
    end: float = float("inf")  # fixed from then on
    one_way: float = 0.06
    mos_drop: float = 0.7
    loss_pct: float = 3.0
    site: str = ""  # a capture site (dialer server) that degrades instead of a carrier
    no_media: float = 0.0  # share of its calls whose RTP never arrives


def _leg(role: str, mos: float) -> LegReport:
    dnsmos = Dnsmos(sig=3.5, bak=3.8, ovrl=mos, p808=3.6)
    return LegReport(role=role, source=f"{role}.wav", codec="", sample_rate=8000, duration_s=120.0,  # type: ignore[arg-type]
                     levels=Levels(rms_dbfs=-22, peak_dbfs=-4, clipping_ratio=0), speech_ratio=0.45, speech_s=54,
                     speech_segments=[], silences=[], mos=Mos(dnsmos=dnsmos))  # fmt: skip


def _stream(leg: str, codec: str, loss_pct: float, jitter_ms: float) -> RtpStream:
    expected = 6000
    lost = int(round(expected * loss_pct / 100))
    return RtpStream(ssrc="0x1", src="192.0.2.1:4000", dst="192.0.2.2:5000", payload=codec, packets=expected - lost,
                     expected=expected, lost=lost, duplicates=0, out_of_order=0, max_delta_ms=40.0,
                     max_jitter_ms=jitter_ms * 2, mean_jitter_ms=jitter_ms, leg=leg, codec=codec)  # fmt: skip


def make_call(i: int, t: float, carrier: str, rng: np.random.Generator, worse: Degradation | None) -> CallReport:
    codec, usual = CARRIERS[carrier]
    site = SITES[(i // 5) % len(SITES)]
    hit = worse is not None and worse.start <= t < worse.end and (worse.site == site if worse.site else
                                                                  worse.carrier == carrier)  # fmt: skip
    centre = usual - (worse.mos_drop if hit and worse else 0.0)
    moss = [float(np.clip(rng.normal(centre, 0.3), 1.0, 4.9)) for _ in range(2)]
    legs = [_leg("agent", moss[0]), _leg("customer", moss[1])]
    loss = float(rng.gamma(1.0, 0.3)) + (worse.loss_pct if hit and worse else 0.0)
    jitter = float(rng.gamma(2.0, 4.0))
    findings = detectors.low_mos(legs, AnalysisSettings())
    if rng.random() < (worse.one_way if hit and worse else BASE_ONE_WAY):
        findings.append(Finding(code="one_way_audio", severity="critical", leg="customer",
                                message="no audio from the customer for the whole call"))  # fmt: skip
    if hit and worse and worse.no_media and rng.random() < worse.no_media:
        findings.append(Finding(code="no_media", severity="critical", message="the call was answered; no RTP came"))
    if rng.random() < BASE_DEAD_AIR:
        findings.append(Finding(code="dead_air", severity="warning", message="12 s of silence on both legs"))
    verdict, reasons = detectors.verdict(findings)
    when = datetime.fromtimestamp(t, UTC)
    return CallReport(
        id=f"{i:016x}", created_at=when, verdict=verdict, reasons=reasons, duration_s=120.0, legs=legs,
        findings=findings, source="capture", cache_key=f"sim{i}",
        sip=SipInfo(call_id=f"sim-{i}", from_="<sip:agent@pbx.example>", to=f"<sip:+44{i:09d}@{carrier}.example>",
                    started_at=when),
        streams=[_stream("caller", codec, loss / 3, jitter), _stream("callee", codec, loss, jitter)],
        context=CallContext(recording_id=i, direction="outbound", call_date=when, agent=AGENTS[i % len(AGENTS)],
                            campaign_id=CAMPAIGNS[(i // 3) % len(CAMPAIGNS)], carrier=carrier,
                            server_ip=site),
    )  # fmt: skip


def simulate(store: Store, start_day: float, days: int, hours: tuple[int, int], per_hour: int,
             worse: Degradation | None = None, seed: int = 7, first_id: int = 1) -> int:  # fmt: skip
    """Store ``per_hour`` calls per carrier and hour over ``hours`` (UTC, [from, to)) of ``days`` days from
    ``start_day`` (midnight UTC); returns the next free call number."""
    rng = np.random.default_rng(seed + first_id)
    i = first_id
    for d in range(days):
        for h in range(*hours):
            for carrier in CARRIERS:
                for t in sorted(rng.uniform(0, HOUR, per_hour)):
                    when = start_day + d * DAY + h * HOUR + float(t)
                    store.put(make_call(i, when, carrier, rng, worse), now=when + 180)
                    i += 1
    return i


@contextmanager
def fast_dir(fallback: Path) -> Iterator[Path]:
    """A folder in memory-backed storage where there is one (storing thousands of reports waits on fsync
    otherwise), else ``fallback``; removed afterwards."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield fallback
        return
    path = Path(tempfile.mkdtemp(dir=shm, prefix="callqa-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
