"""Command line: ``callqa analyze``, ``pcap``, ``sniff``, ``serve``, ``keys``, ``schema``, ``show``, ``list``,
``models``.

Exit codes: 0 success; 1 a batch in which every call failed; 2 bad input or usage (a CallqaError).
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from functools import lru_cache
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from callqa import __version__
from callqa.config import AnalysisSettings, Settings, get_settings
from callqa.errors import CallqaError, InputError
from callqa.pipeline import parse_roles
from callqa.report import CallReport, json_schema
from callqa.service import analyze_files, group_calls
from callqa.store import Store

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Objective quality analysis of VoIP calls.")
models_app = typer.Typer(no_args_is_help=True, help="Manage optional model files.")
app.add_typer(models_app, name="models")
keys_app = typer.Typer(no_args_is_help=True, help="Manage API keys of the HTTP service.")
app.add_typer(keys_app, name="keys")
out = Console()
err = Console(stderr=True)


def _settings(db: Path | None, nisqa_weights: Path | None, no_nisqa: bool, no_dnsmos: bool,
              transcribe: bool = False, rules: Path | None = None) -> Settings:  # fmt: skip
    base = get_settings()
    changes: dict[str, object] = {
        "nisqa": base.analysis.nisqa and not no_nisqa,
        "dnsmos": base.analysis.dnsmos and not no_dnsmos,
        "transcribe": base.analysis.transcribe or transcribe or rules is not None,
    }
    if rules is not None:
        changes["rules_file"] = rules.resolve()
    analysis = AnalysisSettings.model_validate({**base.analysis.model_dump(), **changes})
    update: dict[str, object] = {"analysis": analysis}
    if db:
        update["db"] = db
    if nisqa_weights:
        update["nisqa_weights"] = nisqa_weights
    return base.model_copy(update=update)


def print_summary(report: CallReport, cached: bool = False) -> None:
    colour = {"good": "green", "degraded": "yellow", "failed": "red"}[report.verdict]
    out.print(f"[bold]call {report.id}[/]  verdict [bold {colour}]{report.verdict.upper()}[/]  "
              f"{report.duration_s:.1f} s" + ("  (cached)" if cached else ""))  # fmt: skip
    table = Table(show_edge=False)
    for col in ("leg", "source", "dur s", "RMS dBFS", "peak dBFS", "speech", "DNSMOS ovrl", "NISQA mos"):
        table.add_column(col)
    for leg in report.legs:
        dn = leg.mos.dnsmos
        nq = leg.mos.nisqa
        table.add_row(
            leg.role, Path(leg.source).name + (f" ch{leg.channel}" if leg.channel is not None else ""),
            f"{leg.duration_s:.2f}", f"{leg.levels.rms_dbfs:.1f}", f"{leg.levels.peak_dbfs:.1f}",
            f"{leg.speech_ratio:.0%}", f"{dn.ovrl:.2f}" if dn else "-", f"{nq.mos:.2f}" if nq else "-",
        )  # fmt: skip
    out.print(table)
    for f in report.findings:
        style = {"critical": "red", "warning": "yellow", "info": "dim"}[f.severity]
        out.print(f"  [{style}]{f.severity:8}[/] {f.code:14} {f.message}")
    for w in report.warnings:
        out.print(f"  [yellow]warning[/]  {w}")
    conv = report.conversation
    if conv is not None and len(conv.sides) == 2:
        talk = ", ".join(
            f"{x.leg} {x.talk_ratio:.0%}" + (f" {x.words_per_minute:.0f} wpm" if x.words_per_minute else "")
            for x in conv.sides
        )
        out.print(f"  talk {talk}; non-talk {conv.non_talk_ratio:.0%} (longest {conv.longest_silence_s:.1f} s); "
                  f"overtalk {conv.overtalk_count}x {conv.overtalk_s:.1f} s; turns {conv.turns}")  # fmt: skip
    if report.scorecard is not None:
        out.print(f"  scorecard {report.scorecard.score:.0f}/100")
    for u in report.transcript:
        out.print(f"  [dim]{u.start_s:7.1f}[/] [bold]{u.leg:>8}[/]: {u.text}")
    skipped = {k: v for leg in report.legs for k, v in leg.mos.skipped.items()}
    for name, why in skipped.items():
        out.print(f"  [dim]{name} skipped: {why}[/]")


@app.command()
def analyze(
    files: Annotated[list[Path] | None, typer.Argument(help="one recording (stereo or mixed) or two legs")] = None,
    directory: Annotated[Path | None, typer.Option("--dir", help="analyse every call in this folder")] = None,
    jobs: Annotated[int, typer.Option(min=1, help="parallel worker processes for --dir")] = 1,
    out_file: Annotated[Path | None, typer.Option("--out", help="JSON lines output for --dir (resumable)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the CallReport as JSON")] = False,
    roles: Annotated[str | None, typer.Option(help="leg roles, e.g. agent,customer")] = None,
    nisqa_weights: Annotated[Path | None, typer.Option(help="path to NISQA nisqa.tar")] = None,
    no_nisqa: Annotated[bool, typer.Option("--no-nisqa", help="skip NISQA")] = False,
    no_dnsmos: Annotated[bool, typer.Option("--no-dnsmos", help="skip DNSMOS")] = False,
    transcribe: Annotated[bool, typer.Option("--transcribe", help="add the transcript and phrase rules")] = False,
    rules: Annotated[Path | None, typer.Option(help="YAML phrase rules (implies --transcribe)")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="analyse again even when cached")] = False,
    db: Annotated[Path | None, typer.Option(help="result store (SQLite)")] = None,
) -> None:
    """Analyse a call recording (or a folder of them) and print its quality report."""
    try:
        settings = _settings(db, nisqa_weights, no_nisqa, no_dnsmos, transcribe, rules)
        if directory is not None:
            if files:
                raise InputError("give either files or --dir, not both")
            code = run_batch(directory, settings, jobs, out_file, not no_cache)
            raise typer.Exit(code)
        if not files:
            raise InputError("nothing to analyse: give one or two recordings, or --dir")
        n_legs = 2 if len(files) == 2 else None
        report, cached = analyze_files(files, settings, parse_roles(roles, n_legs), Store(settings.db),
                                       use_cache=not no_cache)  # fmt: skip
    except CallqaError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
    else:
        print_summary(report, cached)


@lru_cache
def _store(path: Path) -> Store:
    """One Store per worker process (opening one runs the schema script)."""
    return Store(path)


def _worker(paths: list[Path], settings: Settings, use_cache: bool) -> str:
    """One call in a worker process (models load once per process; SQLite in WAL mode takes concurrent writers)."""
    report, _ = analyze_files(paths, settings, store=_store(settings.db), use_cache=use_cache)
    return report.model_dump_json()


def _done_sources(out_file: Path) -> set[tuple[str, ...]]:
    """Calls already in a previous run's output (lines that do not parse, e.g. a cut-off last line, are ignored)."""
    done: set[tuple[str, ...]] = set()
    if not out_file.exists():
        return done
    for line in out_file.read_text(errors="replace").splitlines():
        try:
            legs = json.loads(line)["legs"]
            done.add(tuple(sorted({leg["source"] for leg in legs})))
        except (ValueError, KeyError, TypeError):
            continue
    return done


