"""Conversation metrics from both legs' speech segments (VAD) and, when there is one, the transcript.

Definitions (also in docs/conversation-metrics.md), chosen to match Amazon Connect Contact Lens and Google CCAI
Insights where they fit:
- talk time of a side: the total duration of its speech segments; talk ratio: its share of all talk time;
- non-talk time: call time in which no side speaks (the complement of the union of both sides' speech);
  longest silence: the longest such gap (including the start and end of the call);
- overtalk: a period of at least ``overtalk_min_s`` in which both sides speak (shorter overlaps are
  backchannels and segment-edge effects); the side whose current segment started later interrupted;
- turns: the number of maximal runs of one side's speech in the time-ordered speech of both sides (a segment
  lying wholly inside the other side's segment is a backchannel and does not take the turn);
- talk speed: recognised words / talk time in minutes;
- loudness over time: RMS over the side's speech within consecutive windows of ``window_s``, in dBFS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from callqa.report import Conversation, LoudnessPoint, Role, SideMetrics, Utterance

Interval = tuple[float, float]


@dataclass(frozen=True)
class ConversationOptions:
    overtalk_min_s: float = 0.5
    window_s: float = 5.0


def union(segments: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for a, b in sorted(segments):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def intersections(x: list[Interval], y: list[Interval]) -> list[tuple[float, float, int]]:
    """Overlaps of two sorted, disjoint interval lists; the third field is the side (0 = x, 1 = y) whose
    interval started later (the one who came in while the other was speaking)."""
    out, i, j = [], 0, 0
    while i < len(x) and j < len(y):
        a, b = max(x[i][0], y[j][0]), min(x[i][1], y[j][1])
        if a < b:
            out.append((a, b, 0 if x[i][0] > y[j][0] else 1))
        if x[i][1] < y[j][1]:
            i += 1
        else:
            j += 1
    return out


def gaps(speech: list[Interval], duration: float) -> list[Interval]:
    out, t = [], 0.0
    for a, b in speech:
        if a > t:
            out.append((t, a))
        t = max(t, b)
    if duration > t:
        out.append((t, duration))
    return out


def turns(sides: list[list[Interval]]) -> list[int]:
    """Turns per side: runs of one side in the merged, time-ordered segments, backchannels ignored."""
    events = sorted((a, b, k) for k, segs in enumerate(sides) for a, b in segs)
    counts = [0] * len(sides)
    holder, holder_end = -1, -1.0
    for _start, end, k in events:
        if k == holder:
            holder_end = max(holder_end, end)
        elif end <= holder_end:
            continue  # wholly inside the other side's speech: a backchannel
        else:
            counts[k] += 1
            holder, holder_end = k, end
    return counts


def loudness(x: np.ndarray, rate: int, speech: list[Interval], window_s: float) -> list[LoudnessPoint]:
    points = []
    n = int(np.ceil(x.size / rate / window_s)) if x.size else 0
    for w in range(n):
        lo, hi = w * window_s, (w + 1) * window_s
        parts = [x[int(max(a, lo) * rate) : int(min(b, hi) * rate)] for a, b in speech if a < hi and b > lo]
        parts = [p for p in parts if p.size]
        if parts:
            rms = float(np.sqrt(np.mean(np.concatenate(parts).astype(np.float64) ** 2)))
            points.append(LoudnessPoint(start_s=lo, dbfs=round(20 * np.log10(max(rms, 1e-10)), 2)))
    return points


def metrics(
    roles: list[Role],
    speech: list[list[Interval]],
    samples: list[np.ndarray],
    rates: list[int],
    duration_s: float,
    transcript: list[Utterance] | None,
    opts: ConversationOptions,
) -> Conversation:
    talk = [sum(b - a for a, b in segs) for segs in speech]
    total_talk = sum(talk)
    merged = union([seg for segs in speech for seg in segs])
    silences = gaps(merged, duration_s)
    longest = max(silences, key=lambda g: g[1] - g[0], default=None)
    interruptions = [0] * len(roles)
    overtalk: list[tuple[float, float, int]] = []
    if len(speech) == 2:
        overtalk = [o for o in intersections(union(speech[0]), union(speech[1])) if o[1] - o[0] >= opts.overtalk_min_s]
        for _, _, who in overtalk:
            interruptions[who] += 1
    side_turns = turns(speech)
    words = [sum(len(u.words) or len(u.text.split()) for u in transcript or [] if u.leg == role) for role in roles]
    sides = [
        SideMetrics(
            leg=role, talk_s=round(talk[k], 3), talk_ratio=round(talk[k] / total_talk, 4) if total_talk else 0.0,
            words=words[k],
            words_per_minute=round(words[k] / (talk[k] / 60), 1) if transcript is not None and talk[k] > 0 else None,
            turns=side_turns[k], interruptions=interruptions[k],
            loudness=loudness(samples[k], rates[k], speech[k], opts.window_s),
        )
        for k, role in enumerate(roles)
    ]  # fmt: skip
    non_talk = sum(b - a for a, b in silences)
    return Conversation(
        duration_s=round(duration_s, 3), sides=sides, non_talk_s=round(non_talk, 3),
        non_talk_ratio=round(non_talk / duration_s, 4) if duration_s else 0.0,
        longest_silence_s=round(longest[1] - longest[0], 3) if longest else 0.0,
        longest_silence_start_s=round(longest[0], 3) if longest else None,
        overtalk_count=len(overtalk), overtalk_s=round(sum(b - a for a, b, _ in overtalk), 3),
        turns=sum(side_turns),
    )  # fmt: skip
