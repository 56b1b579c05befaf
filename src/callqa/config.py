"""Settings: one object, read from the environment (``CALLQA_*``) and passed down.

Only the fields in :class:`AnalysisSettings` change what an analysis produces; they are part of the cache key.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, SerializationInfo, field_serializer, field_validator
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
    one_way_partial_min_s: float = Field(
        20.0, gt=0, description="mid-call: one side silent this long while the other waits for it, then back"
    )
    # one-way audio over time (the reasons for these defaults are in docs/detectors.md)
    one_way_min_talk_s: float = Field(1.0, ge=0, description="talk into the silence needed to judge one-way")
    one_way_wait_s: float = Field(1.5, gt=0, description="a pause of the talker this long, unanswered, is a wait")
    one_way_min_waits: int = Field(2, ge=0, description="unanswered waits before a side that spoke is 'lost'")
    one_way_wait_share: float = Field(
        0.5, ge=0, description="the talker's waits must last this share of its talk (waiting, not a monologue)"
    )
    one_way_after_min_s: float = Field(8.0, gt=0, description="a side silent this long to the end may be lost")
    one_way_hold_gap_s: float = Field(8.0, gt=0, description="talker pause this long is a hold: evidence after it")
    one_way_noise_margin_db: float = Field(
        10.0, ge=0, description="speech found within this of the leg's noise floor is line noise, not speech"
    )
    one_way_sound_margin_db: float = Field(
        20.0, ge=0, description="sound this far above the noise floor in the other's pause is a reply, VAD or not"
    )
    one_way_rtp_share: float = Field(
        0.05, ge=0, le=1, description="a direction with fewer packets than this share of the other's is missing"
    )
    one_way_rtp_stop_s: float = Field(
        3.0, gt=0, description="a direction whose RTP ends this long before the other's has stopped"
    )
    mixed_channel_correlation: float = Field(
        0.98, gt=0, le=1, description="stereo channels correlated this much are one (mixed) signal"
    )
    digital_silence_dbfs: float = Field(-70.0, description="a leg whose peak is below this carries no audio")
    clip_level: float = Field(0.98, gt=0, le=1.0, description="|sample| at or above this counts as clipped")
    clipping_ratio_max: float = Field(0.001, ge=0, description="clipped-sample ratio above this is a finding")
    low_level_dbfs: float = Field(-35.0, description="active speech level below this is too quiet")
    low_mos: float = Field(
        3.0, description="call MOS (calibrated, P.862 scale) below this is poor quality; see docs/mos.md"
    )
    loss_warning: float = Field(0.01, ge=0, le=1, description="packet loss ratio of a direction that degrades")
    loss_critical: float = Field(0.05, ge=0, le=1, description="packet loss ratio of a direction that fails")
    jitter_warning_ms: float = Field(30.0, ge=0, description="max RFC 3550 jitter that degrades a direction")
    jitter_buffer_ms: float = Field(50.0, ge=0, description="fixed jitter buffer simulated for network MOS")
    max_leg_duration_s: float = Field(2 * 3600.0, gt=0, description="longer legs are refused")
    # transcription (faster-whisper over the VAD's speech regions) and conversation analytics
    transcribe: bool = Field(False, description="add the transcript, conversation metrics and phrase rules")
    whisper_model: str = Field("", description="'' = bundled tiny.en; a local model directory or a model name")
    whisper_language: str = "en"
    whisper_compute_type: str = "int8"
    whisper_beam_size: int = Field(5, ge=1, le=10)
    whisper_batch_size: int = Field(
        4, ge=1, le=32, description="Whisper windows encoded together: 8 is ~10% faster and needs ~110 MB more"
    )
    overtalk_min_s: float = Field(0.5, ge=0, description="both sides speaking this long counts as overtalk")
    loudness_window_s: float = Field(5.0, gt=0, description="window of the loudness-over-time series")
    redact_transcripts: bool = Field(True, description="mask cards, national ids, phones, emails in transcripts")
    redact_audio: bool = Field(False, description="also replace those spans in the kept audio by a tone")
    rules_file: Path | None = Field(None, description="YAML phrase rules (required/forbidden phrases)")


class LimitSettings(BaseModel, frozen=True):
    """Bounds on untrusted input, checked before the work they bound is allocated. Each violation is a
    ``LimitError`` naming its setting (exit 2 in the CLI, 413 in the API). The longest leg is
    ``analysis.max_leg_duration_s`` (it also bounds a captured direction's timeline)."""

    max_sample_rate: int = Field(192_000, ge=8000, description="highest sample rate a file may declare, Hz")
    max_channels: int = Field(8, ge=1, description="most channels a file may declare")
    max_decoded_bytes: int = Field(
        1024**3, gt=0, description="largest decoded size of one file (float32 samples, all channels), bytes"
    )
    max_rtp_jump_s: float = Field(
        60.0, gt=0, description="an RTP timestamp may run ahead of its neighbour's by this much more than arrival times"
    )
    max_rtp_payload_bytes: int = Field(2048, ge=160, description="largest RTP payload decoded as audio, bytes")
    max_streams_per_call: int = Field(32, ge=1, description="most RTP streams decoded for one call")


class SftpServer(BaseModel, frozen=True):
    """A recording server reachable over SFTP with key authentication and a pinned host key."""

    name: str = Field("", description="what requests call it (default: the host)")
    host: str
    port: int = Field(22, ge=1, le=65535)
    user: str
    key_file: Path = Field(description="private key (must not be readable by others)")
    known_hosts: Path = Field(description="OpenSSH known_hosts file holding the server's host key")
    base_dir: str = Field("/", description="requests may only read below this directory")

    @property
    def label(self) -> str:
        return self.name or self.host


class FetchSettings(BaseModel, frozen=True):
    """Where recordings may be fetched from, and the limits on each fetch."""

    http_hosts: list[str] = Field(default=[], description="allowed recording hosts: 'host' or 'host:port'")
    sftp_servers: list[SftpServer] = []
    max_bytes: int = Field(500 * 1024**2, gt=0)
    timeout_s: float = Field(120.0, gt=0, description="whole-fetch deadline")
    max_redirects: int = Field(5, ge=0)
    concurrency: int = Field(4, ge=1, description="fetches at once, in the service (never in analysis workers)")


class ApiSettings(BaseModel, frozen=True):
    host: str = "127.0.0.1"
    port: int = Field(8084, ge=1, le=65535)
    workers: int = Field(1, ge=1, description="analysis worker processes (each loads the models once)")
    worker_nice: int = Field(5, ge=0, le=19, description="workers yield the CPU to request handling by this much")
    queue_max: int = Field(100, ge=1, description="jobs queued or running; more are refused with 429")
    max_upload_bytes: int = Field(250 * 1024**2, gt=0, description="largest request body (keep nginx in line)")
    rate_per_minute: int = Field(600, ge=1, description="writes (POST) per API key per minute (burst: the same)")
    read_rate_per_minute: int = Field(
        1200, ge=1, description="reads (GET, e.g. job polling) per API key per minute, counted apart from writes"
    )
    max_wait_s: float = Field(600.0, ge=0, description="longest ?wait= a caller may ask for")
    min_free_bytes: int = Field(1024**3, ge=0, description="/ready fails below this much free disk")
    keep_audio_days: float = Field(
        30.0, ge=0, description="kept leg audio is deleted this long after it was written; 0 keeps it"
    )
    keep_jobs_days: float = Field(
        30.0, ge=0, description="finished job records are deleted after this long; 0 keeps them"
    )


class LlmSettings(BaseModel, frozen=True):
    """The language model behind summaries, investigations and questions."""

    provider: Literal["auto", "anthropic", "openai", "offline"] = Field(
        "auto", description="auto: Anthropic when a key is set, else the offline summary"
    )
    api_key: SecretStr | None = Field(None, description="else ANTHROPIC_API_KEY / OPENAI_API_KEY, else api_key_file")
    api_key_file: Path | None = Field(None, description="file holding the key; refused when others can read it")
    base_url: str | None = Field(None, description="provider address (an OpenAI-compatible server for 'openai')")
    small_model: str = "claude-haiku-4-5"
    large_model: str = "claude-sonnet-4-5"
    small_max_tokens: int = Field(500, ge=16)
    large_max_tokens: int = Field(2000, ge=16)
    small_timeout_s: float = Field(10.0, gt=0)
    large_timeout_s: float = Field(90.0, gt=0)
    max_retries: int = Field(2, ge=0, description="retries on 429/529/5xx/timeouts, with backoff")
    max_tool_turns: int = Field(8, ge=1, description="tool calls an answer to /ask may make")
    mask_pii: bool = Field(True, description="mask card numbers, ids, phone numbers and emails before sending")


class VicidialSettings(BaseModel, frozen=True):
    """A ViciDial dialer whose recordings are analysed (``callqa vicidial sync``, or the service on a schedule)."""

    dsn: SecretStr | None = Field(None, description="mysql://USER:PASS@HOST:3306/asterisk (a read-only user)")
    recordings_url: str = Field(
        "http://{server_ip}/RECORDINGS",
        description="where the dialer serves its recordings; {server_ip} is the recording_log row's server",
    )
    recordings_dir: Path | None = Field(None, description="read the recordings from this folder instead of HTTP")
    use_legs: bool = Field(True, description="analyse the separate ORIG legs when they exist (else the mixed file)")
    in_leg: Literal["customer", "agent"] = Field(
        "customer", description="who X-in.wav holds (X-out.wav is the other side); see docs/vicidial.md"
    )
    lookback_days: float = Field(
        7.0, gt=0, description="without --since, rows of this many days back are read (changed files re-analysed)"
    )
    campaigns: list[str] = Field(default=[], description="only these campaigns / in-groups (empty: all)")
    agents: list[str] = Field(default=[], description="only these agents (empty: all)")
    sync_interval_s: float = Field(0.0, ge=0, description="the service syncs this often; 0 = never")
    keep_digits: int = Field(2, ge=0, le=4, description="digits of the customer number kept unmasked")
    connect_timeout_s: float = Field(10.0, gt=0)

    @field_serializer("dsn", when_used="json")
    def _dsn(self, value: SecretStr | None, info: SerializationInfo) -> str | None:
        """Masked in JSON, except for the worker processes that need it (``context={"reveal_secrets": True}``)."""
        if value is None:
            return None
        reveal = isinstance(info.context, dict) and info.context.get("reveal_secrets")
        return value.get_secret_value() if reveal else str(value)


class AlertSettings(BaseModel, frozen=True):
    """Systemic fault detection over the stored calls (docs/alerts.md) and where incidents are sent."""

    interval_s: float = Field(900.0, ge=0, description="the service evaluates this often; 0 = never")
    window_s: float = Field(3600.0, ge=300, description="the current window each group is judged on")
    baseline_days: int = Field(7, ge=1, le=60, description="the baseline: the same hours of this many days before")
    baseline_min_calls: int = Field(
        200, ge=1, description="fewer calls in those same hours: the baseline is the whole of those days"
    )
    min_calls: int = Field(30, ge=1, description="a group with fewer calls in the window is not judged")
    alpha: float = Field(0.001, gt=0, lt=0.5, description="p-value below which a group's rate is raised")
    close_alpha: float = Field(0.05, gt=0, lt=0.5, description="an incident stays open while p is below this")
    min_ratio: float = Field(2.0, ge=1.0, description="the window's rate must be this many times the baseline's")
    min_rate_delta: float = Field(0.02, ge=0.0, description="and at least this much above it (0.02 = 2 points)")
    mos_drop: float = Field(0.3, ge=0.0, description="median MOS this far below the baseline's median (and p)")
    clear_after_s: float = Field(3600.0, ge=0, description="an incident closes after this long without its fault")
    worst_calls: int = Field(5, ge=0, le=50)
    webhook_url: str = Field("", description="POST each opened/closed incident as JSON here")
    alertmanager_url: str = Field("", description="Alertmanager base URL: alerts go to {url}/api/v2/alerts")
    smtp_host: str = Field("", description="mail incidents through this SMTP server")
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_starttls: bool = False
    smtp_user: str = ""
    smtp_password: SecretStr | None = None
    mail_from: str = "callqa@localhost"
    mail_to: list[str] = []
    public_url: str = Field("", description="the service's public base URL, for links to calls in notifications")
    timeout_s: float = Field(10.0, gt=0, description="per notification")


class MetricsSettings(BaseModel, frozen=True):
    group_window_s: float = Field(3600.0, ge=900, description="the per-group gauges cover this trailing window")
    top_groups: int = Field(20, ge=1, le=200, description="per dimension: these groups, the rest as 'other'")


class SiteSettings(BaseModel, frozen=True):
    """A capture site: ``callqa sniff`` at a remote site sends each finished call's report (and its kept audio)
    to a central service, through a durable spool on disk (see docs/scaling.md, "Capture sites")."""

    name: str = Field(
        "", pattern=r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,63})?$", description="this site's name; '' = not a site"
    )
    central_url: str | None = Field(None, description="the central callqa service, e.g. https://callqa.example")
    key: SecretStr | None = Field(None, description="a write API key of the central service (else publish_key)")
    ca_file: Path | None = Field(None, description="CA certificates to verify the central service with")
    spool_dir: Path | None = Field(None, description="the outgoing spool; default: 'outbox' next to the store")
    spool_max_bytes: int = Field(
        2 * 1024**3, gt=0, description="spool size limit: past it calls go without audio, then are refused"
    )
    send_audio: bool = Field(True, description="send each call's kept leg audio with its report")
    timeout_s: float = Field(30.0, gt=0, description="one delivery's deadline")
    retry_min_s: float = Field(1.0, gt=0, description="first wait after a failed delivery (doubles each time)")
    retry_max_s: float = Field(60.0, gt=0, description="longest wait between delivery attempts")
    drain_s: float = Field(10.0, ge=0, description="when the sniffer stops, how long it keeps sending the spool")


