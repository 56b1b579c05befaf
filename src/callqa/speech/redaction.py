"""Redaction of transcripts (and optionally of the kept audio).

Card numbers (Luhn-checked), national ids, phone numbers and emails are found in two ways: the written forms
of ``callqa.pii`` over the utterance's words, and runs of spoken digits ("four five three nine, one 488,
zero three ...", as Whisper writes numbers read out digit by digit): a run of 13-19 digits that passes the
Luhn check is a card, a run of 7-15 digits a phone number, any longer run a number (a misheard card number
must not leak). Masked words are replaced by their label, their
time span is recorded in ``redacted``, and the same span can be replaced by a tone in the audio.
"""

from __future__ import annotations

import re

import numpy as np

from callqa.pii import luhn_ok, mask_text, spans
from callqa.report import Segment, Utterance

TONE_HZ = 1000.0
TONE_DBFS = -20.0
# digits as Whisper may write them when a number is read out ("for" is how it often hears a lone "four")
DIGIT_WORDS = {"zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3", "four": "4", "for": "4",
               "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9"}  # fmt: skip
_STRIP = re.compile(r"^[^\w+]+|[^\w]+$")


def _digits(word: str) -> str | None:
    """The digits a word stands for ("488," -> "488", "Zero" -> "0"), or None if it is not a number."""
    core = _STRIP.sub("", word.lower()).replace(",", "").replace("-", "")
    if core.isdigit():
        return core
    return DIGIT_WORDS.get(core)


def spoken_number_runs(words: list[str]) -> list[tuple[int, int, str]]:
    """(first word, last word, label) of digit runs that form a card number or a phone number."""
    out: list[tuple[int, int, str]] = []
    i = 0
    while i < len(words):
        if _digits(words[i]) is None:
            i += 1
            continue
        j, digits = i, ""
        while j < len(words) and (d := _digits(words[j])) is not None:
            digits += d
            j += 1
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            out.append((i, j - 1, "[CARD]"))
        elif 7 <= len(digits) <= 15:
            out.append((i, j - 1, "[PHONE]"))
        elif len(digits) > 15:  # a long number that is not a valid card (perhaps a misheard one): masked too
            out.append((i, j - 1, "[NUMBER]"))
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
