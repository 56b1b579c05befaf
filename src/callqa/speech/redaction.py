"""Redaction of transcripts (and optionally of the kept audio).

Card numbers (Luhn-checked), national ids, phone numbers and emails are found in two ways: the written forms
of ``callqa.pii`` over the utterance's words, and runs of spoken digits ("four five three nine, one 488,
zero three ...", as Whisper writes numbers read out digit by digit): a run of 13-19 digits that passes the
Luhn check is a card, a run of 7-15 digits a phone number, any longer run a number (a misheard card number
must not leak). Masked words are replaced by their label, their
time span is recorded in ``redacted``, and the same span can be replaced by a tone in the audio.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import ValidationError

from callqa.pii import digits_of, mask_text, mask_value, number_label, spans
from callqa.report import Segment, Utterance, Word

TONE_HZ = 1000.0
TONE_DBFS = -20.0


def spoken_number_runs(words: list[str]) -> list[tuple[int, int, str]]:
    """(first word, last word, label) of digit runs that form a card number or a phone number (the digit
    words and labels of :func:`callqa.pii.number_label`)."""
    out: list[tuple[int, int, str]] = []
    i = 0
    while i < len(words):
        if digits_of(words[i]) is None:
            i += 1
            continue
        j, digits = i, ""
        while j < len(words) and (d := digits_of(words[j])) is not None:
            digits += d
            j += 1
        if label := number_label(digits):
            out.append((i, j - 1, label))
        i = j
    return out


def redact_utterance(u: Utterance) -> Utterance:
    """The utterance with personal data masked in its text and words, and the masked spans in ``redacted``."""
    if not u.words:
        return u.model_copy(update={"text": mask_text(u.text)})
    joined, offsets = "", []
    for w in u.words:
        if joined:
            joined += " "
        offsets.append((len(joined), len(joined) + len(w.word)))
        joined += w.word
    runs = [(i, j, label) for i, j, label in spoken_number_runs([w.word for w in u.words])]
    for a, b, label in spans(joined):
        covered = [i for i, (s, e) in enumerate(offsets) if s < b and e > a]
        if covered:
            runs.append((covered[0], covered[-1], label))
    if not runs:
        return u.model_copy(update={"text": mask_text(u.text)})
    label_of: dict[int, str] = {}
    redacted: list[Segment] = []
    for i, j, label in sorted(runs):
        if i in label_of:
            continue  # already covered by an earlier, overlapping run
        label_of.update(dict.fromkeys(range(i, j + 1), label))
        redacted.append(Segment(start_s=u.words[i].start_s, end_s=u.words[j].end_s))
    words = [w.model_copy(update={"word": label_of[i]}) if i in label_of else w for i, w in enumerate(u.words)]
    text_words = [w.word for k, w in enumerate(words) if not (k in label_of and k - 1 in label_of
                                                              and label_of[k - 1] == label_of[k])]  # fmt: skip
    return u.model_copy(update={"text": " ".join(text_words), "words": words, "redacted": redacted})


def tone_over(samples: np.ndarray, rate: int, segments: list[Segment]) -> np.ndarray:
    """A copy of ``samples`` with each segment replaced by a 1 kHz tone at -20 dBFS."""
    out = samples.copy()
    amplitude = 10 ** (TONE_DBFS / 20) * np.sqrt(2)
    for seg in segments:
        a, b = max(0, int(seg.start_s * rate)), min(out.size, int(np.ceil(seg.end_s * rate)))
        if b > a:
            t = np.arange(b - a) / rate
            out[a:b] = (amplitude * np.sin(2 * np.pi * TONE_HZ * t)).astype(out.dtype)
    return out


TEXT_FIELDS = ("text", "words", "message")  # what a live event says; ids, legs and times are left as they are


def redact_event(event: dict[str, Any]) -> dict[str, Any]:
    """A live event (``final``/``partial`` with ``text`` and ``words``, ``rule`` with the matched ``words``)
    with personal data masked the way stored transcripts are; the service applies it before relaying, whatever
    the publisher did. Only what the event says is masked: a Call-ID that looks like an email stays usable."""
    out = {k: mask_value(v) if k in TEXT_FIELDS else v for k, v in event.items()}
    words = event.get("words")
    if isinstance(words, list) and words and all(isinstance(w, dict) and isinstance(w.get("word"), str)
                                                 for w in words):  # fmt: skip
        try:
            utt = Utterance(leg="mixed", start_s=0.0, end_s=0.0, text=str(event.get("text", "")),
                            words=[Word.model_validate(w) for w in words], confidence=1.0)  # fmt: skip
        except ValidationError:
            return out
        masked = redact_utterance(utt)
        out["text"] = masked.text
        out["words"] = [{**w, "word": m.word} for w, m in zip(words, masked.words, strict=True)]
    return out