def run_batch(directory: Path, settings: Settings, jobs: int, out_file: Path | None, use_cache: bool) -> int:
    """Analyse every call in a folder; carries on past bad files, lists them, and resumes from ``out_file``."""
    calls = group_calls(directory)
    if not calls:
        raise InputError(f"no audio files in {directory}")
    done = _done_sources(out_file) if out_file else set()
    todo = [c for c in calls if tuple(sorted(str(p) for p in c)) not in done]
    Store(settings.db)  # create the schema and switch to WAL once, before workers open it concurrently
    failures: list[tuple[str, str]] = []
    ok = len(calls) - len(todo)
    sink = open(out_file, "a", encoding="utf-8") if out_file else None  # noqa: SIM115
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err)  # fmt: skip
    try:
        with progress, ProcessPoolExecutor(max_workers=jobs) as pool:
            task = progress.add_task("analysing", total=len(calls), completed=ok)
            futures = {pool.submit(_worker, paths, settings, use_cache): paths for paths in todo}
            for fut in as_completed(futures):
                paths = futures[fut]
                try:
                    line = fut.result() + "\n"
                    if sink:
                        sink.write(line)
                        sink.flush()  # a run cut short keeps every finished call
                    else:
                        sys.stdout.write(line)
                    ok += 1
                except CallqaError as exc:
                    failures.append((" + ".join(map(str, paths)), str(exc)))
                except Exception as exc:  # a crash on one call must not stop the batch
                    failures.append((" + ".join(map(str, paths)), f"{type(exc).__name__}: {exc}"))
                progress.advance(task)
    finally:
        if sink:
            sink.close()
    err.print(f"{ok} of {len(calls)} calls analysed" + (f", {len(failures)} failed:" if failures else ""))
    for source, why in failures:
        err.print(f"  [red]failed[/] {source}: {why}")
    return 1 if failures and ok == 0 else 0


