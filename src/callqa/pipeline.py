"""One pipeline for every source: legs in, CallReport out.

``legs_from_files`` turns recordings into legs (two files = two legs; stereo = one leg per channel; mono = a
mixed leg, with a warning). ``analyze_legs`` measures each leg (levels, silences, VAD, DNSMOS, NISQA), runs the
detectors and builds the report. Every step is a pure function of (audio, sample rate, settings).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from callqa import models
from callqa.audio.decode import DecodedAudio, decode_file
from callqa.audio.levels import active_level_dbfs, measure_levels
from callqa.audio.resample import resample
from callqa.audio.silences import detect_silences
from callqa.config import AnalysisSettings, Settings
from callqa.errors import InputError
from callqa.quality import detectors, dnsmos, nisqa, vad
from callqa.report import (
    CallReport,
    Dnsmos,
    DnsmosWindow,
    LegReport,
    Levels,
    Mos,
    Role,
    Segment,
    Timings,
)

ROLE_KEYWORDS: tuple[tuple[Role, str], ...] = (
    ("agent", "agent"),
    ("customer", "customer"),
    ("caller", "caller"),
    ("callee", "callee"),
)


@dataclass(frozen=True)
class Leg:
    """One direction of a call: mono float32 samples in [-1, 1]."""

    role: Role
    source: str
    samples: np.ndarray
    sample_rate: int
    codec: str = ""
    channel: int | None = None

    @property
    def duration_s(self) -> float:
        return self.samples.size / self.sample_rate


def infer_role(path: str | Path, default: Role) -> Role:
    """Role named in a file name (``agent-in.wav`` -> agent), else ``default``. ``-in``/``-out`` alone say
    nothing about who is who (it depends on the PBX's recording options), so they keep the default."""
    name = Path(path).stem.lower()
    return next((role for role, word in ROLE_KEYWORDS if word in name), default)


def check_file_count(paths: list[str | Path] | list[Path]) -> None:
    if not 1 <= len(paths) <= 2:
        raise InputError(f"expected one recording (stereo or mixed) or two legs, got {len(paths)} files")


def legs_from_files(
    paths: list[str | Path], settings: Settings, roles: list[Role] | None = None
) -> tuple[list[Leg], list[str]]:
    """Decode recordings into legs; returns the legs and warnings about how they were formed."""
    check_file_count(paths)
    limit = settings.analysis.max_leg_duration_s
    decoded = [decode_file(p, limit, settings.max_file_bytes) for p in paths]
    warnings: list[str] = []
    if len(decoded) == 2:
        defaults: tuple[Role, Role] = ("caller", "callee")
        inferred = [infer_role(p, d) for p, d in zip(paths, defaults, strict=True)]
        if inferred[0] == inferred[1]:
            inferred = list(defaults)
        names = roles or inferred
        legs = []
        for audio, role in zip(decoded, names, strict=True):
            if audio.channels > 1:
                warnings.append(f"{audio.source} has {audio.channels} channels; mixed down to one leg")
            legs.append(_mono_leg(audio, role, None))
        return legs, warnings
    audio = decoded[0]
    if audio.channels == 2 and not np.array_equal(audio.samples[0], audio.samples[1]):
        names = roles or ["left", "right"]
        return [_mono_leg(audio, names[i], i) for i in range(2)], warnings
    if audio.channels > 2:
        raise InputError(f"{audio.source} has {audio.channels} channels; expected 1 (mixed) or 2 (one per leg)")
    warnings.append(
        "mixed recording: both directions share one channel, so per-leg analysis and one-way audio detection "
        "are not possible; record legs separately or in stereo"
    )
    return [_mono_leg(audio, "mixed", None)], warnings


def _mono_leg(audio: DecodedAudio, role: Role, channel: int | None) -> Leg:
    x = audio.samples[channel] if channel is not None else audio.samples.mean(axis=0)
    return Leg(role, audio.source, np.ascontiguousarray(x, dtype=np.float32), audio.sample_rate, audio.codec, channel)


def analyze_leg(leg: Leg, s: AnalysisSettings, nisqa_weights: Path | None) -> tuple[LegReport, Timings]:
    t = Timings()
    t0 = time.perf_counter()
    x, sr = leg.samples, leg.sample_rate
    lv = measure_levels(x, s.clip_level)
    silences = detect_silences(x, sr, s.silence_noise_db, s.silence_min_s)
    t1 = time.perf_counter()
    x16 = resample(x, sr, vad.VAD_RATE)
    speech = vad.detect_speech(
        x16, vad.VadOptions(s.vad_threshold, s.vad_min_speech_ms, s.vad_min_silence_ms, s.vad_speech_pad_ms)
    )
    segments = [(a, min(b, leg.duration_s)) for a, b in speech.segments]
    t2 = time.perf_counter()
    mos = Mos()
    if not s.dnsmos:
        mos.skipped["dnsmos"] = "disabled in settings"
    elif x16.size == 0 or lv.peak_dbfs < s.digital_silence_dbfs:
        mos.skipped["dnsmos"] = "no audio on this leg"
    else:
        r = dnsmos.score(x16, dnsmos.DnsmosOptions(s.dnsmos_hop_s, s.dnsmos_max_windows), segments)
        mos.dnsmos = Dnsmos(
            sig=r.sig, bak=r.bak, ovrl=r.ovrl, p808=r.p808,
            windows=[DnsmosWindow(start_s=w[0], sig=w[1], bak=w[2], ovrl=w[3], p808=w[4]) for w in r.windows],
        )  # fmt: skip
    t3 = time.perf_counter()
    if not s.nisqa:
        mos.skipped["nisqa"] = "disabled in settings"
    else:
        reason = nisqa.unavailable_reason(nisqa_weights)
        if reason:
            mos.skipped["nisqa"] = reason
        elif not segments:
            mos.skipped["nisqa"] = "no speech on this leg"
        else:
            mos.nisqa = nisqa.score_leg(x, sr, segments, nisqa_weights, s.nisqa_window_s, s.nisqa_max_windows)
    t4 = time.perf_counter()
    report = LegReport(
        role=leg.role,
        source=leg.source,
        channel=leg.channel,
        codec=leg.codec,
        sample_rate=sr,
        duration_s=round(leg.duration_s, 6),
        levels=Levels(
            rms_dbfs=lv.rms_dbfs,
            peak_dbfs=lv.peak_dbfs,
            clipping_ratio=lv.clipping_ratio,
            active_dbfs=active_level_dbfs(x, sr, segments),
        ),
        speech_ratio=round(speech.speech_s / leg.duration_s, 4) if leg.duration_s else 0.0,
        speech_s=round(speech.speech_s, 3),
        speech_segments=[Segment(start_s=round(a, 3), end_s=round(b, 3)) for a, b in segments],
        silences=[Segment(start_s=round(a, 4), end_s=round(b, 4)) for a, b in silences],
        mos=mos,
    )
    t.levels_s, t.vad_s, t.dnsmos_s, t.nisqa_s = t1 - t0, t2 - t1, t3 - t2, t4 - t3
    return report, t


def analyze_legs(
    legs: list[Leg],
    settings: Settings,
    warnings: list[str] | None = None,
    report_id: str = "",
    cache_key: str = "",
    decode_s: float = 0.0,
) -> CallReport:
    """Analyse the legs of one call (in parallel, one thread per leg) and build its report."""
    start = time.perf_counter() - decode_s
    s = settings.analysis
    if s.dnsmos:
        models.dnsmos_sessions()  # load once before the threads start
    models.silero_vad()
    weights = settings.resolved_nisqa_weights()
    with ThreadPoolExecutor(max_workers=max(1, min(2, len(legs)))) as pool:
        results = list(pool.map(lambda leg: analyze_leg(leg, s, weights), legs))
    leg_reports = [r for r, _ in results]
    findings = detectors.run_detectors(leg_reports, s)
    verdict, reasons = detectors.verdict(findings)
    timings = Timings(
        decode_s=decode_s,
        levels_s=sum(t.levels_s for _, t in results),
        vad_s=sum(t.vad_s for _, t in results),
        dnsmos_s=sum(t.dnsmos_s for _, t in results),
        nisqa_s=sum(t.nisqa_s for _, t in results),
        total_s=time.perf_counter() - start,
    )
    versions = models.versions()
    if any(r.mos.nisqa for r in leg_reports):
        versions["nisqa"] = nisqa.version(weights)
    return CallReport(
        id=report_id,
        created_at=datetime.now(UTC),
        verdict=verdict,
        reasons=reasons,
        duration_s=round(max((leg.duration_s for leg in leg_reports), default=0.0), 6),
        warnings=list(warnings or []),
        legs=leg_reports,
        findings=findings,
        timings=timings,
        models=versions,
        settings=s.model_dump(),
        cache_key=cache_key,
    )
