"""Inline SVG charts drawn from figures the server already has: a leg's waveform with its segments and
findings, line and span charts over a call's time or over days, and the SIP ladder.

Every chart is 1000 units wide (``viewBox``) and scales to its container. Text goes through ``escape``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from markupsafe import Markup, escape

W = 1000.0
LEFT, RIGHT = 44.0, 8.0
PLOT_W = W - LEFT - RIGHT


def _f(v: float) -> str:
    return f"{v:.1f}"


def clock(seconds: float) -> str:
    """m:ss (h:mm:ss from an hour)."""
    s = max(0, int(round(seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def nice_step(span: float, target: int = 8) -> float:
    raw = max(span, 1e-9) / target
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)


def _time_ticks(t0: float, t1: float, y: float, height: float, epoch: bool) -> list[str]:
    out = []
    if epoch:
        span = t1 - t0
        step = 3600.0 if span <= 2 * 86400 else 86400.0
        step *= max(1, math.ceil(span / step / 8))
    else:
        step = nice_step(t1 - t0)
    t = math.ceil(t0 / step) * step
    while t <= t1 + 1e-9:
        x = LEFT + (t - t0) / (t1 - t0) * PLOT_W if t1 > t0 else LEFT
        if epoch:
            d = datetime.fromtimestamp(t, UTC)
            label = d.strftime("%H:%M") if step < 86400 else d.strftime("%m-%d")
        else:
            label = clock(t)
        anchor = "end" if x > W - RIGHT - 20 else "middle"  # the last label stays inside the chart
        out.append(
            f'<line class="grid" x1="{_f(x)}" y1="0" x2="{_f(x)}" y2="{_f(height)}"/>'
            f'<text class="tick" x="{_f(x)}" y="{_f(y)}" text-anchor="{anchor}">'
            f"{escape(label)}</text>"
        )
        t += step
    return out


@dataclass
class Series:
    name: str
    points: list[tuple[float, float]] = field(default_factory=list)  # (x, y), drawn as a line with dots
    spans: list[tuple[float, float, float]] = field(default_factory=list)  # (x0, x1, y), drawn as bars
    css: str = "s0"


def line_chart(series: Sequence[Series], x0: float, x1: float, y0: float, y1: float, label: str,
               height: float = 160.0, epoch: bool = False, ref: float | None = None) -> Markup:  # fmt: skip
    """Lines (points) and horizontal spans over x in [x0, x1] (call seconds, or epoch seconds with ``epoch``);
    ``ref`` draws a dashed reference level (e.g. the low-MOS threshold)."""
    plot_h = height - 18.0
    x1 = x1 if x1 > x0 else x0 + 1.0

    def px(x: float) -> float:
        return LEFT + (min(max(x, x0), x1) - x0) / (x1 - x0) * PLOT_W

    def py(y: float) -> float:
        return plot_h - (min(max(y, y0), y1) - y0) / (y1 - y0) * (plot_h - 6.0)

    parts = [f'<svg class="chart" viewBox="0 0 {W:.0f} {height:.0f}" role="img" aria-label="{escape(label)}">',
             f"<title>{escape(label)}</title>"]  # fmt: skip
    step = nice_step(y1 - y0, 4)
    y = math.ceil(y0 / step) * step
    while y <= y1 + 1e-9:
        parts.append(
            f'<line class="grid" x1="{LEFT}" y1="{_f(py(y))}" x2="{W - RIGHT}" y2="{_f(py(y))}"/>'
            f'<text class="tick" x="{LEFT - 4}" y="{_f(py(y) + 4)}" text-anchor="end">{y:g}</text>'
        )
        y += step
    parts += _time_ticks(x0, x1, height - 4.0, plot_h, epoch)
    if ref is not None:
        parts.append(f'<line class="ref" x1="{LEFT}" y1="{_f(py(ref))}" x2="{W - RIGHT}" y2="{_f(py(ref))}"/>')
    for s in series:
        for a, b, v in s.spans:
            parts.append(f'<line class="span {s.css}" x1="{_f(px(a))}" y1="{_f(py(v))}" x2="{_f(px(b))}" '
                         f'y2="{_f(py(v))}"><title>{escape(s.name)} {v:.2f} '
                         f"({escape(_xlabel(a, epoch))}-{escape(_xlabel(b, epoch))})</title></line>")  # fmt: skip
        if s.points:
            path = " ".join(f"{'M' if i == 0 else 'L'}{_f(px(a))},{_f(py(v))}" for i, (a, v) in enumerate(s.points))
            parts.append(f'<path class="line {s.css}" d="{path}"/>')
            parts += [f'<circle class="dot {s.css}" cx="{_f(px(a))}" cy="{_f(py(v))}" r="3">'
                      f"<title>{escape(s.name)} {v:.2f} at {escape(_xlabel(a, epoch))}</title></circle>"
                      for a, v in s.points]  # fmt: skip
    parts.append("</svg>")
    return Markup("".join(parts))


def _xlabel(x: float, epoch: bool) -> str:
    return datetime.fromtimestamp(x, UTC).strftime("%Y-%m-%d %H:%M") if epoch else clock(x)


@dataclass(frozen=True)
class Band:
    """A stretch of a leg's time drawn over its waveform."""

    start_s: float
    end_s: float
    kind: str  # speech, silence, or a finding's severity (info, warning, critical)
    label: str


