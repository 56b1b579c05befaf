"""Transcription per leg over the speech regions the VAD found (faster-whisper, batched).

Why not run Whisper on each whole leg: most of a call leg is the other side talking or silence, which costs
time and is where Whisper invents words ("Thank you."). Here each leg's VAD segments are grouped into clips of
at most 30 s (Whisper's window; gaps longer than ``max_gap_s`` start a new clip), clips of both legs are
decoded in batches by ``BatchedInferencePipeline`` (no conditioning on previous text, so no runaway
repetition), and segments that look like hallucinations are dropped (Whisper's own rule: no-speech
probability above 0.6 with average log-probability below -1; also any segment below ``min_avg_logprob`` or
with a compression ratio above 2.4). Clips are processed a group at a time, so memory stays bounded on long legs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from callqa import models

RATE = 16000
WHISPER_WINDOW_S = 30.0


@dataclass(frozen=True)
class TranscribeOptions:
    model: str = ""  # "" = the bundled tiny.en
    language: str = "en"
    compute_type: str = "int8"
    beam_size: int = 5
    batch_size: int = 8
    max_gap_s: float = 5.0
    pad_s: float = 0.5  # context around each clip (the VAD cuts close to the speech; Whisper likes some air)
    clips_per_group: int = 32  # bounds memory: features of at most this many 30 s clips at a time
    no_speech_prob: float = 0.6
    min_avg_logprob: float = -1.5
    max_compression_ratio: float = 2.4
    threads: int = 0


@dataclass
class Word:
    word: str
    start_s: float
    end_s: float
    probability: float


@dataclass
class Utterance:
    leg: int
    start_s: float
    end_s: float
    text: str
    words: list[Word]
    confidence: float  # exp(average log-probability of the tokens)


@dataclass
class TranscriptResult:
    utterances: list[Utterance] = field(default_factory=list)
    dropped: list[tuple[int, float, float, str]] = field(default_factory=list)  # leg, start, end, why
    clip_s: float = 0.0  # seconds of audio sent to the model


def clips(speech: list[tuple[float, float]], max_gap_s: float, max_len_s: float = WHISPER_WINDOW_S
          ) -> list[tuple[float, float]]:  # fmt: skip
    """Group speech segments into clips of at most ``max_len_s``; a longer segment is split."""
    out: list[tuple[float, float]] = []
    for a, b in speech:
        while b - a > max_len_s:  # a single segment longer than the window
            out.append((a, a + max_len_s))
            a += max_len_s
        if out and a - out[-1][1] <= max_gap_s and b - out[-1][0] <= max_len_s:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def padded(spans: list[tuple[float, float]], pad_s: float, duration_s: float) -> list[tuple[float, float]]:
    """Each clip widened by ``pad_s``, within the leg and never into its neighbours (nor past 30 s)."""
    out = []
    for k, (a, b) in enumerate(spans):
        lo = max(0.0, a - pad_s, spans[k - 1][1] if k else 0.0)
        hi = min(duration_s, b + pad_s, spans[k + 1][0] if k + 1 < len(spans) else duration_s)
        room = max(0.0, WHISPER_WINDOW_S - (b - a))
        out.append((max(lo, a - room / 2), min(hi, b + room / 2)))
    return out


def transcribe(legs16k: list[np.ndarray], speech: list[list[tuple[float, float]]],
               opts: TranscribeOptions) -> TranscriptResult:  # fmt: skip
    """Utterances of every leg (times in the leg's own timeline), ordered by start time."""
    work = []  # (leg, padded start, padded end, speech start, speech end)
    for i, segs in enumerate(speech):
        tight = clips(segs, opts.max_gap_s)
        work += [(i, *pad, *clip) for pad, clip in zip(padded(tight, opts.pad_s, legs16k[i].size / RATE), tight,
                                                       strict=True)]  # fmt: skip
    result = TranscriptResult(clip_s=sum(w[2] - w[1] for w in work))
    if not work:
        return result
    from faster_whisper import BatchedInferencePipeline

    pipeline = BatchedInferencePipeline(models.whisper(opts.model, opts.compute_type, opts.threads))
    for g in range(0, len(work), opts.clips_per_group):
        group = work[g : g + opts.clips_per_group]
        pieces, starts, pos = [], [], 0
        for leg, a, b, _, _ in group:
            x = legs16k[leg][int(a * RATE) : int(b * RATE)]
            pieces.append(x)
            starts.append(pos)
            pos += x.size
        audio = np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, np.float32)
        stamps = [{"start": s / RATE, "end": (s + p.size) / RATE} for s, p in zip(starts, pieces, strict=True)]
        segments, _ = pipeline.transcribe(
            audio, language=opts.language, clip_timestamps=stamps, vad_filter=False, word_timestamps=True,
            beam_size=opts.beam_size, batch_size=opts.batch_size, condition_on_previous_text=False,
            without_timestamps=True,
        )  # fmt: skip
        for seg in segments:
            # the clip holding the segment's middle (Whisper's 20 ms time steps can put a start just before its clip)
            middle = (float(seg.start) + float(seg.end)) / 2 * RATE
            k = max(0, int(np.searchsorted(starts, middle, side="right")) - 1)
            leg, a, _, speech_a, speech_b = group[k]
            shift = float(a - starts[k] / RATE)  # compact-audio time -> leg time
            why = _hallucination(seg, opts)
            if why:
                result.dropped.append((leg, seg.start + shift, seg.end + shift, why))
                continue
            words = [Word(w.word.strip(), _at(w.start, shift), _at(w.end, shift), round(float(w.probability), 3))
                     for w in seg.words or [] if w.word.strip()]  # fmt: skip
            text = seg.text.strip()
            if text:
                confidence = round(float(np.exp(seg.avg_logprob)), 3)
                # the words' times are tighter than the segment's (which may include the clip's padding)
                # and within the speech the VAD found (Whisper stretches a first word over leading silence)
                start = max(words[0].start_s if words else _at(seg.start, shift), round(speech_a, 3))
                end = min(words[-1].end_s if words else _at(seg.end, shift), round(speech_b, 3))
                if words:
                    words[0].start_s = min(max(words[0].start_s, start), words[0].end_s)
                    words[-1].end_s = max(min(words[-1].end_s, end), words[-1].start_s)
                result.utterances.append(Utterance(leg, start, end, text, words, confidence))
    result.utterances.sort(key=lambda u: (u.start_s, u.leg))
    return result


def _at(t: float, shift: float) -> float:
    return round(float(t) + shift, 3)


def _hallucination(seg: object, opts: TranscribeOptions) -> str:
    no_speech = float(getattr(seg, "no_speech_prob", 0.0))
    logprob = float(getattr(seg, "avg_logprob", 0.0))
    ratio = float(getattr(seg, "compression_ratio", 0.0))
    if no_speech > opts.no_speech_prob and logprob < -1.0:
        return f"probably not speech (no-speech probability {no_speech:.2f}, log-probability {logprob:.2f})"
    if logprob < opts.min_avg_logprob:
        return f"too uncertain to keep (log-probability {logprob:.2f})"
    if ratio > opts.max_compression_ratio:
        return f"repetitive output (compression ratio {ratio:.1f})"
    return ""
