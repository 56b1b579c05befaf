"""Command line: ``callqa analyze``, ``pcap``, ``sniff``, ``serve``, ``keys``, ``schema``, ``show``, ``list``,
``trends``, ``incidents``, ``models``.

Exit codes: 0 success; 1 a batch in which every call failed; 2 bad input or usage (a CallqaError).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from callqa import __version__
from callqa.config import AnalysisSettings, Settings, get_settings
from callqa.errors import CallqaError, InputError
from callqa.render import print_report
from callqa.report import CallReport, json_schema
from callqa.service.recordings import analyze_recording, parse_roles
from callqa.store import Store

if TYPE_CHECKING:
    from rich.progress import Progress

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Objective quality analysis of VoIP calls.")
models_app = typer.Typer(no_args_is_help=True, help="Manage optional model files.")
app.add_typer(models_app, name="models")
keys_app = typer.Typer(no_args_is_help=True, help="Manage API keys of the HTTP service.")
app.add_typer(keys_app, name="keys")
vicidial_app = typer.Typer(no_args_is_help=True, help="Analyse a ViciDial call center's recordings.")
app.add_typer(vicidial_app, name="vicidial")
outbox_app = typer.Typer(no_args_is_help=True, help="A capture site's spool of calls for the central service.")
app.add_typer(outbox_app, name="outbox")


def _console(stderr: bool = False) -> Console:
    """A terminal gets rich's layout at its width; a pipe or a log gets long lines instead of rich's default of
    80 columns, which cut names mid-word (``COLUMNS`` still wins)."""
    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, width=200 if wide else None, soft_wrap=wide)


out = _console()
err = _console(stderr=True)


def _db(value: str | None) -> Path | str | None:
    """A ``--db`` value: a PostgreSQL URL as given, else the SQLite file's path."""
    if value is None:
        return None
    return value if value.startswith(("postgresql://", "postgres://")) else Path(value)


def _settings(db: str | None, nisqa_weights: Path | None, no_nisqa: bool, no_dnsmos: bool,
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
        update["db"] = _db(db)
    if nisqa_weights:
        update["nisqa_weights"] = nisqa_weights
    return base.model_copy(update=update)


def print_summary(report: CallReport, cached: bool = False) -> None:
    print_report(out, report, cached)


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
    db: Annotated[str | None, typer.Option(help="result store: a SQLite file or postgresql://...")] = None,
) -> None:
    """Analyse a call recording (or a folder of them) and print its quality report."""
    try:
        settings = _settings(db, nisqa_weights, no_nisqa, no_dnsmos, transcribe, rules)
        if directory is not None:
            if files:
                raise InputError("give either files or --dir, not both")
            code = _run_batch(directory, settings, jobs, out_file, not no_cache)
            raise typer.Exit(code)
        if not files:
            raise InputError("nothing to analyse: give one or two recordings, or --dir")
        n_legs = 2 if len(files) == 2 else None
        report, cached = analyze_recording(files, settings, parse_roles(roles, n_legs), Store(settings.db),
                                       use_cache=not no_cache)  # fmt: skip
    except CallqaError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
    else:
        print_summary(report, cached)