@app.command()
def pcap(
    capture: Annotated[Path, typer.Argument(help="pcap or pcapng file")],
    as_json: Annotated[bool, typer.Option("--json", help="print one CallReport per line")] = False,
    stats_only: Annotated[bool, typer.Option("--stats-only", help="SIP and RTP statistics, no audio analysis")] = False,
    wav_dir: Annotated[Path | None, typer.Option(help="write each direction of each call as a WAV here")] = None,
    nat_alias: Annotated[list[str] | None, typer.Option(help="PRIVATE=PUBLIC address seen behind NAT")] = None,
    srtp_key: Annotated[list[str] | None, typer.Option(help="SDES key to try: AES_CM_128_HMAC_SHA1_80:BASE64")] = None,
    no_nisqa: Annotated[bool, typer.Option("--no-nisqa", help="skip NISQA")] = False,
    nisqa_weights: Annotated[Path | None, typer.Option(help="path to NISQA nisqa.tar")] = None,
    transcribe: Annotated[bool, typer.Option("--transcribe", help="add the transcript and phrase rules")] = False,
    rules: Annotated[Path | None, typer.Option(help="YAML phrase rules (implies --transcribe)")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="analyse again even when cached")] = False,
    db: Annotated[Path | None, typer.Option(help="result store (SQLite)")] = None,
) -> None:
    """Find every call in a capture: SIP dialog, RTP per direction, network statistics and audio analysis."""
    from callqa.service import analyze_capture

    try:
        settings = _settings(db, nisqa_weights, no_nisqa, False, transcribe, rules)
        aliases = _aliases(settings, nat_alias)
        if srtp_key:
            settings = settings.model_copy(update={"srtp_keys": [*settings.srtp_keys, *srtp_key]})
        reports, warnings = analyze_capture(capture, settings, Store(settings.db), stats_only, wav_dir, aliases,
                                            use_cache=not no_cache)  # fmt: skip
    except (CallqaError, ValueError) as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    for w in warnings:
        err.print(f"[yellow]warning:[/] {w}")
    if as_json:
        for r in reports:
            sys.stdout.write(r.model_dump_json() + "\n")
        return
    if not reports:
        out.print("no calls or RTP streams found")
    for r in reports:
        print_summary(r)
        if r.sip:
            out.print(f"  SIP {r.sip.call_id}  {r.sip.from_} -> {r.sip.to}  {r.sip.end_reason}")
        for st in r.streams:
            mos = f"{st.network_mos:.2f}" if st.network_mos is not None else "-"
            out.print(f"  RTP {st.leg:8} {st.src} -> {st.dst} {st.ssrc} {st.payload}: {st.packets} pkts, "
                      f"lost {st.lost}, max delta {st.max_delta_ms:.1f} ms, jitter max {st.max_jitter_ms:.2f} "
                      f"mean {st.mean_jitter_ms:.2f} ms, network MOS {mos}")  # fmt: skip
        out.print()


