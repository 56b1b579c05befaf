"""Live analysis: capture from an interface and/or HEP, report and store each call when it ends, and (with
transcription) follow each call's audio as it arrives and publish live transcript events. At a capture site
(``site.name`` and ``site.central_url``), each finished call is also spooled and sent to the central service.

``run_live`` wires the capture tracker, the live audio follower, the transcriber, the event publisher and the
site's spool and sender; a front end (the CLI, a service) passes what to do with each finished report and how
to stop.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from callqa.capture import live
from callqa.capture.calls import CapturedCall, Tracker
from callqa.config import Settings
from callqa.errors import InputError
from callqa.report import CallReport
from callqa.service.captures import report_captured
from callqa.service.jobs import audio_dir
from callqa.service.outbox import Outbox, Sender
from callqa.service.recordings import leg_audio_path
from callqa.store import Store


@dataclass(frozen=True)
class SniffOptions:
    """Where to listen and what to do (every field has the CLI option of the same name)."""

    interface: str | None = None
    bpf: str | None = None
    hep: str | None = None
    inactivity_s: float = 30.0
    duration_s: float | None = None
    stats_only: bool = False
    nat_aliases: dict[str, str] = field(default_factory=dict)
    publish_url: str | None = None  # a callqa service taking live events; None prints them on stderr
    keep_audio: bool = True  # each call's decoded legs kept for listening (next to the store, pruned by age)
    site: str | None = None  # this capture site's name (else the site.name setting)
    central_url: str | None = None  # the central service the site sends its calls to (else site.central_url)


@dataclass
class SiteResult:
    """What a capture site sent: stored by the central service now, already there, waiting in the spool."""

    sent: int
    duplicates: int
    waiting: int
    quarantined: int
    refused: int
    without_audio: int
    last_error: str


@dataclass
class SniffResult:
    frames: int
    kernel_drops: int
    warnings: list[str]
    site: SiteResult | None = None


def run_live(
    settings: Settings,
    options: SniffOptions,
    on_report: Callable[[CallReport], object],
    on_error: Callable[[CapturedCall, Exception], object],
    should_stop: Callable[[], bool] = lambda: False,
) -> SniffResult:
    """Capture until ``options.duration_s`` passes or ``should_stop()``. Each finished call is analysed on a
    worker thread (capture goes on meanwhile), stored, and handed to ``on_report``; a call that cannot be
    analysed goes to ``on_error`` and the capture carries on."""
    store = Store(settings.db)
    site = options.site or settings.site.name or None
    outbox, sender = open_site(settings, site, options.central_url)  # a wrong site set-up fails before capturing
    source = f"live:{options.interface or ''}{'+hep:' + options.hep if options.hep else ''}"
    tracker = Tracker(
        options.nat_aliases,
        keep_audio=not options.stats_only,
        srtp_keys=settings.srtp_keys,
        inactivity_s=options.inactivity_s,
        jitter_buffer_ms=settings.analysis.jitter_buffer_ms,
        max_audio_s=settings.analysis.max_leg_duration_s,
    )
    follower, publisher = None, None
    if settings.analysis.transcribe and not options.stats_only:
        from callqa.capture.live_audio import LiveAudio
        from callqa.service.publish import Publisher
        from callqa.speech.live import LiveTranscriber
        from callqa.speech.rules import load_rules

        key = settings.publish_key.get_secret_value() if settings.publish_key else None
        publisher = Publisher(options.publish_url, key)
        ruleset = load_rules(settings.analysis.rules_file) if settings.analysis.rules_file else None
        follower = LiveAudio(LiveTranscriber(publisher, rules=ruleset), settings.limits)

    keep = audio_dir(settings) if options.keep_audio and not options.stats_only else None

    def analyse(call: CapturedCall) -> None:
        try:
            first = min((s.first.arrival for sts in call.streams.values() for s in sts), default=0.0)
            report = report_captured(call, settings, store, source, f"{source}@{first:.6f}", options.stats_only,
                                     audio_dir=keep, site=site)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - one call that cannot be analysed must not stop the capture
            on_error(call, exc)
            return
        if outbox is not None and sender is not None:
            legs = [leg_audio_path(keep, report.id, i, leg.role) for i, leg in enumerate(report.legs)] if keep else []
            try:  # durable before it is printed or handed on
                outbox.put(report, legs if settings.site.send_audio else [])
            except OSError as exc:
                on_error(call, OSError(f"call {report.id} not spooled for the central service: {exc}"))
            sender.notify()
        on_report(report)

    try:
        # finished calls are analysed on a worker thread, so the capture loop keeps reading meanwhile
        with ThreadPoolExecutor(max_workers=1) as analyser:

            def ended(call: CapturedCall) -> None:
                if follower is not None:
                    follower.ended(call)
                analyser.submit(analyse, call)

            frames = live.run(tracker, ended, options.interface, options.bpf, options.hep, options.duration_s,
                              should_stop, on_tick=(lambda: follower.poll(tracker)) if follower else None)  # fmt: skip
        if follower is not None and publisher is not None:  # the last utterances are transcribed and sent first
            follower.sink.close()  # type: ignore[attr-defined]
            publisher.close()
    finally:
        site_result = close_site(outbox, sender, settings.site.drain_s)
    return SniffResult(frames, tracker.kernel_drops, list(tracker.warnings), site_result)


def open_site(settings: Settings, site: str | None, central_url: str | None) -> tuple[Outbox | None, Sender | None]:
    """The spool and its sender when this is a capture site (a name and a central service), else (None, None)."""
    central_url = central_url or settings.site.central_url
    if not site and not central_url:
        return None, None
    if not site or not central_url:
        raise InputError("a capture site needs both its name (--site, CALLQA_SITE__NAME) and the central service "
                         "(--central, CALLQA_SITE__CENTRAL_URL)")  # fmt: skip
    from callqa.config import SiteSettings

    try:
        SiteSettings(name=site)
    except ValueError:
        raise InputError(f"site name {site!r}: letters, digits, '_', '.', '-' (64 at most)") from None
    key = settings.site.key or settings.publish_key
    if key is None:
        raise InputError("a capture site needs a write API key of the central service in CALLQA_SITE__KEY")
    outbox = Outbox(spool_dir(settings), settings.site.spool_max_bytes)
    return outbox, Sender(outbox, central_url, key.get_secret_value(), settings.site).start()


def spool_dir(settings: Settings) -> Path:
    return settings.site.spool_dir or settings.data_dir / "outbox"


def close_site(outbox: Outbox | None, sender: Sender | None, drain_s: float) -> SiteResult | None:
    """Send what is spooled for at most ``drain_s``, then stop; what is left waits for the next start."""
    if outbox is None or sender is None:
        return None
    sender.close(drain_s)
    result = SiteResult(sender.sent, sender.duplicates, len(outbox.pending()), len(outbox.quarantined_entries()),
                        outbox.refused, outbox.without_audio, sender.last_error)  # fmt: skip
    outbox.close()
    return result