def _progress() -> Progress:
    """A progress bar on stderr (rich.progress is imported only by the commands that show one)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err)  # fmt: skip


def _run_batch(directory: Path, settings: Settings, jobs: int, out_file: Path | None, use_cache: bool) -> int:
    """A folder through ``service.batch`` with a progress bar; lists the calls that failed."""
    from callqa.service.batch import done_calls, run_batch

    done = done_calls(out_file) if out_file else set()
    progress = _progress()
    task = progress.add_task("analysing", total=None)
    sink = open(out_file, "a", encoding="utf-8") if out_file else sys.stdout  # noqa: SIM115
    try:
        with progress:
            result = run_batch(directory, settings, jobs, sink, done, use_cache,
                               lambda n, total: progress.update(task, completed=n, total=total))  # fmt: skip
    finally:
        if out_file:
            sink.close()
    skipped = f" ({result.skipped} already in {out_file})" if result.skipped else ""
    err.print(f"{result.analysed} of {result.total} calls analysed{skipped}"
              + (f", {len(result.failures)} failed:" if result.failures else ""))  # fmt: skip
    for source, why in result.failures:
        err.print(f"  [red]failed[/] {source}: {why}")
    return 1 if result.failures and result.analysed == 0 else 0


def _emit(reports: list[CallReport], as_json: bool, as_jsonl: bool) -> bool:
    """``--json``: one JSON document (a list of reports); ``--jsonl``: one report per line. False: print text."""
    if as_json:
        sys.stdout.write(json.dumps([r.model_dump(mode="json") for r in reports], indent=2) + "\n")
    elif as_jsonl:
        for r in reports:
            sys.stdout.write(r.model_dump_json() + "\n")
    return as_json or as_jsonl


@app.command()
def pcap(
    capture: Annotated[Path, typer.Argument(help="pcap or pcapng file")],
    as_json: Annotated[bool, typer.Option("--json", help="print the reports as one JSON list")] = False,
    as_jsonl: Annotated[bool, typer.Option("--jsonl", help="print one report per line (JSON lines)")] = False,
    stats_only: Annotated[bool, typer.Option("--stats-only", help="SIP and RTP statistics, no audio analysis")] = False,
    wav_dir: Annotated[Path | None, typer.Option(help="write each direction of each call as a WAV here")] = None,
    nat_alias: Annotated[list[str] | None, typer.Option(help="PRIVATE=PUBLIC address seen behind NAT")] = None,
    srtp_key: Annotated[list[str] | None, typer.Option(help="SDES key to try: AES_CM_128_HMAC_SHA1_80:BASE64")] = None,
    no_nisqa: Annotated[bool, typer.Option("--no-nisqa", help="skip NISQA")] = False,
    nisqa_weights: Annotated[Path | None, typer.Option(help="path to NISQA nisqa.tar")] = None,
    transcribe: Annotated[bool, typer.Option("--transcribe", help="add the transcript and phrase rules")] = False,
    rules: Annotated[Path | None, typer.Option(help="YAML phrase rules (implies --transcribe)")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="analyse again even when cached")] = False,
    keep_audio: Annotated[
        bool,
        typer.Option(
            "--keep-audio", help="keep each call's legs for listening (the web page's players), next to the store"
        ),
    ] = False,  # fmt: skip
    db: Annotated[str | None, typer.Option(help="result store: a SQLite file or postgresql://...")] = None,
) -> None:
    """Find every call in a capture: SIP dialog, RTP per direction, network statistics and audio analysis."""
    from callqa.service.captures import analyze_capture
    from callqa.service.jobs import audio_dir

    try:
        settings = _settings(db, nisqa_weights, no_nisqa, False, transcribe, rules)
        aliases = _aliases(settings, nat_alias)
        if srtp_key:
            settings = settings.model_copy(update={"srtp_keys": [*settings.srtp_keys, *srtp_key]})
        keep = audio_dir(settings) if keep_audio and not stats_only else None
        reports, warnings = analyze_capture(capture, settings, Store(settings.db), stats_only, wav_dir, aliases,
                                            use_cache=not no_cache, audio_dir=keep)  # fmt: skip
    except (CallqaError, ValueError) as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    for w in warnings:
        err.print(f"[yellow]warning:[/] {w}")
    if _emit(reports, as_json, as_jsonl):
        return
    if not reports:
        out.print("no calls or RTP streams found")
    for r in reports:
        print_summary(r)
        out.print()


@app.command()
def sniff(
    interface: Annotated[str | None, typer.Option("-i", "--interface", help="interface to capture on")] = None,
    bpf: Annotated[str | None, typer.Option(help="capture filter, e.g. 'udp' (compiled with tcpdump)")] = None,
    hep: Annotated[str | None, typer.Option(help="also accept HEP v3 on HOST:PORT, e.g. 0.0.0.0:9060")] = None,
    inactivity: Annotated[float, typer.Option(help="close a call after this many seconds without packets")] = 30.0,
    duration: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print every report as one JSON list at the end")] = False,
    as_jsonl: Annotated[
        bool, typer.Option("--jsonl", help="print each report as a JSON line when its call ends")
    ] = False,  # fmt: skip
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
    keep_audio: Annotated[
        bool,
        typer.Option(
            "--keep-audio/--no-keep-audio",
            help="keep each call's legs for listening (the web page's players), next to the store",
        ),
    ] = True,
    site: Annotated[
        str | None, typer.Option(help="this capture site's name: each call is also sent to --central")
    ] = None,  # fmt: skip
    central: Annotated[
        str | None,
        typer.Option(help="central callqa service receiving this site's calls (key: CALLQA_SITE__KEY)"),
    ] = None,
    db: Annotated[str | None, typer.Option(help="result store: a SQLite file or postgresql://...")] = None,
) -> None:
    """Listen on a mirror port (and/or HEP): each call is analysed, stored and printed when it ends; with
    --transcribe, each direction is also transcribed as the call goes on and the segments are published; with
    --site and --central, each call is spooled on disk and sent to the central service (nothing lost when it is
    unreachable, nothing stored twice)."""
    import logging
    import signal

    from callqa.service.live import SniffOptions, run_live

    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    signal.signal(signal.SIGINT, lambda *_: stop.update(flag=True))
    collected: list[CallReport] = []

    def on_report(report: CallReport) -> None:
        if as_json:
            collected.append(report)
        elif as_jsonl:
            sys.stdout.write(report.model_dump_json() + "\n")
            sys.stdout.flush()
        else:
            print_summary(report)

    def on_error(call: object, exc: Exception) -> None:
        err.print(f"[red]call {getattr(call, 'id', '?')} not analysed:[/] {type(exc).__name__}: {exc}")

    try:
        settings = _settings(db, None, no_nisqa, False, transcribe, rules)
        options = SniffOptions(interface=interface, bpf=bpf, hep=hep, inactivity_s=inactivity, duration_s=duration,
                              stats_only=stats_only, nat_aliases=_aliases(settings, nat_alias),
                              publish_url=publish, keep_audio=keep_audio, site=site,
                              central_url=central)  # fmt: skip
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("callqa.site").setLevel(logging.INFO)  # the spool and the sender say what they do
        result = run_live(settings, options, on_report, on_error, lambda: stop["flag"])
    except CallqaError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    _emit(collected, as_json, False)
    err.print(f"{result.frames} frames read, {result.kernel_drops} dropped by the kernel")
    if result.site is not None:
        r = result.site
        last = f"; last error: {escape(r.last_error)}" if r.last_error else ""
        err.print(f"central service: {r.sent} calls stored, {r.duplicates} already there; {r.waiting} waiting in "
                  f"the spool, {r.quarantined} quarantined, {r.refused} refused (spool full), {r.without_audio} "
                  f"sent without audio (spool full){last}")  # fmt: skip
    for w in result.warnings:
        err.print(f"[yellow]warning:[/] {w}")


@outbox_app.command("status")
def outbox_status(
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object")] = False,
    db: Annotated[
        str | None, typer.Option(help="result store: SQLite file (the spool beside it) or postgresql://...")
    ] = None,
) -> None:
    """What waits in this capture site's spool for the central service (and what was quarantined)."""
    import time

    box = _outbox(db, exclusive=False)  # a running sniffer keeps sending meanwhile
    try:
        pending, quarantined = box.pending(), box.quarantined_entries()
        stamps = [int(t) for p in pending if (t := p.name.split("-", 1)[0]).isdigit()]
        oldest = min(stamps) / 1e9 if stamps else None
        status = {"spool": str(box.root), "waiting": len(pending), "bytes": box.bytes, "max_bytes": box.max_bytes,
                  "oldest_age_s": round(time.time() - oldest, 1) if oldest else None,
                  "quarantined": [{"entry": p.name, "reason": _reason(p)} for p in quarantined]}  # fmt: skip
    finally:
        box.close()
    if as_json:
        sys.stdout.write(json.dumps(status) + "\n")
        return
    out.print(f"{status['waiting']} calls waiting ({status['bytes']} of {status['max_bytes']} bytes)"
              + (f", the oldest for {status['oldest_age_s']} s" if oldest else ""))  # fmt: skip
    for q in status["quarantined"]:  # type: ignore[attr-defined]
        out.print(f"[yellow]quarantined[/] {q['entry']}: {escape(q['reason'])}")


