"""Transcription per leg over the speech the VAD found (faster-whisper, batched).

Why not run Whisper on each whole leg: most of a call leg is the other side talking or silence, which costs
time and is where Whisper invents words ("Thank you."). Here each leg's VAD segments, widened by ``pad_s`` of
context, are packed into windows of at most 30 s (Whisper's window) with ``gap_s`` of silence between pieces,
like faster-whisper's own VAD filter does; the windows of both legs are decoded in batches by
``BatchedInferencePipeline`` (no conditioning on previous text, so no runaway repetition), and every word is
mapped back to its place on the leg's timeline. Segments that look like hallucinations are dropped (Whisper's
own rule: no-speech probability above 0.6 with average log-probability below -1; also any segment below
``min_avg_logprob``, and the text of any piece whose compression ratio is above 2.4: a repetition loop).
Windows are processed a group at a time, so memory stays bounded on long legs.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from callqa import model_loaders

RATE = 16000
WHISPER_WINDOW_S = 30.0
Span = tuple[float, float]


@dataclass(frozen=True)
class TranscribeOptions:
    model: str = ""  # "" = the bundled tiny.en
    language: str = "en"
    compute_type: str = "int8"
    beam_size: int = 5
    no_repeat_ngram_size: int = 0  # >0 forbids repeating n-grams (guards greedy decoding against loops)
    # windows encoded together; on a 3-minute call with tiny.en, 8 took 2.8 s and 400 MB above the loaded
    # model, 4 took 3.1 s and 290 MB, 2 took 3.7 s and 170 MB (the encoder's attention grows with the batch)
    batch_size: int = 4
    pad_s: float = 0.4  # context around each speech segment (the VAD cuts close; Whisper likes some air)
    gap_s: float = 0.6  # silence between two pieces packed into one window
    windows_per_group: int = 16  # bounds memory: features of at most this many windows at a time
    no_speech_prob: float = 0.6
    min_avg_logprob: float = -0.7  # confidence 0.5: read speech scores 0.7-0.95, other languages ~0.4
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
    audio_s: float = 0.0  # seconds of speech (with context) sent to the model


@dataclass
class Window:
    """Pieces of one leg packed into one Whisper window: (start in the window, start on the leg, length)."""

    leg: int
    pieces: list[tuple[float, float, float]]

    @property
    def length_s(self) -> float:
        return self.pieces[-1][0] + self.pieces[-1][2] if self.pieces else 0.0

    def piece_at(self, t: float) -> int:
        """The piece holding window time ``t`` (a time in a gap belongs to the nearer piece)."""
        for k, (w0, _, n) in enumerate(self.pieces):
            nxt = self.pieces[k + 1][0] if k + 1 < len(self.pieces) else float("inf")
            if t < (w0 + n + nxt) / 2:
                return k
        return len(self.pieces) - 1

    def to_leg(self, t: float, k: int) -> float:
        w0, l0, n = self.pieces[k]
        return round(l0 + min(max(t - w0, 0.0), n), 3)


def pieces(speech: list[Span], pad_s: float, duration_s: float) -> list[Span]:
    """Speech segments widened by ``pad_s`` (within the leg), merged where they touch, split at 30 s."""
    out: list[Span] = []
    for a, b in speech:
        a, b = max(0.0, a - pad_s), min(duration_s, b + pad_s)
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    split: list[Span] = []
    for a, b in out:
        while b - a > WHISPER_WINDOW_S:
            split.append((a, a + WHISPER_WINDOW_S))
            a += WHISPER_WINDOW_S
        split.append((a, b))
    return split


def pack(leg: int, spans: list[Span], gap_s: float) -> list[Window]:
    """Pieces into windows of at most 30 s, in time order, ``gap_s`` of silence between pieces."""
    windows: list[Window] = []
    current = Window(leg, [])
    for a, b in spans:
        start = current.length_s + gap_s if current.pieces else 0.0
        if current.pieces and start + (b - a) > WHISPER_WINDOW_S:
            windows.append(current)
            current, start = Window(leg, []), 0.0
        current.pieces.append((start, a, b - a))
    if current.pieces:
        windows.append(current)
    return windows


def _window_audio(x: np.ndarray, w: Window) -> np.ndarray:
    out = np.zeros(min(int(np.ceil(w.length_s * RATE)), int(WHISPER_WINDOW_S * RATE)), np.float32)
    for w0, l0, n in w.pieces:
        piece = x[int(l0 * RATE) : int(l0 * RATE) + int(n * RATE)]
        piece = piece[: max(0, out.size - int(w0 * RATE))]
        out[int(w0 * RATE) : int(w0 * RATE) + piece.size] = piece
    return out


def transcribe(legs16k: list[np.ndarray], speech: list[list[Span]], opts: TranscribeOptions) -> TranscriptResult:
    """Utterances of every leg (times on the leg's own timeline), ordered by start time."""
    windows = [w for i, segs in enumerate(speech)
               for w in pack(i, pieces(segs, opts.pad_s, legs16k[i].size / RATE), opts.gap_s)]  # fmt: skip
    result = TranscriptResult(audio_s=sum(n for w in windows for _, _, n in w.pieces))
    if not windows:
        return result
    from faster_whisper import BatchedInferencePipeline

    pipeline = BatchedInferencePipeline(model_loaders.whisper(opts.model, opts.compute_type, opts.threads))
    for g in range(0, len(windows), opts.windows_per_group):
        group = windows[g : g + opts.windows_per_group]
        audios = [_window_audio(legs16k[w.leg], w) for w in group]
        starts = np.cumsum([0] + [a.size for a in audios[:-1]])
        stamps = [{"start": s / RATE, "end": (s + a.size) / RATE} for s, a in zip(starts, audios, strict=True)]
        segments, _ = pipeline.transcribe(
            np.concatenate(audios), language=opts.language, clip_timestamps=stamps, vad_filter=False,
            word_timestamps=True, beam_size=opts.beam_size, batch_size=opts.batch_size,
            no_repeat_ngram_size=opts.no_repeat_ngram_size,
            condition_on_previous_text=False, without_timestamps=True,
        )  # fmt: skip
        for seg in segments:
            middle = (float(seg.start) + float(seg.end)) / 2 * RATE
            k = max(0, int(np.searchsorted(starts, middle, side="right")) - 1)
            window, offset = group[k], starts[k] / RATE
            why = _hallucination(seg, opts)
            if why:
                p = window.piece_at(float(seg.start) - offset)
                at = window.to_leg(float(seg.start) - offset, p)
                result.dropped.append((window.leg, at, window.to_leg(float(seg.end) - offset, p), why))
                continue
            confidence = round(float(np.exp(seg.avg_logprob)), 3)
            for u in _split(window, offset, seg, confidence):
                # a repetition loop shows within one piece of speech (a segment may span several pieces,
                # whose texts may rightly repeat each other)
                ratio = compression_ratio(u.text)
                if ratio > opts.max_compression_ratio:
                    result.dropped.append((u.leg, u.start_s, u.end_s, f"repetitive output (compression ratio "
                                                                      f"{ratio:.1f})"))  # fmt: skip
                else:
                    result.utterances.append(u)
    result.utterances.sort(key=lambda u: (u.start_s, u.leg))
    return result


def _split(window: Window, offset: float, seg: object, confidence: float) -> list[Utterance]:
    """One Whisper segment as utterances on the leg's timeline: one per packed piece its words fall in (a
    segment may run across the silence that was cut out between two pieces)."""
    by_piece: dict[int, list[Word]] = {}
    for w in getattr(seg, "words", None) or []:
        text = w.word.strip()
        if not text:
            continue
        t0, t1 = float(w.start) - offset, float(w.end) - offset
        k = window.piece_at((t0 + t1) / 2)
        by_piece.setdefault(k, []).append(Word(text, window.to_leg(t0, k), window.to_leg(t1, k),
                                               round(float(w.probability), 3)))  # fmt: skip
    if not by_piece:  # no word timestamps: the segment as a whole
        t0, t1 = float(getattr(seg, "start", 0.0)) - offset, float(getattr(seg, "end", 0.0)) - offset
        k = window.piece_at(t0)
        text = str(getattr(seg, "text", "")).strip()
        return [Utterance(window.leg, window.to_leg(t0, k), window.to_leg(t1, k), text, [], confidence)] if text else []
    return [Utterance(window.leg, words[0].start_s, words[-1].end_s, " ".join(w.word for w in words), words,
                      confidence) for _, words in sorted(by_piece.items())]  # fmt: skip


def _hallucination(seg: object, opts: TranscribeOptions) -> str:
    no_speech = float(getattr(seg, "no_speech_prob", 0.0))
    logprob = float(getattr(seg, "avg_logprob", 0.0))
    if no_speech > opts.no_speech_prob and logprob < -1.0:
        return f"probably not speech (no-speech probability {no_speech:.2f}, log-probability {logprob:.2f})"
    if logprob < opts.min_avg_logprob:
        return f"too uncertain to keep (log-probability {logprob:.2f})"
    return ""


def compression_ratio(text: str) -> float:
    """Whisper's repetition measure: bytes of text / bytes of its zlib compression."""
    data = text.encode()
    return len(data) / len(zlib.compress(data)) if data else 0.0