@app.command()
def sniff(
    interface: Annotated[str | None, typer.Option("-i", "--interface", help="interface to capture on")] = None,
    bpf: Annotated[str | None, typer.Option(help="capture filter, e.g. 'udp' (compiled with tcpdump)")] = None,
    hep: Annotated[str | None, typer.Option(help="also accept HEP v3 on HOST:PORT, e.g. 0.0.0.0:9060")] = None,
    inactivity: Annotated[float, typer.Option(help="close a call after this many seconds without packets")] = 30.0,
    duration: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one CallReport per line")] = False,
    stats_only: Annotated[bool, typer.Option("--stats-only", help="SIP and RTP statistics, no audio analysis")] = False,
    nat_alias: Annotated[list[str] | None, typer.Option(help="PRIVATE=PUBLIC address seen behind NAT")] = None,
    no_nisqa: Annotated[bool, typer.Option("--no-nisqa", help="skip NISQA")] = False,
    transcribe: Annotated[bool, typer.Option("--transcribe", help="transcribe live, and in the reports")] = False,
    rules: Annotated[Path | None, typer.Option(help="YAML phrase rules (forbidden phrases raise live events)")] = None,
    publish: Annotated[
        str | None,
        typer.Option(
            help="callqa service to send live events to, e.g. http://127.0.0.1:8084 (key: CALLQA_PUBLISH_KEY)"
        ),
    ] = None,
    db: Annotated[Path | None, typer.Option(help="result store (SQLite)")] = None,
) -> None:
    """Listen on a mirror port (and/or HEP): each call is analysed, stored and printed when it ends; with
    --transcribe, each direction is also transcribed as the call goes on and the segments are published."""
    import signal

    from callqa.capture import live
    from callqa.capture.calls import Tracker
    from callqa.service import report_captured

    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    signal.signal(signal.SIGINT, lambda *_: stop.update(flag=True))
    source = f"live:{interface or ''}{'+hep:' + hep if hep else ''}"
    try:
        settings = _settings(db, None, no_nisqa, False, transcribe, rules)
        store = Store(settings.db)
        tracker = Tracker(
            _aliases(settings, nat_alias),
            keep_audio=not stats_only,
            srtp_keys=settings.srtp_keys,
            inactivity_s=inactivity,
            jitter_buffer_ms=settings.analysis.jitter_buffer_ms,
            max_audio_s=settings.analysis.max_leg_duration_s,
        )
        follower = None
        if settings.analysis.transcribe and not stats_only:
            import os

            from callqa.capture.live_audio import LiveAudio
            from callqa.capture.publish import Publisher
            from callqa.speech.live import LiveTranscriber
            from callqa.speech.rules import load_rules

            publisher = Publisher(publish, os.environ.get("CALLQA_PUBLISH_KEY"))
            ruleset = load_rules(settings.analysis.rules_file) if settings.analysis.rules_file else None
            follower = LiveAudio(LiveTranscriber(publisher, rules=ruleset), settings.limits)

        def ended(call) -> None:  # type: ignore[no-untyped-def]
            if follower is not None:
                follower.ended(call)
            analyser.submit(analyse, call)

        def analyse(call) -> None:  # type: ignore[no-untyped-def]
            try:
                first = min((s.first.arrival for sts in call.streams.values() for s in sts), default=0.0)
                report = report_captured(call, settings, store, source, f"{source}@{first:.6f}", stats_only)
            except Exception as exc:  # one call that cannot be analysed must not stop the capture
                err.print(f"[red]call {call.id} not analysed:[/] {type(exc).__name__}: {exc}")
                return
            if as_json:
                sys.stdout.write(report.model_dump_json() + "\n")
                sys.stdout.flush()
            else:
                print_summary(report)

        # finished calls are analysed on a worker thread, so the capture loop keeps reading meanwhile
        with ThreadPoolExecutor(max_workers=1) as analyser:
            frames = live.run(tracker, ended, interface, bpf, hep, duration, lambda: stop["flag"],
                              on_tick=(lambda: follower.poll(tracker)) if follower else None)  # fmt: skip
        if follower is not None:  # the last utterances are transcribed and sent before we exit
            follower.sink.close()  # type: ignore[attr-defined]
            publisher.close()
    except CallqaError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    err.print(f"{frames} frames read, {tracker.kernel_drops} dropped by the kernel")
    for w in tracker.warnings:
        err.print(f"[yellow]warning:[/] {w}")


def _aliases(settings: Settings, options: list[str] | None) -> dict[str, str]:
    """NAT aliases: the setting's, then ``--nat-alias PRIVATE=PUBLIC`` options over them."""
    return {**settings.nat_aliases, **dict(_alias(a) for a in options or [])}


def _alias(text: str) -> tuple[str, str]:
    private, sep, public = text.partition("=")
    if not sep or not private or not public:
        raise InputError(f"--nat-alias needs PRIVATE=PUBLIC, got {text!r}")
    return private.strip(), public.strip()


@app.command()
def schema() -> None:
    """Print the versioned JSON Schema of the CallReport."""
    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