@outbox_app.command("add")
def outbox_add(
    ids: Annotated[list[str], typer.Argument(help="stored report ids (a call refused while the spool was full)")],
    db: Annotated[
        str | None, typer.Option(help="result store: SQLite file (the spool beside it) or postgresql://...")
    ] = None,
) -> None:
    """Spool stored calls again for the central service (the sniffer sends them on its next start, or now)."""
    from callqa.service.jobs import audio_dir
    from callqa.service.recordings import leg_audio_path

    settings = get_settings() if db is None else get_settings().model_copy(update={"db": db})
    store, box, failed = Store(settings.db), _outbox(db), 0
    try:
        for report_id in ids:
            report = store.get(report_id)
            if report is None or not report.site:
                err.print(f"[red]error:[/] no stored call {report_id!r} of this site")
                failed += 1
                continue
            legs = [leg_audio_path(audio_dir(settings), report.id, i, leg.role) for i, leg in enumerate(report.legs)]
            if box.put(report, [p for p in legs if p.is_file()] if settings.site.send_audio else []) is None:
                failed += 1
    finally:
        box.close()
    if failed:
        raise typer.Exit(2)


@outbox_app.command("requeue")
def outbox_requeue(
    db: Annotated[
        str | None, typer.Option(help="result store: SQLite file (the spool beside it) or postgresql://...")
    ] = None,
) -> None:
    """Move quarantined entries back into the spool (after what made the central service refuse them is fixed)."""
    box = _outbox(db)
    try:
        out.print(f"{box.requeue()} entries back in the spool")
    finally:
        box.close()


