"""The pages' SVG charts and plain-words findings: geometry on the time axis, and text from the network escaped."""

from __future__ import annotations

import re

from callqa.report import CallReport, Finding
from callqa.web.charts import LEFT, PLOT_W, Arrow, Band, Series, clock, ladder, line_chart, waveform
from callqa.web.views import problems

EVIL = '<img src=x onerror="alert(1)">'


def test_text_from_the_network_is_escaped() -> None:
    svg = str(ladder([Arrow(0.0, "10.0.0.1:5060", "10.0.0.2:5060", EVIL)], ["10.0.0.1:5060", "10.0.0.2:5060"]))
    assert "<img" not in svg and "&lt;img" in svg
    svg = str(waveform([-20.0] * 10, 10.0, [Band(1.0, 2.0, "warning", EVIL)], EVIL))
    assert "<img" not in svg
    assert "<img" not in str(line_chart([Series(EVIL, points=[(0.0, 1.0)])], 0, 10, 0, 5, EVIL))


def test_waveform_bands_sit_on_the_time_axis() -> None:
    svg = str(waveform([-90.0, -6.0, -90.0, -90.0], 40.0, [Band(10.0, 20.0, "speech", "s"),
                                                           Band(30.0, 40.0, "critical", "c")], "leg"))  # fmt: skip
    rects = re.findall(r'<rect class="band (\w+)" x="([\d.]+)" y="[\d.]+" width="([\d.]+)"', svg)
    got = {kind: (float(x), float(w)) for kind, x, w in rects}
    assert got["speech"] == (round(LEFT + PLOT_W / 4, 1), round(PLOT_W / 4, 1))
    assert got["critical"][0] == round(LEFT + 3 * PLOT_W / 4, 1)
    assert 'data-duration="40.000"' in svg
    assert clock(75) == "1:15" and clock(3725) == "1:02:05"


def test_problems_in_plain_words_worst_first() -> None:
    report = CallReport.model_validate({
        "id": "abcd", "created_at": "2026-01-01T00:00:00Z", "verdict": "failed", "duration_s": 60.0, "legs": [],
        "findings": [
            Finding(code="dead_air", severity="warning", start_s=15.0, end_s=28.0, message="silent").model_dump(),
            Finding(code="one_way_audio", severity="critical", leg="customer", message="customer is mute").model_dump(),
        ],
    })  # fmt: skip
    got = problems(report)
    assert [p.title for p in got] == ["One-way audio", "Dead air"]
    assert got[0].side == "customer side" and "NAT" in got[0].cause and got[0].check
    assert got[1].when == "0:15-0:28"
