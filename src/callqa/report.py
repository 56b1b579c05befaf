"""The report contract: one CallReport per analysed call. Every surface reads these models.

Field names are a public contract (dashboards and scripts depend on them): add fields, never rename.
``SCHEMA_VERSION`` follows semantic versioning: a new optional field bumps the minor version.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

SCHEMA_VERSION = "1.0.0"

Role = Literal["caller", "callee", "agent", "customer", "left", "right", "mixed"]
Severity = Literal["info", "warning", "critical"]
Verdict = Literal["good", "degraded", "failed"]


class Segment(BaseModel):
    start_s: float
    end_s: float


class Levels(BaseModel):
    rms_dbfs: float = Field(description="RMS of all samples, dB re full scale (sox stat 'RMS amplitude')")
    peak_dbfs: float = Field(description="largest absolute sample, dBFS (sox stat max/min amplitude)")
    clipping_ratio: float = Field(description="share of samples at or above the clip level")
    active_dbfs: float | None = Field(None, description="RMS over speech segments only, dBFS")


class DnsmosWindow(BaseModel):
    start_s: float
    sig: float
    bak: float
    ovrl: float
    p808: float


class Dnsmos(BaseModel):
    sig: float
    bak: float
    ovrl: float
    p808: float
    windows: list[DnsmosWindow] = []


class NisqaWindow(BaseModel):
    start_s: float
    end_s: float
    mos: float
    noisiness: float
    coloration: float
    discontinuity: float
    loudness: float


class Nisqa(BaseModel):
    mos: float
    noisiness: float
    coloration: float
    discontinuity: float
    loudness: float
    windows: list[NisqaWindow] = Field(default=[], description="per-window scores when the leg was windowed")


class Mos(BaseModel):
    dnsmos: Dnsmos | None = None
    nisqa: Nisqa | None = None
    skipped: dict[str, str] = Field(default={}, description="model name -> why it did not run")


class LegReport(BaseModel):
    role: Role
    source: str
    channel: int | None = Field(None, description="channel index in the source file, when one of several")
    codec: str = ""
    sample_rate: int
    duration_s: float
    levels: Levels
    speech_ratio: float
    speech_s: float
    speech_segments: list[Segment]
    silences: list[Segment]
    mos: Mos


class Finding(BaseModel):
    code: str = Field(description="one_way_audio, dead_air, no_audio, clipping, low_level, mixed_legs, ...")
    severity: Severity
    leg: Role | None = None
    start_s: float | None = None
    end_s: float | None = None
    message: str
    evidence: dict[str, Any] = {}


class Timings(BaseModel):
    decode_s: float = 0.0
    levels_s: float = 0.0
    vad_s: float = 0.0
    dnsmos_s: float = 0.0
    nisqa_s: float = 0.0
    total_s: float = 0.0


class CallReport(BaseModel):
    id: str
    schema_version: str = SCHEMA_VERSION
    created_at: datetime
    verdict: Verdict
    reasons: list[str] = []
    duration_s: float
    warnings: list[str] = []
    legs: list[LegReport]
    findings: list[Finding]
    timings: Timings = Timings()
    models: dict[str, str] = Field(default={}, description="model name -> version used")
    settings: dict[str, Any] = {}
    cache_key: str = ""


def json_schema() -> dict[str, Any]:
    schema = CallReport.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["x-schema-version"] = SCHEMA_VERSION
    schema["title"] = f"CallReport {SCHEMA_VERSION}"
    return schema