def _outbox(db: str | None, exclusive: bool = True):  # type: ignore[no-untyped-def]
    from callqa.service.live import spool_dir
    from callqa.service.outbox import Outbox

    settings = get_settings() if db is None else get_settings().model_copy(update={"db": _db(db)})
    try:
        return Outbox(spool_dir(settings), settings.site.spool_max_bytes, exclusive)
    except CallqaError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None


def _reason(entry: Path) -> str:
    try:
        return (entry.parent / (entry.name + ".reason")).read_text().strip()
    except OSError:
        return ""


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
    db: Annotated[str | None, typer.Option(help="result store: a SQLite file or postgresql://...")] = None,
) -> None:
    """Show a stored report."""
    try:
        report = Store(_db(db) or get_settings().db).get(report_id)
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
    agent: Annotated[str | None, typer.Option(help="calls taken by this agent (ViciDial user)")] = None,
    campaign: Annotated[str | None, typer.Option(help="calls of this campaign or in-group")] = None,
    carrier: Annotated[str | None, typer.Option(help="calls that went out on this carrier (trunk)")] = None,
    direction: Annotated[str | None, typer.Option(help="inbound or outbound")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the list as JSON, with each call's context")] = False,
    db: Annotated[str | None, typer.Option(help="result store: a SQLite file or postgresql://...")] = None,
) -> None:
    """List stored reports, newest first."""
    from dataclasses import asdict
    from datetime import datetime

    from callqa.store import CallQuery

    query = CallQuery(verdict=verdict, agent=agent, campaign=campaign, carrier=carrier, direction=direction)
    try:
        rows = Store(_db(db) or get_settings().db).list(limit, query=query)
    except CallqaError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
        return
    table = Table(show_edge=False)
    with_context = any(r.context for r in rows)
    for col in ("id", "analysed", "verdict", "dur s", *(("agent", "campaign", "dir") if with_context else ()),
                "source"):  # fmt: skip
        table.add_column(col)
    for r in rows:
        when = datetime.fromtimestamp(r.created_at).strftime("%Y-%m-%d %H:%M:%S")
        ctx = r.context or {}
        extra = (str(ctx.get("agent", "")), str(ctx.get("campaign_id", "")), str(ctx.get("direction") or ""))
        table.add_row(r.id, when, r.verdict, f"{r.duration_s:.1f}", *(extra if with_context else ()), r.source)
    out.print(table)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


