"""Redaction of transcripts (and optionally of the kept audio): card numbers (Luhn-checked), national ids,
phone numbers and emails are replaced by their label; the words they cover are masked and their time span is
recorded, so the same span can be replaced by a tone in the audio."""

from __future__ import annotations

import numpy as np

from callqa.redact import mask_text, spans
from callqa.report import Segment, Utterance

TONE_HZ = 1000.0
TONE_DBFS = -20.0


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
    found = spans(joined)
    if not found:
        return u.model_copy(update={"text": mask_text(u.text)})
    label_of: dict[int, str] = {}
    redacted: list[Segment] = []
    for a, b, label in found:
        covered = [i for i, (s, e) in enumerate(offsets) if s < b and e > a]
        label_of.update(dict.fromkeys(covered, label))
        if covered:
            redacted.append(Segment(start_s=u.words[covered[0]].start_s, end_s=u.words[covered[-1]].end_s))
    words = [w.model_copy(update={"word": label_of[i]}) if i in label_of else w for i, w in enumerate(u.words)]
    return u.model_copy(update={"text": mask_text(u.text), "words": words, "redacted": redacted})


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
