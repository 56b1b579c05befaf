"""The text report a person reads in a terminal or a log: verdict, a table per leg, one plain sentence per
finding, DTMF, the network per direction for captured calls, the conversation and the transcript."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from callqa import explain
from callqa.report import CallReport, LegReport, RtpStream

_COLOUR = {"good": "green", "degraded": "yellow", "failed": "red"}
_STYLE = {"critical": "red", "warning": "yellow", "info": "dim"}


def _lost(st: RtpStream) -> str:
    """Loss as a person reads it: a negative count (duplicates, a sequence restart) is not loss."""
    if st.lost < 0:
        return f"none lost ({-st.lost} more received than expected: duplicates or a sequence restart)"
    share = f" ({st.lost / st.expected:.1%})" if st.expected else ""
    return f"{st.lost} lost{share}"


def _call_mos(leg: LegReport) -> str:
    call = leg.mos.call
    if call is None:
        return "-"
    return f"{call.value:.2f}" + (f" ({call.cause})" if call.cause else "")


def print_report(out: Console, report: CallReport, cached: bool = False) -> None:
    out.print(f"[bold]call {report.id}[/]  verdict [bold {_COLOUR[report.verdict]}]{report.verdict.upper()}[/]  "
              f"{report.duration_s:.1f} s" + ("  (cached)" if cached else ""))  # fmt: skip
    if report.sip:
        s = report.sip
        out.print(f"  SIP {s.from_} -> {s.to}  ({s.end_reason or 'in progress'}; Call-ID {s.call_id})")
    if report.legs:
        table = Table(show_edge=False)
        columns = ("leg", "source", "dur s", "RMS dBFS", "peak dBFS", "speech", "call MOS", "DNSMOS ovrl", "NISQA mos")
        for col in columns:
            table.add_column(col)
        for leg in report.legs:
            dn, nq = leg.mos.dnsmos, leg.mos.nisqa
            table.add_row(
                leg.role, Path(leg.source).name + (f" ch{leg.channel}" if leg.channel is not None else ""),
                f"{leg.duration_s:.2f}", f"{leg.levels.rms_dbfs:.1f}", f"{leg.levels.peak_dbfs:.1f}",
                f"{leg.speech_ratio:.0%}", _call_mos(leg), f"{dn.ovrl:.2f}" if dn else "-",
                f"{nq.mos:.2f}" if nq else "-",
            )  # fmt: skip
        out.print(table)
    for st in report.streams:
        mos = f", network MOS {st.network_mos:.2f}" if st.network_mos is not None else ""
        out.print(f"  RTP from {st.leg} {st.src} -> {st.dst} ({st.payload}): {st.packets} packets, {_lost(st)}, "
                  f"jitter max {st.max_jitter_ms:.1f} ms{mos}" + (f"; {st.note}" if st.note else ""))  # fmt: skip
    for f in report.findings:
        out.print(f"  [{_STYLE[f.severity]}]{f.severity:8}[/] {explain.sentence(f, report)} [dim]({f.code})[/]")
    for w in explain.warnings_to_show(report):
        out.print(f"  [yellow]note[/]     {w}")
    if report.dtmf:
        digits = " ".join(f"{d.digit} ({d.leg}, {d.start_s:.1f} s)" for d in report.dtmf)
        out.print(f"  DTMF {digits}")
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