class Settings(BaseSettings):
    """Process-wide settings, from the environment: ``CALLQA_DB``, ``CALLQA_NISQA_WEIGHTS``,
    ``CALLQA_ANALYSIS__VAD_THRESHOLD`` (nested analysis fields use a double underscore)."""

    model_config = SettingsConfigDict(env_prefix="CALLQA_", env_nested_delimiter="__", extra="ignore")

    analysis: AnalysisSettings = AnalysisSettings()
    db: Path | str = Field(
        default_factory=lambda: _default_data_dir() / "callqa.sqlite3",
        description="the store: a SQLite file (the default), or postgresql://USER[:PASS]@HOST[:PORT]/DB",
    )
    work_dir: Path | None = Field(
        None, description="uploads spool and kept audio; default: beside a SQLite store, else the user's data dir"
    )
    broker: SecretStr | None = Field(
        None, description="amqp://USER:PASS@HOST:5672/VHOST: jobs go to `callqa worker` processes (PostgreSQL only)"
    )
    queue_name: str = Field("callqa.analyze", min_length=1, max_length=200, description="the analysis queue")
    cache_ttl_s: float = Field(30 * 24 * 3600.0, ge=0)
    nisqa_weights: Path | None = None
    models_dir: Path = Field(default_factory=lambda: _default_data_dir() / "models")
    threads: int = Field(0, ge=0, description="ONNX Runtime threads per model; 0 = all cores")
    max_file_bytes: int = Field(2 * 1024**3, gt=0)
    srtp_keys: list[str] = Field(default=[], description="SDES keys to try on SRTP: SUITE:BASE64 (secrets)")
    nat_aliases: dict[str, str] = Field(
        default={}, description="capture: private address in SDP -> public address its media comes from"
    )
    publish_key: SecretStr | None = Field(
        None, description="write API key that live capture uses to publish events to a service (CALLQA_PUBLISH_KEY)"
    )
    limits: LimitSettings = LimitSettings()
    api: ApiSettings = ApiSettings()
    llm: LlmSettings = LlmSettings()
    fetch: FetchSettings = FetchSettings()
    vicidial: VicidialSettings = VicidialSettings()
    alerts: AlertSettings = AlertSettings()
    metrics: MetricsSettings = MetricsSettings()

    site: SiteSettings = SiteSettings()

    @field_validator("db", mode="before")
    @classmethod
    def _db(cls, value: object) -> Path | str:
        """A PostgreSQL URL stays a string; anything else is the SQLite file's path."""
        text = str(value)
        return text if text.startswith(("postgresql://", "postgres://")) else Path(text)

    @field_serializer("broker", when_used="json")
    def _broker(self, value: SecretStr | None, info: SerializationInfo) -> str | None:
        """Masked in JSON, except for the worker processes that need it (``context={"reveal_secrets": True}``)."""
        if value is None:
            return None
        reveal = isinstance(info.context, dict) and info.context.get("reveal_secrets")
        return value.get_secret_value() if reveal else str(value)

    @property
    def data_dir(self) -> Path:
        """Where the service keeps its spool of uploads and other working files: ``work_dir``, else next to a
        SQLite store, else the user's data directory."""
        if self.work_dir is not None:
            return self.work_dir
        return self.db.parent if isinstance(self.db, Path) else _default_data_dir()

    def resolved_nisqa_weights(self) -> Path | None:
        """The configured NISQA weights, else the fetched copy in ``models_dir``, else None."""
        if self.nisqa_weights is not None:
            return self.nisqa_weights
        fetched = self.models_dir / "nisqa.tar"
        return fetched if fetched.is_file() else None


@lru_cache
def get_settings() -> Settings:
    return Settings()