@app.command()
def trends(
    by: Annotated[str, typer.Option(help="agent, campaign, carrier, site or codec")] = "carrier",
    since: Annotated[str, typer.Option(help="24h, 7d, epoch seconds or an ISO date/time (UTC)")] = "24h",
    until: Annotated[str | None, typer.Option(help="end of the range (default: now)")] = None,
    bucket: Annotated[str | None, typer.Option(help="15m, 1h or 1d (default: from the range)")] = None,
    limit: Annotated[int, typer.Option(min=1, help="groups with the most calls")] = 50,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv")] = "table",
    db: Annotated[str | None, typer.Option(help="result store: a SQLite file or postgresql://...")] = None,
) -> None:
    """Quality per group over time: calls, verdicts, fault rates, MOS and loss/jitter percentiles."""
    import csv
    import time

    from callqa import rollups
    from callqa.trends import group_trends, parse_time

    try:
        if fmt not in ("table", "json", "csv"):
            raise InputError(f"--format is table, json or csv, not {fmt!r}")
        now = time.time()
        end = parse_time(until, now) if until else now
        try:
            result = group_trends(Store(_db(db) or get_settings().db), by, parse_time(since, now), end, bucket, limit)  # type: ignore[arg-type]
        except ValueError as exc:
            raise InputError(str(exc)) from exc
    except CallqaError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    if fmt == "json":
        sys.stdout.write(json.dumps(result.as_json(), indent=2) + "\n")
        return
    if fmt == "csv":
        csv.writer(sys.stdout).writerows(result.csv_rows())
        return
    table = Table(show_edge=False, title=f"by {by}, {result.bucket} buckets, {result.overall.calls} calls")
    for col in (by, "calls", "good", "degr.", "failed", "one-way", "dead air", "no media", "low MOS", "MOS p50",
                "MOS p10", "loss p95 %", "jitter p95 ms"):  # fmt: skip
        table.add_column(col)
    for g in result.groups:
        r = g.total
        figures = (
            (r.median_mos, 2),
            (r.mos_quantile(0.1), 2),
            (r.loss_quantile(0.95), 2),
            (r.jitter_quantile(0.95), 1),
        )
        table.add_row(g.key, str(r.calls), *map(str, r.verdicts), *(_pct(r.rate(f)) for f in rollups.FAULTS),
                      *(f"{v:.{d}f}" if v is not None else "-" for v, d in figures))  # fmt: skip
    out.print(table)


@app.command()
def incidents(
    status: Annotated[str | None, typer.Option(help="open or closed (default: both)")] = None,
    evaluate: Annotated[bool, typer.Option("--evaluate", help="judge the last window now and send news")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    db: Annotated[str | None, typer.Option(help="result store: a SQLite file or postgresql://...")] = None,
) -> None:
    """Systemic faults: groups whose fault rate or MOS left their baseline (docs/alerts.md)."""
    from datetime import UTC

    from callqa import incidents as found
    from callqa.service.alerts import run_evaluation

    settings = get_settings()
    try:
        if status not in (None, "open", "closed"):
            raise InputError(f"--status is open or closed, not {status!r}")
        store = Store(_db(db) or settings.db)
        if evaluate:
            ev, sent = run_evaluation(store, settings.alerts)
            err.print(f"judged {len(ev.checks)} group figures: {len(ev.opened)} opened, {len(ev.closed)} closed")
            for problem in sent.errors:
                err.print(f"[yellow]warning:[/] {problem}")
        rows = found.incidents(store, status, limit=limit)
    except CallqaError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(json.dumps([{**i.as_json(), "summary": i.summary} for i in rows], indent=2) + "\n")
        return
    table = Table(show_edge=False)
    for col in ("id", "state", "opened", "closed", "summary", "worst calls"):
        table.add_column(col)
    for i in rows:

        def when(t: float | None) -> str:
            return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M") if t else "-"

        table.add_row(i.id, i.state, when(i.opened_at), when(i.closed_at), i.summary, " ".join(i.worst[:3]))
    out.print(table)


def _date(text: str | None, option: str) -> datetime | None:
    """``2024-05-01`` or ``2024-05-01 13:00[:00]`` (the dialer's clock), else a usage error."""
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"{option} takes a date like 2024-05-01 or 2024-05-01 13:00, not {text!r}") from None


