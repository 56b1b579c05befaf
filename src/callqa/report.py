"""The report contract: one CallReport per analysed call. Every surface reads these models.

Field names are a public contract (dashboards and scripts depend on them): add fields, never rename.
``SCHEMA_VERSION`` follows semantic versioning: a new optional field bumps the minor version.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

SCHEMA_VERSION = "1.4.0"  # 1.1: sip, streams, dtmf, legs[].rtp; 1.2: transcript, conversation, scorecard;
# 1.3: context; legs[].noise_floor_dbfs, level_timeline_dbfs, sound_segments; sip.messages (the ladder),
# streams[].intervals (loss and jitter over time); 1.4: site (the capture site that sent the call),
# legs[].mos.call (calibrated call MOS and its cause)

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


class CallMosWindow(BaseModel):
    start_s: float
    end_s: float
    mos: float


class CallMos(BaseModel):
    """The calibrated call MOS (P.862 scale, 1-4.5) from the leg's measures; see docs/mos.md."""

    value: float = Field(description="estimated P.862 (PESQ narrowband) MOS-LQO of the leg")
    model: str = Field(description="'callmos with_nisqa' or 'callmos without_nisqa': which variant ran")
    version: str = Field(description="the fitted model's version (part of the analysis cache key)")
    windows: list[CallMosWindow] = Field(default=[], description="the same estimate per DNSMOS window")
    inputs: dict[str, float] = Field(default={}, description="the measures the estimate was made from")
    cause: Literal["network", "endpoint", "both"] | None = Field(
        None,
        description="what explains a low call or network MOS: network (loss, late packets), endpoint "
        "(noise, level, clipping, band, codec chain) or both; None when nothing is low",
    )
    cause_evidence: dict[str, Any] = Field(default={}, description="the figures the cause was decided from")


class Mos(BaseModel):
    dnsmos: Dnsmos | None = None
    nisqa: Nisqa | None = None
    call: CallMos | None = Field(None, description="the calibrated call MOS (raw model outputs stay above)")
    skipped: dict[str, str] = Field(default={}, description="model name -> why it did not run")


class RtpStats(BaseModel):
    """Network statistics of one direction, as ``tshark -z rtp,streams`` computes them (RFC 3550 jitter)."""

    ssrc: str = Field(description="0x-prefixed hex; several when the direction changed SSRC")
    src: str
    dst: str
    payload: str = Field(description="codec names seen, e.g. 'PCMA, telephone-event'")
    packets: int
    expected: int
    lost: int = Field(description="expected - received; negative with duplicates or a sequence restart")
    duplicates: int
    out_of_order: int
    max_delta_ms: float
    max_jitter_ms: float
    mean_jitter_ms: float
    network_mos: float | None = Field(None, description="G.107 E-model after a 50 ms fixed jitter buffer")
    network_mos_jitter_buffers: dict[str, float] = Field(
        default={}, description="the same MOS behind other buffers: fixed_50ms, fixed_200ms, adaptive_500ms"
    )
    jitter_buffer_discards: int = 0
    loss_bursts: int = Field(0, description="runs of consecutive missing sequence numbers")
    max_loss_burst: int = Field(0, description="the longest run of missing packets")
    start_s: float = Field(0.0, description="first packet, seconds from the call start")
    end_s: float = 0.0


class RtcpSummary(BaseModel):
    """What the receiver of this stream said about it in RTCP receiver/sender reports (and XR VoIP metrics)."""

    reports: int
    fraction_lost_max: float
    cumulative_lost: int = Field(description="from the last report")
    jitter_max_ms: float | None = None
    round_trip_ms: float | None = Field(None, description="RFC 3550 A - LSR - DLSR, at the capture point")
    xr_mos_lq: float | None = None
    xr_r_factor: int | None = None


class RtpInterval(BaseModel):
    """One stretch of a stream's arrival time (5 s, longer for long calls)."""

    start_s: float = Field(description="seconds from the call start")
    packets: int
    expected: int = Field(description="advance of the highest sequence number, as RTCP counts it (RFC 3550 A.3)")
    lost: int = Field(description="expected - packets; negative with duplicates")
    max_jitter_ms: float = Field(description="largest RFC 3550 interarrival jitter reached in the interval")


class RtpStream(RtpStats):
    leg: str = Field(description="caller or callee; for RTP without SIP the source address")
    codec: str = ""
    decoded: bool = False
    note: str = ""
    rtcp: RtcpSummary | None = None
    intervals: list[RtpInterval] = Field(default=[], description="loss and jitter over time")


class Dtmf(BaseModel):
    leg: str
    digit: str
    start_s: float
    duration_ms: float


class SipEvent(BaseModel):
    """One SIP message of the dialog, for its ladder."""

    t_s: float = Field(description="seconds from the call start")
    src: str = Field(description="host:port it came from")
    dst: str = Field("", description="host:port it went to")
    label: str = Field(description="the request method, or the status and the CSeq method of a response")


