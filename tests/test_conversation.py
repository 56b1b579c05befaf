"""Conversation metrics on hand-made timelines where every figure can be worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from callqa.report import Utterance, Word
from callqa.speech.conversation import ConversationOptions, gaps, intersections, metrics, turns, union

RATE = 16000


def test_interval_helpers() -> None:
    assert union([(5, 6), (0, 2), (1, 3)]) == [(0, 3), (5, 6)]
    assert gaps([(1, 2), (4, 5)], 6) == [(0, 1), (2, 4), (5, 6)]
    # y starts later inside x: y interrupted (side 1); x starts later inside y: side 0
    assert intersections([(0, 10)], [(4, 6), (9, 12)]) == [(4, 6, 1), (9, 10, 1)]
    assert intersections([(5, 8)], [(0, 6)]) == [(5, 6, 0)]


def test_turns_ignore_backchannels() -> None:
    agent = [(0, 10), (20, 25)]
    customer = [(3, 3.5), (11, 18)]  # "mm-hm" inside the agent's turn is not a turn
    assert turns([agent, customer]) == [2, 1]


def test_metrics_by_hand() -> None:
    duration = 30.0
    agent = [(1.0, 9.0), (20.0, 28.0)]  # 16 s
    customer = [(8.0, 12.0), (14.0, 16.0)]  # 6 s; overlaps the agent 8-9 s (customer came in: interrupted)
    x = [np.full(int(duration * RATE), 0.1, np.float32), np.full(int(duration * RATE), 0.01, np.float32)]
    words = [Word(word=w, start_s=8.0 + i * 0.2, end_s=8.1 + i * 0.2, probability=0.9)
             for i, w in enumerate(["sorry", "can", "I", "ask", "something"])]  # fmt: skip
    transcript = [Utterance(leg="customer", start_s=8.0, end_s=9.0, text="Sorry, can I ask something",
                            words=words, confidence=0.9)]  # fmt: skip
    conv = metrics(["agent", "customer"], [agent, customer], x, [RATE, RATE], duration, transcript,
                   ConversationOptions(overtalk_min_s=0.5, window_s=10.0))  # fmt: skip
    a, c = conv.sides
    assert (a.talk_s, c.talk_s) == (16.0, 6.0)
    assert a.talk_ratio == pytest.approx(16 / 22, abs=1e-4)
    # union of speech: 1-12, 14-16, 20-28 -> silent 0-1, 12-14, 16-20, 28-30 = 1 + 2 + 4 + 2
    assert conv.non_talk_s == 9.0 and conv.longest_silence_s == 4.0 and conv.longest_silence_start_s == 16.0
    assert (conv.overtalk_count, conv.overtalk_s) == (1, 1.0)
    assert (a.interruptions, c.interruptions) == (0, 1)
    assert (a.turns, c.turns, conv.turns) == (2, 1, 3)
    assert c.words == 5 and c.words_per_minute == pytest.approx(5 / (6 / 60))
    assert a.words == 0 and a.words_per_minute == 0.0
    assert [p.start_s for p in a.loudness] == [0.0, 20.0] and a.loudness[0].dbfs == pytest.approx(-20.0, abs=0.01)
    assert c.loudness[0].dbfs == pytest.approx(-40.0, abs=0.01)


def test_short_overlaps_are_not_overtalk_and_no_transcript_means_no_wpm() -> None:
    x = [np.zeros(10 * RATE, np.float32)] * 2
    conv = metrics(["caller", "callee"], [[(0, 5)], [(4.8, 9)]], x, [RATE, RATE], 10.0, None, ConversationOptions())
    assert conv.overtalk_count == 0 and all(s.words_per_minute is None for s in conv.sides)
    assert conv.turns == 2 and conv.non_talk_s == pytest.approx(1.0)