@vicidial_app.command("sync")
def vicidial_sync(
    dsn: Annotated[
        str | None, typer.Option(help="mysql://USER:PASS@HOST:3306/asterisk (else CALLQA_VICIDIAL__DSN)")
    ] = None,
    since: Annotated[str | None, typer.Option(help="recordings started at or after this date (dialer time)")] = None,
    until: Annotated[str | None, typer.Option(help="recordings started before this date (dialer time)")] = None,
    campaign: Annotated[list[str] | None, typer.Option(help="only this campaign or in-group (repeatable)")] = None,
    agent: Annotated[list[str] | None, typer.Option(help="only this agent's calls (repeatable)")] = None,
    recordings_url: Annotated[
        str | None, typer.Option(help="where the recordings are served, e.g. http://10.0.0.5/RECORDINGS")
    ] = None,
    recordings_dir: Annotated[Path | None, typer.Option(help="read the recordings from this folder")] = None,
    jobs: Annotated[int, typer.Option(min=1, help="parallel worker processes")] = 1,
    no_nisqa: Annotated[bool, typer.Option("--no-nisqa", help="skip NISQA")] = False,
    transcribe: Annotated[bool, typer.Option("--transcribe", help="add the transcript and phrase rules")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="analyse again even when the audio is cached")] = False,
    db: Annotated[str | None, typer.Option(help="result store: a SQLite file or postgresql://...")] = None,
) -> None:
    """Analyse the dialer's new recordings (and those whose files changed) and store each report with the
    call's agent, campaign, carrier and direction. Run it again at any time: finished rows are skipped."""
    from pydantic import SecretStr

    from callqa.service.vicidial import SyncOptions, run_sync

    if recordings_url and recordings_dir:
        err.print("[red]error:[/] give --recordings-url or --recordings-dir, not both")
        raise typer.Exit(2)
    progress = _progress()
    task = progress.add_task("analysing", total=None)
    try:
        settings = _settings(db, None, no_nisqa, False, transcribe)
        changes: dict[str, object] = {}
        if dsn:
            changes["dsn"] = SecretStr(dsn)
        if recordings_url:
            changes.update(recordings_url=recordings_url, recordings_dir=None)
        if recordings_dir:
            changes["recordings_dir"] = recordings_dir.resolve()
        settings = settings.model_copy(update={"vicidial": settings.vicidial.model_copy(update=changes)})
        options = SyncOptions(since=_date(since, "--since"), until=_date(until, "--until"),
                              campaigns=tuple(campaign or ()), agents=tuple(agent or ()),
                              use_cache=not no_cache)  # fmt: skip
        with progress:
            result = run_sync(settings, options, jobs,
                              lambda n, total: progress.update(task, completed=n, total=total))  # fmt: skip
    except CallqaError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    err.print(f"{result.rows} recordings read: {result.analysed} analysed, {result.unchanged} unchanged"
              + (f", {len(result.failures)} failed:" if result.failures else ""))  # fmt: skip
    for rec, why in result.failures:
        err.print(f"  [red]failed[/] recording {rec}: {why}")
    raise typer.Exit(1 if result.failures and result.analysed == 0 and result.unchanged == 0 else 0)