class SipInfo(BaseModel):
    call_id: str
    from_: str = Field("", alias="from")
    to: str = ""
    started_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: str = ""
    matched_by: str = Field("sdp", description="how RTP was tied to the dialog: sdp, sdp port (NAT), none")
    messages: list[SipEvent] = Field(default=[], description="the dialog's SIP messages in order (at most 200)")

    model_config = {"populate_by_name": True, "serialize_by_alias": True}


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
    rtp: RtpStats | None = Field(None, description="network statistics when the leg came from a capture")
    noise_floor_dbfs: float | None = Field(
        None, description="background level: 5th percentile of 50 ms frame RMS, digital silence left out"
    )
    level_timeline_dbfs: list[float] = Field(
        default=[], description="RMS of each second of the leg, dBFS (-150 for digital silence)"
    )
    sound_segments: list[Segment] = Field(
        default=[], description="stretches louder than the noise floor by one_way_sound_margin_db, speech or not"
    )


class Finding(BaseModel):
    code: str = Field(description="one_way_audio, dead_air, no_audio, clipping, low_level, mixed_legs, ...")
    severity: Severity
    leg: Role | None = None
    start_s: float | None = None
    end_s: float | None = None
    message: str
    evidence: dict[str, Any] = {}


class Word(BaseModel):
    word: str
    start_s: float
    end_s: float
    probability: float


class Utterance(BaseModel):
    """One stretch of recognised speech of one leg (a Whisper segment), on the call's timeline."""

    leg: Role
    start_s: float
    end_s: float
    text: str
    words: list[Word] = []
    confidence: float = Field(description="exp(mean token log-probability), 0-1")
    redacted: list[Segment] = Field(default=[], description="spans whose words were masked (cards, ids, ...)")


class LoudnessPoint(BaseModel):
    start_s: float
    dbfs: float = Field(description="RMS over this leg's speech within the window, dBFS")


class SideMetrics(BaseModel):
    leg: Role
    talk_s: float = Field(description="total duration of this leg's speech segments (VAD)")
    talk_ratio: float = Field(description="talk_s / sum of every side's talk_s")
    words: int = Field(description="recognised words (0 without a transcript)")
    words_per_minute: float | None = Field(None, description="words / (talk_s / 60); None without a transcript")
    turns: int = Field(description="turns this side took (maximal runs of its speech between the other side's)")
    interruptions: int = Field(description="overtalk periods this side started while the other was speaking")
    loudness: list[LoudnessPoint] = []


class Conversation(BaseModel):
    """Conversation metrics; the definitions are in the docs (docs/conversation-metrics.md)."""

    duration_s: float
    sides: list[SideMetrics]
    non_talk_s: float = Field(description="time in which no side speaks")
    non_talk_ratio: float
    longest_silence_s: float
    longest_silence_start_s: float | None = None
    overtalk_count: int = Field(description="periods of at least overtalk_min_s in which both sides speak")
    overtalk_s: float
    turns: int = Field(description="speaker changes + 1 over the merged speech of both sides")


class ScoreItem(BaseModel):
    rule: str
    passed: bool
    weight: float


class Scorecard(BaseModel):
    score: float = Field(description="100 minus the weights of the rules that failed, at least 0")
    items: list[ScoreItem]


class CallContext(BaseModel):
    """Who and what the call was, from the system that recorded it (a ViciDial dialer). Not part of the audio
    analysis: the cache key is the audio's, and two calls with identical audio keep their own context."""

    source: Literal["vicidial"] = "vicidial"
    recording_id: int = Field(description="recording_log.recording_id")
    vicidial_id: str = Field("", description="vicidial_log.uniqueid (outbound) or vicidial_closer_log.closecallid")
    lead_id: int | None = None
    direction: Literal["inbound", "outbound"] | None = None
    call_date: datetime | None = Field(None, description="recording start (recording_log.start_epoch), UTC")
    length_in_sec: int | None = Field(None, description="recording length the dialer logged")
    status: str = Field("", description="disposition the agent or dialer gave the call")
    term_reason: str = Field("", description="who ended the call: CALLER, AGENT, ABANDON, ...")
    agent: str = Field("", description="vicidial_users.user")
    agent_name: str = ""
    user_group: str = ""
    campaign_id: str = Field("", description="campaign (outbound) or in-group (inbound)")
    campaign_name: str = ""
    carrier: str = Field("", description="trunk the call went out on (from the carrier log's channel)")
    hangup_cause: int | None = Field(None, description="Q.850 cause from the carrier log, when present")
    sip_hangup_cause: int | None = None
    sip_hangup_reason: str = ""
    dial_status: str = ""
    customer_number: str = Field("", description="masked: only the last digits are kept")
    server_ip: str = ""
    files: Literal["legs", "mixed"] | None = Field(None, description="separate ORIG legs, or the mixed file")


class Timings(BaseModel):
    decode_s: float = 0.0
    levels_s: float = 0.0
    vad_s: float = 0.0
    dnsmos_s: float = 0.0
    nisqa_s: float = 0.0
    transcribe_s: float = 0.0
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
    source: Literal["recording", "capture"] = "recording"
    sip: SipInfo | None = None
    streams: list[RtpStream] = Field(default=[], description="every RTP direction of a captured call")
    dtmf: list[Dtmf] = Field(default=[], description="RFC 4733 digits, in order")
    transcript: list[Utterance] = Field(default=[], description="both legs' speech, ordered by time")
    conversation: Conversation | None = None
    scorecard: Scorecard | None = Field(None, description="from the phrase rules, when a rules file is set")
    context: CallContext | None = Field(None, description="agent, campaign, carrier... from the call center")
    site: str | None = Field(None, description="the capture site that analysed the call and sent it here")
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
