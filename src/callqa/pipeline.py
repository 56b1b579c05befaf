"""One pipeline for every source: legs in, CallReport out.

A ``Leg`` is one direction of a call as mono samples, whatever it came from (a recording's file or channel, a
captured RTP direction). ``analyze_legs`` measures each leg (levels, silences, VAD, DNSMOS, NISQA), runs the
detectors and the speech stages and builds the report. Every step is a pure function of (audio, sample rate,
settings); the service layer (``callqa.service``) turns sources into legs and stores what comes out.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from callqa import model_loaders
from callqa.audio.levels import (
    LevelStats,
    active_level_dbfs,
    level_timeline,
    measure_levels,
    noise_floor_dbfs,
    sound_segments,
)
from callqa.audio.resample import resample
from callqa.audio.silences import detect_silences
from callqa.config import AnalysisSettings, Settings
from callqa.quality import callmos, detectors, dnsmos, nisqa, vad
from callqa.report import (
    CallReport,
    Conversation,
    Dnsmos,
    DnsmosWindow,
    Finding,
    LegReport,
    Levels,
    Mos,
    Role,
    RtpStats,
    RtpStream,
    Scorecard,
    Segment,
    SipInfo,
    Timings,
    Utterance,
    Word,
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
    rtp: RtpStats | None = None  # network statistics when the leg was decoded from a capture

    @property
    def duration_s(self) -> float:
        return self.samples.size / self.sample_rate


@dataclass
class _LegWork:
    """One leg on its way through the stages; becomes a LegReport at the end."""

    leg: Leg
    levels: LevelStats
    silences: list[tuple[float, float]]
    x16: np.ndarray
    speech: list[tuple[float, float]]
    mos: Mos
    timings: Timings
    timeline: list[float] = field(default_factory=list)
    floor: float | None = None
    sound: list[tuple[float, float]] = field(default_factory=list)


def _measure(leg: Leg, s: AnalysisSettings, models_dir: Path | None = None) -> _LegWork:
    """Stage 1 (legs in parallel, one core each): levels, silences, speech."""
    t0 = time.perf_counter()
    x, sr = leg.samples, leg.sample_rate
    lv = measure_levels(x, s.clip_level)
    silences = detect_silences(x, sr, s.silence_noise_db, s.silence_min_s)
    t1 = time.perf_counter()
    x16 = resample(x, sr, vad.VAD_RATE)
    options = vad.VadOptions(s.vad_threshold, s.vad_min_speech_ms, s.vad_min_silence_ms, s.vad_speech_pad_ms)
    speech = [(a, min(b, leg.duration_s)) for a, b in vad.detect_speech(x16, options, models_dir).segments]
    t2 = time.perf_counter()
    timeline, floor = level_timeline(x, sr), noise_floor_dbfs(x, sr)
    sound = sound_segments(x, sr, floor + s.one_way_sound_margin_db) if floor is not None else []
    timings = Timings(levels_s=t1 - t0, vad_s=t2 - t1)
    return _LegWork(leg, lv, silences, x16, speech, Mos(), timings, timeline, floor, sound)


def _score_dnsmos(w: _LegWork, s: AnalysisSettings) -> None:
    """Stage 2 (one leg at a time: each run uses both cores and ~130 MB of activations)."""
    t0 = time.perf_counter()
    if not s.dnsmos:
        w.mos.skipped["dnsmos"] = "disabled in settings"
    elif w.x16.size == 0 or w.levels.peak_dbfs < s.digital_silence_dbfs:
        w.mos.skipped["dnsmos"] = "no audio on this leg"
    else:
        r = dnsmos.score(w.x16, dnsmos.DnsmosOptions(s.dnsmos_hop_s, s.dnsmos_max_windows), w.speech)
        w.mos.dnsmos = Dnsmos(
            sig=r.sig, bak=r.bak, ovrl=r.ovrl, p808=r.p808,
            windows=[DnsmosWindow(start_s=x[0], sig=x[1], bak=x[2], ovrl=x[3], p808=x[4]) for x in r.windows],
        )  # fmt: skip
    w.timings.dnsmos_s = time.perf_counter() - t0


def _score_nisqa(w: _LegWork, s: AnalysisSettings, weights: Path | None, cache_dir: Path) -> None:
    """Stage 3 (legs in parallel, one thread each; the model's ONNX export is kept in ``cache_dir``)."""
    t0 = time.perf_counter()
    reason = "disabled in settings" if not s.nisqa else nisqa.unavailable_reason(weights, cache_dir)
    if reason is None and not w.speech:
        reason = "no speech on this leg"
    if reason:
        w.mos.skipped["nisqa"] = reason
    else:
        x, sr = w.leg.samples, w.leg.sample_rate
        w.mos.nisqa = nisqa.score_leg(x, sr, w.speech, weights, s.nisqa_window_s, s.nisqa_max_windows, cache_dir)
    w.timings.nisqa_s = time.perf_counter() - t0


def _call_mos(w: _LegWork, r: LegReport, s: AnalysisSettings) -> LegReport:
    """The calibrated call MOS from the leg's measures, and the cause of a low score (network or endpoint)."""
    thresholds = callmos.CauseThresholds(s.loss_warning, s.low_level_dbfs, s.clipping_ratio_max)
    r.mos.call = callmos.call_mos(r, w.leg.samples, w.leg.sample_rate, s.low_mos, thresholds)
    return r


def _leg_report(w: _LegWork) -> LegReport:
    leg, lv = w.leg, w.levels
    speech_s = sum(b - a for a, b in w.speech)
    return LegReport(
        role=leg.role,
        source=leg.source,
        channel=leg.channel,
        codec=leg.codec,
        sample_rate=leg.sample_rate,
        duration_s=round(leg.duration_s, 6),
        levels=Levels(
            rms_dbfs=lv.rms_dbfs,
            peak_dbfs=lv.peak_dbfs,
            clipping_ratio=lv.clipping_ratio,
            active_dbfs=active_level_dbfs(leg.samples, leg.sample_rate, w.speech),
        ),
        speech_ratio=round(speech_s / leg.duration_s, 4) if leg.duration_s else 0.0,
        speech_s=round(speech_s, 3),
        speech_segments=[Segment(start_s=round(a, 3), end_s=round(b, 3)) for a, b in w.speech],
        silences=[Segment(start_s=round(a, 4), end_s=round(b, 4)) for a, b in w.silences],
        mos=w.mos,
        rtp=leg.rtp,
        noise_floor_dbfs=w.floor,
        level_timeline_dbfs=w.timeline,
        sound_segments=[Segment(start_s=a, end_s=b) for a, b in w.sound],
    )


def analyze_legs(
    legs: list[Leg],
    settings: Settings,
    warnings: list[str] | None = None,
    report_id: str = "",
    cache_key: str = "",
    decode_s: float = 0.0,
    streams: list[RtpStream] | None = None,
    sip: SipInfo | None = None,
) -> CallReport:
    """Analyse the legs of one call and build its report. Stages that run one model per core (and the call MOS
    features) take the legs in parallel; DNSMOS, which uses both cores per run, takes them in turn (no
    oversubscription, bounded memory)."""
    start = time.perf_counter() - decode_s
    s = settings.analysis
    if legs:  # statistics-only captures have no audio: no model to load
        model_loaders.silero_vad_session(settings.models_dir)  # load once, before the threads start
    weights = settings.resolved_nisqa_weights()
    with ThreadPoolExecutor(max_workers=max(1, min(2, len(legs)))) as pool:
        work = list(pool.map(lambda leg: _measure(leg, s, settings.models_dir), legs))
        for w in work:
            _score_dnsmos(w, s)
        list(pool.map(lambda w: _score_nisqa(w, s, weights, settings.models_dir), work))
        leg_reports = list(pool.map(lambda w: _call_mos(w, _leg_report(w), s), work))
    stage_times = [w.timings for w in work]
    findings = detectors.run_detectors(leg_reports, s, streams, sip)
    verdict, reasons = detectors.verdict(findings)  # quality only: phrase rules go to the scorecard
    t_transcribe = time.perf_counter()
    speech = SpeechResults()
    if legs:
        speech = _speech(work, legs, s, settings.threads, max([w.leg.duration_s for w in work], default=0.0))
        findings += speech.findings
    t_transcribe = time.perf_counter() - t_transcribe if s.transcribe else 0.0
    timings = Timings(
        decode_s=decode_s,
        levels_s=sum(t.levels_s for t in stage_times),
        vad_s=sum(t.vad_s for t in stage_times),
        dnsmos_s=sum(t.dnsmos_s for t in stage_times),
        nisqa_s=sum(t.nisqa_s for t in stage_times),
        transcribe_s=t_transcribe,
        total_s=time.perf_counter() - start,
    )
    versions = model_loaders.versions()
    if any(r.mos.call for r in leg_reports):
        versions["callmos"] = callmos.version()
    if any(r.mos.nisqa for r in leg_reports):
        versions["nisqa"] = nisqa.version(weights)
    if s.transcribe and legs:
        versions["whisper"] = model_loaders.whisper_version(s.whisper_model)
    return CallReport(
        id=report_id,
        created_at=datetime.now(UTC),
        verdict=verdict,
        reasons=reasons,
        duration_s=round(
            max([leg.duration_s for leg in leg_reports] + [st.end_s for st in streams or []], default=0.0), 6
        ),
        warnings=list(warnings or []),
        legs=leg_reports,
        findings=findings,
        timings=timings,
        models=versions,
        settings=s.model_dump(mode="json"),
        cache_key=cache_key,
        source="capture" if streams is not None else "recording",
        sip=sip,
        streams=streams or [],
        transcript=speech.transcript,
        conversation=speech.conversation,
        scorecard=speech.scorecard,
    )


@dataclass
class SpeechResults:
    transcript: list[Utterance] = field(default_factory=list)
    conversation: Conversation | None = None
    scorecard: Scorecard | None = None
    findings: list[Finding] = field(default_factory=list)


def _speech(work: list[_LegWork], legs: list[Leg], s: AnalysisSettings, threads: int, duration_s: float
            ) -> SpeechResults:  # fmt: skip
    """Transcript (when enabled), conversation metrics and phrase rules for the legs of one call."""
    from callqa.speech import conversation, rules, transcribe
    from callqa.speech.redaction import redact_utterance

    out = SpeechResults()
    roles = [leg.role for leg in legs]
    if s.transcribe:
        opts = transcribe.TranscribeOptions(model=s.whisper_model, language=s.whisper_language,
                                            compute_type=s.whisper_compute_type, beam_size=s.whisper_beam_size,
                                            batch_size=s.whisper_batch_size,
                                            threads=threads)  # fmt: skip
        result = transcribe.transcribe([w.x16 for w in work], [w.speech for w in work], opts)
        out.transcript = [
            Utterance(leg=roles[u.leg], start_s=u.start_s, end_s=u.end_s, text=u.text, confidence=u.confidence,
                      words=[Word(word=x.word, start_s=x.start_s, end_s=x.end_s, probability=x.probability)
                             for x in u.words])
            for u in result.utterances
        ]  # fmt: skip
        if s.redact_transcripts:
            out.transcript = [redact_utterance(u) for u in out.transcript]
        for k, w in enumerate(work):
            speech_s = sum(b - a for a, b in w.speech)
            dropped = sum(1 for d in result.dropped if d[0] == k)
            if speech_s >= 2.0 and not any(u.leg == roles[k] for u in out.transcript):
                out.findings.append(Finding(
                    code="no_transcript", severity="info", leg=roles[k],
                    message=f"{speech_s:.1f} s of speech activity on the {roles[k]} side but no words recognised "
                            "(another language, music, tones or noise?)",
                    evidence={"speech_s": round(speech_s, 2), "segments_dropped": dropped},
                ))  # fmt: skip
        if s.rules_file is not None:
            found, out.scorecard = rules.apply(rules.load_rules(s.rules_file), out.transcript, roles)
            out.findings += found
    out.conversation = conversation.metrics(
        roles,
        [w.speech for w in work],
        [w.x16 for w in work],
        [vad.VAD_RATE] * len(work),
        duration_s,
        out.transcript if s.transcribe else None,
        conversation.ConversationOptions(s.overtalk_min_s, s.loudness_window_s),
    )
    return out
