"""Recordings into reports: decode one call's files into legs, analyse them (or serve the cached report), keep
the leg audio for listening, store the report.

Two files are two legs; one stereo file is one leg per channel; one mono file (or a stereo file whose channels
carry the same signal) is a mixed leg, analysed with a warning. Roles come from ``--roles``, else from the file
names (``agent``/``customer``/``caller``/``callee``), else caller/callee (left/right for stereo).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from callqa.audio.decode import DecodedAudio, decode_file
from callqa.audio.wav import write_wav
from callqa.config import AnalysisSettings, Settings
from callqa.errors import InputError
from callqa.pipeline import Leg, analyze_legs
from callqa.report import CallReport, Role
from callqa.service import cache
from callqa.speech.redaction import tone_over
from callqa.store import Store

ROLE_KEYWORDS: tuple[tuple[Role, str], ...] = (
    ("agent", "agent"),
    ("customer", "customer"),
    ("caller", "caller"),
    ("callee", "callee"),
)
ROLES: tuple[Role, ...] = ("caller", "callee", "agent", "customer", "left", "right", "mixed")
MIXED_WARNING = (
    "mixed recording: both directions share one channel, so per-leg analysis and one-way audio detection "
    "are not possible; record legs separately or in stereo"
)


def infer_role(path: str | Path, default: Role) -> Role:
    """Role named in a file name (``agent-in.wav`` -> agent), else ``default``. ``-in``/``-out`` alone say
    nothing about who is who (it depends on the PBX's recording options), so they keep the default."""
    name = Path(path).stem.lower()
    return next((role for role, word in ROLE_KEYWORDS if word in name), default)


def parse_roles(text: str | None, n_legs: int | None) -> list[Role] | None:
    """``agent,customer`` -> roles for two legs (two files or the two channels of a stereo file)."""
    if not text:
        return None
    roles = [r.strip() for r in text.split(",")]
    if any(r not in ROLES for r in roles) or len(roles) != (n_legs or 2):
        raise InputError(f"roles must be two of {', '.join(ROLES)} separated by a comma, got {text!r}")
    return roles  # type: ignore[return-value]


def check_file_count(paths: list[str | Path] | list[Path]) -> None:
    if not 1 <= len(paths) <= 2:
        raise InputError(f"expected one recording (stereo or mixed) or two legs, got {len(paths)} files")


def legs_from_files(
    paths: list[str | Path], settings: Settings, roles: list[Role] | None = None
) -> tuple[list[Leg], list[str]]:
    """Decode recordings into legs; returns the legs and warnings about how they were formed."""
    check_file_count(paths)
    limit = settings.analysis.max_leg_duration_s
    decoded = [decode_file(p, limit, settings.max_file_bytes, settings.limits) for p in paths]
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
    same = audio.channels == 2 and same_signal(audio.samples[0], audio.samples[1], settings.analysis)
    if audio.channels == 2 and not same:
        names = roles or ["left", "right"]
        return [_mono_leg(audio, names[i], i) for i in range(2)], warnings
    if audio.channels > 2:
        raise InputError(f"{audio.source} has {audio.channels} channels; expected 1 (mixed) or 2 (one per leg)")
    if same:
        warnings.append(f"{audio.source}: both stereo channels carry the same signal (a mono recording saved as "
                        "stereo), analysed as one mixed channel")  # fmt: skip
    warnings.append(MIXED_WARNING)
    return [_mono_leg(audio, "mixed", None)], warnings


def same_signal(a: np.ndarray, b: np.ndarray, s: AnalysisSettings) -> bool:
    """Two channels that are one signal: equal, or correlated at least ``mixed_channel_correlation`` at lag 0
    (a mono call saved as stereo, also after a lossy codec or a gain change). Two recorded directions are far
    below it even with crosstalk or echo between them (-20 dB of crosstalk gives about 0.2)."""
    if np.array_equal(a, b):
        return True
    n = min(a.size, b.size)
    num, ea, eb = 0.0, 0.0, 0.0
    for i in range(0, n, 1 << 20):  # chunks keep the float64 copies small on hour-long files
        x, y = a[i : i + (1 << 20)].astype(np.float64), b[i : i + (1 << 20)].astype(np.float64)
        num, ea, eb = num + float(np.dot(x, y)), ea + float(np.dot(x, x)), eb + float(np.dot(y, y))
    if ea == 0.0 or eb == 0.0:
        return False  # one channel carries nothing: two legs, one of them mute
    return num / np.sqrt(ea * eb) >= s.mixed_channel_correlation


def _mono_leg(audio: DecodedAudio, role: Role, channel: int | None) -> Leg:
    x = audio.samples[channel] if channel is not None else audio.samples.mean(axis=0)
    return Leg(role, audio.source, np.ascontiguousarray(x, dtype=np.float32), audio.sample_rate, audio.codec, channel)


def cached_recording(paths: list[Path], settings: Settings, roles: list[Role] | None, store: Store | None,
                     labels: list[str] | None = None, hashes: list[str] | None = None
                     ) -> tuple[str, CallReport | None]:  # fmt: skip
    """(cache key, the fresh stored report for these recordings or None). A hit is relabelled with the sources
    given now: the same audio uploaded under another name shows that name, not the earlier run's."""
    key = cache.recording_key(paths, settings, roles, hashes)
    hit = cache.lookup(store, key, settings)
    if hit is not None:
        hit = relabel(hit, labels or [str(p) for p in paths])
    return key, hit


def relabel(report: CallReport, sources: list[str]) -> CallReport:
    """The report with its legs' sources (and the warnings naming them) replaced by ``sources``, in order."""
    old = list(dict.fromkeys(leg.source for leg in report.legs))
    if len(old) != len(sources):
        return report
    names = dict(zip(old, sources, strict=True))
    legs = [leg.model_copy(update={"source": names[leg.source]}) for leg in report.legs]
    warnings = report.warnings
    for before, after in names.items():
        warnings = [w.replace(before, after) for w in warnings]
    return report.model_copy(update={"legs": legs, "warnings": warnings})


def analyze_recording(
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
    key, hit = cached_recording(paths, settings, roles, store if use_cache else None, labels, hashes)
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
        keep_leg_audio(report, legs, audio_dir, settings.analysis.redact_audio)
    if store is not None:
        store.put(report)
    return report, False


def keep_leg_audio(report: CallReport, legs: list[Leg], audio_dir: Path, redact: bool) -> None:
    """Each leg as 16-bit WAV under ``audio_dir/<report id>/`` (masked spans toned over when ``redact``)."""
    for i, leg in enumerate(legs):
        samples = leg.samples
        if redact:
            spans = [seg for u in report.transcript if u.leg == leg.role for seg in u.redacted]
            samples = tone_over(samples, leg.sample_rate, spans)
        write_wav(leg_audio_path(audio_dir, report.id, i, leg.role), samples, leg.sample_rate)


def leg_audio_path(audio_dir: Path, report_id: str, index: int, role: str) -> Path:
    return audio_dir / report_id / f"{index}-{role}.wav"