@models_app.command("fetch")
def models_fetch(
    name: Annotated[str, typer.Argument(help="model to download: nisqa")],
    url: Annotated[str | None, typer.Option(help="download from this address instead of upstream")] = None,
) -> None:
    """Download optional model weights (checked against a pinned SHA-256)."""
    from callqa.model_download import fetch_nisqa

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
    from callqa import model_loaders
    from callqa.quality import nisqa

    settings = get_settings()
    for name, ver in model_loaders.versions().items():
        out.print(f"{name:10} {ver}")
    weights = settings.resolved_nisqa_weights()
    reason = nisqa.unavailable_reason(weights, settings.models_dir)
    out.print(f"{'nisqa':10} " + (f"unavailable: {reason}" if reason else nisqa.version(weights)))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="address to bind (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default 8084)")] = None,
    db: Annotated[str | None, typer.Option(help="result store: a SQLite file or postgresql://...")] = None,
) -> None:
    """Run the HTTP service (FastAPI under uvicorn)."""
    import uvicorn

    from callqa.api.main import create_app

    settings = get_settings()
    if db:
        settings = settings.model_copy(update={"db": _db(db)})
    try:
        application = create_app(settings)
    except CallqaError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    uvicorn.run(application, host=host or settings.api.host, port=port or settings.api.port,
                log_level="info", timeout_graceful_shutdown=10)  # fmt: skip


@app.command()
def worker(
    processes: Annotated[int, typer.Option(min=1, max=256, help="worker processes on this host (one job each)")] = 1,
) -> None:
    """Analyse queued jobs (CALLQA_BROKER and a PostgreSQL CALLQA_DB): run any number per host, on any hosts."""
    from callqa.service.queue import supervise

    settings = get_settings()
    if settings.broker is None:
        err.print("[red]error:[/] no job queue is configured (CALLQA_BROKER=amqp://USER:PASS@HOST:5672/VHOST)")
        raise typer.Exit(2)
    try:
        supervise(settings, processes)
    except CallqaError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None


@keys_app.command("create")
def keys_create(
    scope: Annotated[str, typer.Option(help="read (GET endpoints) or write (everything)")] = "read",
    name: Annotated[str, typer.Option(help="who or what the key is for")] = "",
    db: Annotated[str | None, typer.Option(help="result store: a SQLite file or postgresql://...")] = None,
) -> None:
    """Create an API key and print it (only its hash is stored: keep the printed key)."""
    from callqa.api.keys import KeyStore

    if scope not in ("read", "write"):
        err.print("[red]error:[/] --scope must be read or write")
        raise typer.Exit(2)
    try:
        token = KeyStore(Store(_db(db) or get_settings().db)).create(scope, name)  # type: ignore[arg-type]
    except CallqaError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    sys.stdout.write(token + "\n")


@keys_app.command("list")
def keys_list(
    db: Annotated[str | None, typer.Option(help="result store: a SQLite file or postgresql://...")] = None,
) -> None:
    """List API keys (ids, scopes, names; never the keys themselves)."""
    from datetime import datetime

    from callqa.api.keys import KeyStore

    table = Table(show_edge=False)
    for col in ("id", "scope", "name", "created", "revoked"):
        table.add_column(col)
    for k in KeyStore(Store(_db(db) or get_settings().db)).list():
        when = datetime.fromtimestamp(k.created_at).strftime("%Y-%m-%d %H:%M")
        table.add_row(k.id, k.scope, k.name, when, "yes" if k.revoked else "")
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="the key's id (the part after cqa_)")],
    db: Annotated[str | None, typer.Option(help="result store: a SQLite file or postgresql://...")] = None,
) -> None:
    """Revoke an API key (the service stops accepting it within 30 s)."""
    from callqa.api.keys import KeyStore

    if not KeyStore(Store(_db(db) or get_settings().db)).revoke(key_id):
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
