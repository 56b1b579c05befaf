"""Live analysis: capture from an interface and/or HEP, report and store each call when it ends, and (with
transcription) follow each call's audio as it arrives and publish live transcript events.

``run_live`` wires the capture tracker, the live audio follower, the transcriber and the event publisher; a
front end (the CLI, a service) passes what to do with each finished report and how to stop.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from callqa.capture import live
from callqa.capture.calls import CapturedCall, Tracker
from callqa.config import Settings
from callqa.report import CallReport
from callqa.service.captures import report_captured
from callqa.service.jobs import audio_dir
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


@dataclass
class SniffResult:
    frames: int
    kernel_drops: int
    warnings: list[str]


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
                                     audio_dir=keep)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - one call that cannot be analysed must not stop the capture
            on_error(call, exc)
            return
        on_report(report)

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
    return SniffResult(frames, tracker.kernel_drops, list(tracker.warnings))
