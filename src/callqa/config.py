"""Settings: one object, read from the environment (``CALLQA_*``) and passed down.

Only the fields in :class:`AnalysisSettings` change what an analysis produces; they are part of the cache key.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "callqa"


class AnalysisSettings(BaseModel, frozen=True):
    """Everything that changes an analysis result. Defaults suit 8 kHz telephone legs."""

    # silences: FFmpeg silencedetect semantics (per-sample amplitude threshold, minimum duration)
    silence_noise_db: float = Field(-50.0, description="silencedetect noise threshold, dBFS (sample amplitude)")
    silence_min_s: float = Field(2.0, description="silencedetect minimum silence duration, seconds")
    # speech: Silero VAD
    vad_threshold: float = Field(0.5, ge=0.0, le=1.0)
    vad_min_speech_ms: int = Field(250, ge=0)
    vad_min_silence_ms: int = Field(100, ge=0)
    vad_speech_pad_ms: int = Field(30, ge=0)
    # DNSMOS: 9.01 s windows; hop 1 s as upstream, at most this many windows per leg (chosen over speech)
    dnsmos: bool = True
    dnsmos_hop_s: float = Field(1.0, gt=0)
    dnsmos_max_windows: int = Field(3, ge=1)
    # NISQA (optional extra + weights)
    nisqa: bool = True
    nisqa_window_s: float = Field(10.0, gt=1.0, le=50.0, description="NISQA window over speech for long legs")
    nisqa_max_windows: int = Field(6, ge=1)
    # detectors
    dead_air_min_s: float = Field(10.0, gt=0, description="both legs without speech this long is dead air")
    one_way_share: float = Field(0.3, ge=0, le=0.5, description="quieter leg's share of all speech (70/30 rule)")
    one_way_min_speech_s: float = Field(1.0, ge=0, description="a leg with less speech than this is mute")
    one_way_partial_min_s: float = Field(20.0, gt=0, description="one side mute while the other talks this long")
    digital_silence_dbfs: float = Field(-70.0, description="a leg whose peak is below this carries no audio")
    clip_level: float = Field(0.98, gt=0, le=1.0, description="|sample| at or above this counts as clipped")
    clipping_ratio_max: float = Field(0.001, ge=0, description="clipped-sample ratio above this is a finding")
    low_level_dbfs: float = Field(-35.0, description="active speech level below this is too quiet")
    low_mos: float = Field(2.5, description="MOS (DNSMOS OVRL or NISQA) below this is poor quality")
    loss_warning: float = Field(0.01, ge=0, le=1, description="packet loss ratio of a direction that degrades")
    loss_critical: float = Field(0.05, ge=0, le=1, description="packet loss ratio of a direction that fails")
    jitter_warning_ms: float = Field(30.0, ge=0, description="max RFC 3550 jitter that degrades a direction")
    jitter_buffer_ms: float = Field(50.0, ge=0, description="fixed jitter buffer simulated for network MOS")
    max_leg_duration_s: float = Field(2 * 3600.0, gt=0, description="longer legs are refused")


class Settings(BaseSettings):
    """Process-wide settings, from the environment: ``CALLQA_DB``, ``CALLQA_NISQA_WEIGHTS``,
    ``CALLQA_ANALYSIS__VAD_THRESHOLD`` (nested analysis fields use a double underscore)."""

    model_config = SettingsConfigDict(env_prefix="CALLQA_", env_nested_delimiter="__", extra="ignore")

    analysis: AnalysisSettings = AnalysisSettings()
    db: Path = Field(default_factory=lambda: _default_data_dir() / "callqa.sqlite3")
    cache_ttl_s: float = Field(30 * 24 * 3600.0, ge=0)
    nisqa_weights: Path | None = None
    models_dir: Path = Field(default_factory=lambda: _default_data_dir() / "models")
    threads: int = Field(0, ge=0, description="ONNX Runtime threads per model; 0 = all cores")
    max_file_bytes: int = Field(2 * 1024**3, gt=0)
    srtp_keys: list[str] = Field(default=[], description="SDES keys to try on SRTP: SUITE:BASE64 (secrets)")

    def resolved_nisqa_weights(self) -> Path | None:
        """The configured NISQA weights, else the fetched copy in ``models_dir``, else None."""
        if self.nisqa_weights is not None:
            return self.nisqa_weights
        fetched = self.models_dir / "nisqa.tar"
        return fetched if fetched.is_file() else None


@lru_cache
def get_settings() -> Settings:
    return Settings()
