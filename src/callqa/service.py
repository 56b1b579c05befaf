"""Service functions shared by the CLI (and any other front end): analyse with the cache, batch grouping."""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from callqa import models
from callqa.audio.wav import write_wav
from callqa.config import Settings
from callqa.digest import digest, sha256_file
from callqa.errors import InputError
from callqa.pipeline import analyze_legs, check_file_count, legs_from_files
from callqa.quality import nisqa
from callqa.report import CallReport, Role
from callqa.speech.redaction import tone_over
from callqa.store import Store

if TYPE_CHECKING:
    from callqa.capture.calls import CapturedCall

AUDIO_SUFFIXES = {".wav", ".mp3", ".gsm", ".ogg", ".oga", ".opus", ".flac", ".m4a", ".aac", ".au", ".sln", ".wma"}
_LEG_SUFFIX = re.compile(r"[-_.](in|out|agent|customer|caller|callee)$", re.IGNORECASE)


def _analysis_material(settings: Settings) -> dict[str, object]:
    """What every cache key includes: the analysis settings and the versions of the models that will run."""
    s = settings.analysis
    weights = settings.resolved_nisqa_weights()
    runs_nisqa = s.nisqa and not nisqa.unavailable_reason(weights, settings.models_dir)
    nisqa_version = nisqa.version(weights) if runs_nisqa else ""
    extra = {"whisper": models.whisper_version(s.whisper_model)} if s.transcribe else {}
    rules = sha256_file(s.rules_file) if s.rules_file is not None else ""
    return {"analysis": s.model_dump(mode="json"), "rules": rules,
            "models": {**models.versions(), "nisqa": nisqa_version, **extra}}  # fmt: skip


def cache_key(paths: list[Path], settings: Settings, roles: list[Role] | None, hashes: list[str] | None = None) -> str:
    """Audio content + roles + analysis settings + model versions: any change gives a new key. ``hashes`` are the
    files' SHA-256 when the caller already has them (computed while an upload streamed in)."""
    audio = hashes if hashes is not None else [sha256_file(p) for p in paths]
    return digest({"audio": audio, "roles": roles, **_analysis_material(settings)})


def analyze_files(
    paths: list[Path],
    settings: Settings,
    roles: list[Role] | None = None,
    store: Store | None = None,
    use_cache: bool = True,
    labels: list[str] | None = None,
    audio_dir: Path | None = None,
    hashes: list[str] | None = None,
) -> tuple[CallReport, bool]:
    """Analyse one call given as one or two recordings; returns (report, served from cache).

    ``labels`` name the sources in the report instead of their paths (uploads, fetched files); with
    ``audio_dir`` each leg is also kept as a WAV under ``audio_dir/<report id>/`` for listening."""
    check_file_count(paths)
    key = cache_key(paths, settings, roles, hashes)
    if store is not None and use_cache:
        hit = store.cached(key, settings.cache_ttl_s)
        if hit is not None:
            return hit, True
    t0 = time.perf_counter()
    legs, warnings = legs_from_files(list(paths), settings, roles)
    if labels:
        names = {str(p): label for p, label in zip(paths, labels, strict=True)}
        legs = [dataclasses.replace(leg, source=names.get(leg.source, leg.source)) for leg in legs]
        for path, label in names.items():
            warnings = [w.replace(path, label) for w in warnings]
    decode_s = time.perf_counter() - t0
    report = analyze_legs(legs, settings, warnings, report_id=key[:16], cache_key=key, decode_s=decode_s)
    if audio_dir is not None:
        for i, leg in enumerate(legs):
            samples = leg.samples
            if settings.analysis.redact_audio:
                spans = [seg for u in report.transcript if u.leg == leg.role for seg in u.redacted]
                samples = tone_over(samples, leg.sample_rate, spans)
            write_wav(leg_audio_path(audio_dir, report.id, i, leg.role), samples, leg.sample_rate)
    if store is not None:
        store.put(report)
    return report, False


def leg_audio_path(audio_dir: Path, report_id: str, index: int, role: str) -> Path:
    return audio_dir / report_id / f"{index}-{role}.wav"


def group_calls(directory: Path) -> list[list[Path]]:
    """Audio files under ``directory`` grouped into calls: ``X-in``/``X-out`` (and agent/customer,
    caller/callee) pairs become two-leg calls, every other file is a call of its own (stereo or mixed)."""
    if not directory.is_dir():
        raise InputError(f"not a directory: {directory}")
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    groups: dict[tuple[Path, str], list[Path]] = {}
    for f in files:
        stem = _LEG_SUFFIX.sub("", f.stem)
        groups.setdefault((f.parent, stem), []).append(f)
    calls: list[list[Path]] = []
    for members in groups.values():
        if len(members) == 2 and all(_LEG_SUFFIX.search(m.stem) for m in members):
            calls.append(members)
        else:
            calls.extend([m] for m in members)
    return calls


def report_captured(
    call: CapturedCall,
    settings: Settings,
    store: Store | None,
    source: str,
    source_hash: str,
    stats_only: bool = False,
    wav_dir: Path | None = None,
    use_cache: bool = True,
) -> CallReport:
    """One captured call through the pipeline, cached by capture hash, call and settings."""
    from callqa.capture.analyze import report_call

    key = digest({
        "capture": source_hash, "call": call.id, "stats_only": stats_only, "srtp": digest(settings.srtp_keys),
        **_analysis_material(settings),
    })  # fmt: skip
    hit = store.cached(key, settings.cache_ttl_s) if store is not None and use_cache and wav_dir is None else None
    if hit is not None:
        return hit
    report = report_call(call, settings, key[:16], key, source, stats_only, wav_dir)
    if store is not None:
        store.put(report)
    return report


def analyze_capture(
    path: Path,
    settings: Settings,
    store: Store | None = None,
    stats_only: bool = False,
    wav_dir: Path | None = None,
    nat_aliases: dict[str, str] | None = None,
    use_cache: bool = True,
) -> tuple[list[CallReport], list[str]]:
    """Every call in a pcap or pcapng file through the common pipeline: (reports, capture warnings)."""  # fmt: skip
    from callqa.capture.calls import read_capture

    source_hash = digest({"capture": sha256_file(path), "aliases": nat_aliases or {}})
    capture = read_capture(path, nat_aliases, keep_audio=not stats_only, srtp_keys=settings.srtp_keys)
    reports = [
        report_captured(call, settings, store, str(path), source_hash, stats_only, wav_dir, use_cache)
        for call in capture.calls
    ]
    return reports, capture.warnings