def waveform(envelope_dbfs: Sequence[float], duration_s: float, bands: Sequence[Band], label: str,
             height: float = 130.0, floor_dbfs: float = -60.0) -> Markup:  # fmt: skip
    """The leg's peak level per slice, mirrored around the middle (dB scale: ``floor_dbfs`` is the middle line,
    0 dBFS the edges), with speech, silences and findings drawn as bands on the same time axis. The chart
    carries its duration and plot geometry so a script can map a click to a time and draw the playhead."""
    plot_h = height - 18.0
    lane = 8.0  # speech and silence lanes under the wave
    wave_h = plot_h - 2 * lane - 4
    mid = wave_h / 2
    dur = duration_s if duration_s > 0 else 1.0

    def px(t: float) -> float:
        return LEFT + min(max(t, 0.0), dur) / dur * PLOT_W

    parts = [f'<svg class="chart wave" viewBox="0 0 {W:.0f} {height:.0f}" role="img" aria-label="{escape(label)}" '
             f'data-duration="{duration_s:.3f}" data-left="{LEFT}" data-width="{PLOT_W}">',
             f"<title>{escape(label)}</title>"]  # fmt: skip
    for b in bands:
        if b.kind in ("info", "warning", "critical"):
            parts.append(f'<rect class="band {b.kind}" x="{_f(px(b.start_s))}" y="0" '
                         f'width="{_f(max(px(b.end_s) - px(b.start_s), 2.0))}" height="{_f(plot_h)}">'
                         f"<title>{escape(b.label)}</title></rect>")  # fmt: skip
    n = len(envelope_dbfs)
    if n:
        amp = [max(0.0, min(1.0, (v - floor_dbfs) / -floor_dbfs)) for v in envelope_dbfs]
        xs = [_f(LEFT + (i + 0.5) / n * PLOT_W) for i in range(n)]
        top = [f"{x},{_f(mid - a * (mid - 1))}" for x, a in zip(xs, amp, strict=True)]
        bottom = [f"{x},{_f(mid + a * (mid - 1))}" for x, a in reversed(list(zip(xs, amp, strict=True)))]
        parts.append(f'<polygon class="env" points="{" ".join(top + bottom)}"/>')
    parts.append(f'<line class="grid" x1="{LEFT}" y1="{_f(mid)}" x2="{W - RIGHT}" y2="{_f(mid)}"/>')
    for b in bands:
        if b.kind in ("speech", "silence"):
            y = wave_h + 2 + (0 if b.kind == "speech" else lane + 2)
            parts.append(f'<rect class="band {b.kind}" x="{_f(px(b.start_s))}" y="{_f(y)}" '
                         f'width="{_f(max(px(b.end_s) - px(b.start_s), 1.0))}" height="{_f(lane)}">'
                         f"<title>{escape(b.label)}</title></rect>")  # fmt: skip
    for k, name in enumerate(("speech", "silence")):
        y = wave_h + 2 + lane + k * (lane + 2)
        parts.append(f'<text class="tick" x="{LEFT - 4}" y="{_f(y)}" text-anchor="end">{name}</text>')
    parts += _time_ticks(0.0, dur, height - 4.0, plot_h, False)
    parts.append(f'<line class="playhead" x1="{LEFT}" y1="0" x2="{LEFT}" y2="{_f(plot_h)}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))


@dataclass(frozen=True)
class Arrow:
    t: float  # seconds from the call start
    src: str  # endpoint "host:port"
    dst: str
    label: str  # "INVITE", "200 OK", ...
    detail: str = ""


def ladder(arrows: Sequence[Arrow], endpoints: Sequence[str], row_h: float = 26.0) -> Markup:
    """A SIP ladder: one vertical line per endpoint, one arrow per message, times on the left."""
    if not arrows or not endpoints:
        return Markup("")
    cols = {e: 150.0 + i * (W - 200.0) / max(len(endpoints) - 1, 1) for i, e in enumerate(endpoints)}
    height = 40.0 + row_h * len(arrows)
    parts = [f'<svg class="chart ladder" viewBox="0 0 {W:.0f} {height:.0f}" role="img" aria-label="SIP ladder">']
    for e, x in cols.items():
        parts.append(f'<text class="host" x="{_f(x)}" y="14" text-anchor="middle">{escape(e)}</text>'
                     f'<line class="lifeline" x1="{_f(x)}" y1="20" x2="{_f(x)}" y2="{_f(height)}"/>')  # fmt: skip
    for i, a in enumerate(arrows):
        y = 40.0 + i * row_h
        xa, xb = cols.get(a.src, cols[endpoints[0]]), cols.get(a.dst, cols[endpoints[-1]])
        tip = -8.0 if xb > xa else 8.0
        cls = "req" if a.label[:1].isalpha() and not a.label[:1].isdigit() else "resp"
        parts.append(f'<text class="tick" x="4" y="{_f(y + 4)}">{a.t:.3f} s</text>'
                     f'<g class="msg {cls}"><title>{escape(a.detail or a.label)}</title>'
                     f'<line x1="{_f(xa)}" y1="{_f(y)}" x2="{_f(xb)}" y2="{_f(y)}"/>'
                     f'<path d="M{_f(xb)},{_f(y)} l{_f(tip)},-4 v8 z"/>'
                     f'<text x="{_f((xa + xb) / 2)}" y="{_f(y - 4)}" text-anchor="middle">'
                     f"{escape(a.label)}</text></g>")  # fmt: skip
    parts.append("</svg>")
    return Markup("".join(parts))