@app.command()
def show(
    report_id: Annotated[str, typer.Argument(help="report id (or a unique prefix)")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
    db: Annotated[Path | None, typer.Option(help="result store (SQLite)")] = None,
) -> None:
    """Show a stored report."""
    try:
        report = Store(db or get_settings().db).get(report_id)
    except CallqaError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    if report is None:
        err.print(f"[red]error:[/] no stored report with id {report_id!r}")
        raise typer.Exit(2)
    if as_json:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
    else:
        print_summary(report)


@app.command("list")
def list_calls(
    limit: Annotated[int, typer.Option(min=1)] = 50,
    verdict: Annotated[str | None, typer.Option(help="good, degraded or failed")] = None,
    db: Annotated[Path | None, typer.Option(help="result store (SQLite)")] = None,
) -> None:
    """List stored reports, newest first."""
    from datetime import datetime

    try:
        rows = Store(db or get_settings().db).list(limit, verdict)
    except CallqaError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    table = Table(show_edge=False)
    for col in ("id", "analysed", "verdict", "dur s", "source"):
        table.add_column(col)
    for r in rows:
        when = datetime.fromtimestamp(r.created_at).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(r.id, when, r.verdict, f"{r.duration_s:.1f}", r.source)
    out.print(table)


@models_app.command("fetch")
def models_fetch(
    name: Annotated[str, typer.Argument(help="model to download: nisqa")],
    url: Annotated[str | None, typer.Option(help="download from this address instead of upstream")] = None,
) -> None:
    """Download optional model weights (checked against a pinned SHA-256)."""
    from callqa.fetch import fetch_nisqa

    if name != "nisqa":
        err.print(f"[red]error:[/] unknown model {name!r} (available: nisqa)")
        raise typer.Exit(2)
    try:
        path = fetch_nisqa(get_settings().models_dir, url)
    except CallqaError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    out.print(f"NISQA weights ready: {path} (licence CC BY-NC-SA 4.0: non-commercial use only)")


@models_app.command("status")
def models_status() -> None:
    """Say which models are available."""
    from callqa import models
    from callqa.quality import nisqa

    settings = get_settings()
    for name, ver in models.versions().items():
        out.print(f"{name:10} {ver}")
    weights = settings.resolved_nisqa_weights()
    reason = nisqa.unavailable_reason(weights)
    out.print(f"{'nisqa':10} " + (f"unavailable: {reason}" if reason else nisqa.version(weights)))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="address to bind (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default 8084)")] = None,
    db: Annotated[Path | None, typer.Option(help="result store (SQLite)")] = None,
) -> None:
    """Run the HTTP service (FastAPI under uvicorn)."""
    import uvicorn

    from callqa.api.main import create_app

    settings = get_settings()
    if db:
        settings = settings.model_copy(update={"db": db})
    try:
        application = create_app(settings)
    except CallqaError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    uvicorn.run(application, host=host or settings.api.host, port=port or settings.api.port,
                log_level="info", timeout_graceful_shutdown=10)  # fmt: skip


@keys_app.command("create")
def keys_create(
    scope: Annotated[str, typer.Option(help="read (GET endpoints) or write (everything)")] = "read",
    name: Annotated[str, typer.Option(help="who or what the key is for")] = "",
    db: Annotated[Path | None, typer.Option(help="result store (SQLite)")] = None,
) -> None:
    """Create an API key and print it (only its hash is stored: keep the printed key)."""
    from callqa.api.keys import KeyStore

    if scope not in ("read", "write"):
        err.print("[red]error:[/] --scope must be read or write")
        raise typer.Exit(2)
    try:
        token = KeyStore(Store(db or get_settings().db)).create(scope, name)  # type: ignore[arg-type]
    except CallqaError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    sys.stdout.write(token + "\n")


@keys_app.command("list")
def keys_list(db: Annotated[Path | None, typer.Option(help="result store (SQLite)")] = None) -> None:
    """List API keys (ids, scopes, names; never the keys themselves)."""
    from datetime import datetime

    from callqa.api.keys import KeyStore

    table = Table(show_edge=False)
    for col in ("id", "scope", "name", "created", "revoked"):
        table.add_column(col)
    for k in KeyStore(Store(db or get_settings().db)).list():
        when = datetime.fromtimestamp(k.created_at).strftime("%Y-%m-%d %H:%M")
        table.add_row(k.id, k.scope, k.name, when, "yes" if k.revoked else "")
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="the key's id (the part after cqa_)")],
    db: Annotated[Path | None, typer.Option(help="result store (SQLite)")] = None,
) -> None:
    """Revoke an API key (the service stops accepting it within 30 s)."""
    from callqa.api.keys import KeyStore

    if not KeyStore(Store(db or get_settings().db)).revoke(key_id):
        err.print(f"[red]error:[/] no API key {key_id!r}")
        raise typer.Exit(2)
    out.print(f"revoked {key_id}")


@app.callback(invoke_without_command=True)
def _root(version: Annotated[bool, typer.Option("--version", help="print the version")] = False) -> None:
    if version:
        out.print(f"callqa {__version__}")
        raise typer.Exit()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
