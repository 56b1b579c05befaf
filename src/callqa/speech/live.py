"""Live transcription: each direction's audio is fed as it arrives; utterances are cut by a streaming VAD and
transcribed as soon as they end; partial and final segments and rule events are published as dicts.

Per direction, Silero VAD (the same ONNX model as offline) runs frame by frame (32 ms at 16 kHz) with its LSTM
state carried across chunks. An utterance ends after ``vad.min_silence_s`` of silence (or at ``max_utterance_s``); its
audio is complete earlier, once the padding of silence follows it, so it is queued after ``speculate_after_s`` of
silence and published when the end is certain (dropped if the speaker goes on). The transcription worker takes
every queued utterance at once and decodes them in one batch with the offline code (``speech.transcribe``), so the
calculations stay in one place; each utterance (with its context) has Whisper windows of its own, so its text
does not depend on which others were queued with it. While an utterance goes on, a partial transcript of it is
made every ``partial_every_s`` when the worker is idle. A direction's finals are published in order; the two
directions are separate streams, so a final of one may come before an earlier-starting final of the other (order by
``start_s`` to show a dialogue). Events:

    {"type": "final" | "partial", "call_id", "leg", "start_s", "end_s", "text", "words": [...], "latency_s"}
    {"type": "rule", "call_id", "leg", "rule", "words", "start_s", "end_s", "severity"}   (forbidden phrases)
    {"type": "call_end", "call_id"}

``latency_s`` of a final is the time from the arrival of the utterance's last audio to its publication.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, get_args

import numpy as np

from callqa.audio.resample import resample
from callqa.quality.vad import FRAME, StreamingVad, VadOptions
from callqa.report import Role
from callqa.report import Utterance as ReportUtterance
from callqa.report import Word as ReportWord
from callqa.speech import rules as phrase_rules
from callqa.speech import transcribe
from callqa.speech.redaction import redact_utterance
from callqa.speech.rules import RuleSet

RATE = 16000

Publish = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class LiveOptions:
    # the offline VAD's rules with streaming values: an utterance ends after 0.5 s of silence, padded by 0.2 s
    vad: VadOptions = VadOptions(threshold=0.5, min_speech_ms=250, min_silence_ms=500, speech_pad_ms=200)
    max_utterance_s: float = 25.0
    context_s: float = 8.0  # the direction's previous utterance is decoded before a short one, as context
    # utterances up to this long get that context (with 8 s of it, one window still holds them): decoded alone, a
    # 5.6 s sentence of the example call lost "send an engineer" ("bend and end in here"), with it it did not
    context_below_s: float = 20.0
    vad_step_frames: int = 4  # the VAD runs every 4 frames (128 ms) per direction
    max_batch: int = 8  # utterances decoded together (larger batches: more throughput, longer waits)
    partial_every_s: float = 1.5  # 0 turns partials off; partials are made only while the worker is idle
    # greedy decoding: live favours latency (the report made when the call ends uses the offline beam of 5)
    # an utterance shares its Whisper window with its context, so a segment's confidence mixes them: the check
    # is made per utterance, on its words' mean probability, instead (another language scores about 0.4)
    transcribe: transcribe.TranscribeOptions = transcribe.TranscribeOptions(
        beam_size=2, no_repeat_ngram_size=3, min_avg_logprob=-10.0, batch_size=8
    )
    # an utterance's audio is complete once ``vad.pad_s`` of silence follows it: it is decoded early, after
    # ``speculate_after_s`` of silence, while the rest of ``vad.min_silence_s`` is awaited, and published only if
    # the speaker has not gone on meanwhile (shorter pauses would waste decodes on utterances that go on)
    speculate_after_s: float = 0.3  # 0 turns early decoding off; at least pad_s (the audio must be complete)
    min_word_probability: float = 0.5
    redact: bool = True


@dataclass
class Direction:
    call_id: str
    leg: str
    vad: StreamingVad
    start_s: float = 0.0  # call time of the first sample fed
    audio: list[np.ndarray] = field(default_factory=list)  # 16 kHz, from ``kept_from``
    kept_from: int = 0  # sample index (from start_s) of audio[0]
    fed: int = 0  # samples fed so far
    speech_from: int | None = None  # sample where the current utterance began
    silence: int = 0  # samples of silence since the last speech frame
    last_partial: int = 0
    previous: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # last final's audio (context)
    early: Job | None = None  # the utterance being decoded before its end is certain
    arrivals: list[tuple[int, float]] = field(default_factory=list)  # (sample index, wall-clock arrival)

    def samples(self, a: int, b: int) -> np.ndarray:
        x = np.concatenate(self.audio) if len(self.audio) > 1 else (self.audio[0] if self.audio else np.zeros(0))
        self.audio = [x]
        return x[max(0, a - self.kept_from) : max(0, b - self.kept_from)]

    def arrival_of(self, sample: int) -> float:
        return next((t for i, t in self.arrivals if i >= sample), self.arrivals[-1][1] if self.arrivals else 0.0)


@dataclass
class Job:
    direction: Direction
    a: int
    b: int
    final: bool
    ended_at: float  # wall clock: arrival of the utterance's last audio
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # taken by _queue
    context: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # the direction's last utterance
    # an early final: "waiting" for its end to be certain, then "confirmed" (published) or "cancelled"
    status: str = "confirmed"
    outputs: list[tuple[dict[str, Any], ReportUtterance]] | None = None  # decoded, not yet published


class LiveTranscriber:
    def __init__(self, publish: Publish, options: LiveOptions = LiveOptions(), rules: RuleSet | None = None):
        self._publish, self.opts = publish, options
        self._publish_lock = threading.Lock()  # events come from the worker and, for early finals, the feeder
        # only forbidden phrases can be judged while the call goes on (required ones need the whole call)
        forbidden = [r for r in rules.rules if r.type == "forbidden"] if rules is not None else []
        self.forbidden = RuleSet(rules=forbidden) if forbidden else None
        self.directions: dict[tuple[str, str], Direction] = {}
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self.lock = threading.Lock()
        self.busy = False  # the worker is decoding: a partial now would delay the finals that come meanwhile
        self.worker = threading.Thread(target=self._work, name="live-transcriber", daemon=True)
        self.worker.start()

    # --- audio in -------------------------------------------------------------------------------------

    def feed(self, call_id: str, leg: str, pcm: np.ndarray, rate: int, call_time_s: float,
             arrival: float | None = None) -> None:  # fmt: skip
        """``pcm`` (mono float) of one direction; ``call_time_s`` is the call time of its first sample."""
        arrival = time.time() if arrival is None else arrival
        x = resample(np.asarray(pcm, np.float32), rate, RATE) if rate != RATE else np.asarray(pcm, np.float32)
        with self.lock:
            d = self.directions.get((call_id, leg))
            if d is None:
                vad = StreamingVad(self.opts.vad_step_frames)
                d = self.directions[(call_id, leg)] = Direction(call_id, leg, vad, call_time_s)
            d.audio.append(x)
            d.arrivals.append((d.fed + x.size, arrival))
            first_frame = (d.fed - d.vad.pending.size) // FRAME
            d.fed += x.size
            probs = d.vad.feed(x)
            for k, p in enumerate(probs):
                self._frame(d, (first_frame + k) * FRAME, float(p), arrival)

    def _frame(self, d: Direction, at: int, p: float, arrival: float) -> None:
        o = self.opts
        if p >= o.vad.threshold:
            if d.speech_from is None:
                d.speech_from = max(d.kept_from, at - int(o.vad.pad_s * RATE))
                d.last_partial = at
            elif d.early is not None:  # the speaker went on: the early final was not the end
                d.early.status, d.early = "cancelled", None
            d.silence = 0
        elif d.speech_from is not None:
            d.silence += FRAME
        if d.speech_from is None:
            self._trim(d, at)
            return
        end = at + FRAME
        too_long = end - d.speech_from >= o.max_utterance_s * RATE
        speech_end = end - d.silence + int(o.vad.pad_s * RATE)
        long_enough = speech_end - d.speech_from - int(2 * o.vad.pad_s * RATE) >= o.vad.min_speech_s * RATE
        if d.silence >= o.vad.min_silence_s * RATE or too_long:
            if long_enough:
                b = min(speech_end, end)
                self._final(d, Job(d, d.speech_from, b, True, d.arrival_of(end - d.silence)))
            d.speech_from = None if not too_long else end
            d.silence = 0
            self._trim(d, end)
        elif (o.speculate_after_s and d.early is None and long_enough
              and d.silence >= max(o.speculate_after_s, o.vad.pad_s) * RATE):  # fmt: skip
            early = Job(d, d.speech_from, speech_end, True, d.arrival_of(end - d.silence), status="waiting")
            d.early = early
            self._queue(d, early)
        elif (o.partial_every_s and end - d.last_partial >= o.partial_every_s * RATE and not self.busy
              and self.jobs.empty()):  # fmt: skip
            d.last_partial = end
            self._queue(d, Job(d, d.speech_from, end, False, arrival))

    def _final(self, d: Direction, job: Job) -> None:
        """An utterance has ended: confirm its early final when that covered the same audio, else queue it."""
        early, d.early = d.early, None
        if early is not None and (early.a, early.b) == (job.a, job.b):
            self._remember(d, early)
            early.status = "confirmed"
            if early.outputs is not None:  # already decoded: publish now
                self._deliver(early)
            return
        if early is not None:
            early.status = "cancelled"
        self._queue(d, job)

    def _queue(self, d: Direction, job: Job) -> None:
        if not job.audio.size:
            job.audio = d.samples(job.a, job.b)
        if job.audio.size < self.opts.context_below_s * RATE:
            job.context = d.previous
        if job.final and job.status == "confirmed":
            self._remember(d, job)
        self.jobs.put(job)

    def _remember(self, d: Direction, final: Job) -> None:
        """A final's audio becomes the context for the direction's next short utterance."""
        d.previous = final.audio[-int(self.opts.context_s * RATE) :].copy()

    def _trim(self, d: Direction, keep_from: int) -> None:
        """Forget audio before ``keep_from`` less the padding (bounded memory between utterances)."""
        keep_from -= int(self.opts.vad.pad_s * RATE)
        if keep_from - d.kept_from > RATE:  # in steps of a second, to keep copying cheap
            x = d.samples(keep_from, d.fed)
            d.audio, d.kept_from = [x], keep_from
            d.arrivals = [(i, t) for i, t in d.arrivals if i >= keep_from] or d.arrivals[-1:]

    def end_call(self, call_id: str) -> None:
        """The call is over: cut the open utterances, then say so on the feed."""
        with self.lock:
            for key in [k for k in self.directions if k[0] == call_id]:
                d = self.directions.pop(key)
                if d.speech_from is not None and d.fed - d.speech_from >= self.opts.vad.min_speech_s * RATE:
                    self._final(d, Job(d, d.speech_from, d.fed, True, d.arrival_of(d.fed)))
                elif d.early is not None:
                    d.early.status = "cancelled"
        self.jobs.put(Job(Direction(call_id, "", None), 0, 0, True, 0.0))  # type: ignore[arg-type]

    def close(self, timeout_s: float = 30.0) -> None:
        self.jobs.put(None)
        self.worker.join(timeout_s)

    # --- transcription --------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            batch = [job]
            while len(batch) < self.opts.max_batch:
                try:
                    batch.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
            stop = None in batch
            with self.lock:
                todo = [j for j in batch if j is not None and j.status != "cancelled"]
            # a partial is stale when the same utterance's final is already waiting
            finals = {(id(j.direction), j.a) for j in todo if j.final}
            todo = [j for j in todo if j.final or (id(j.direction), j.a) not in finals]
            try:
                self.busy = True
                self._run(todo)
            except Exception as exc:  # noqa: BLE001 - the capture must go on whatever the model does
                self.publish({"type": "error", "message": f"live transcription failed: {exc}"})
            finally:
                self.busy = False
            if stop:
                return

    def _run(self, jobs: list[Job]) -> None:
        """Every queued utterance (after its context) on a track of its own, so each is decoded in its own Whisper
        window(s) and its words depend on its audio alone, never on what else happened to be queued with it (the
        windows of all of them are still decoded in batches). Utterances packed into shared windows took part of
        their text from their neighbours, so a transcript changed with timing and load."""
        gap = np.zeros(int(self.opts.transcribe.gap_s * RATE), np.float32)
        tracks: list[np.ndarray] = []
        spans: list[list[tuple[float, float]]] = []
        bounds: list[tuple[float, float]] = []
        for j in jobs:
            parts: list[np.ndarray] = []
            mine: list[tuple[float, float]] = []
            pos = 0
            if j.context.size and j.audio.size:
                parts += [j.context, gap]
                mine.append((0.0, j.context.size / RATE))
                pos = j.context.size + gap.size
            bounds.append((pos / RATE, (pos + j.audio.size) / RATE))
            if j.audio.size:
                mine.append(bounds[-1])
            tracks.append(np.concatenate([*parts, j.audio]).astype(np.float32, copy=False))
            spans.append(mine)
        result = transcribe.transcribe(tracks, spans, self.opts.transcribe) if any(spans) else None
        heard: dict[int, list[transcribe.Word]] = {}
        for u in result.utterances if result else []:
            heard.setdefault(u.leg, []).extend(u.words)
        for k, j in enumerate(jobs):
            d = j.direction
            if d.vad is None:  # the end-of-call marker, after that call's last utterances
                self.publish({"type": "call_end", "call_id": d.call_id})
                continue
            a0, a1 = bounds[k]
            words = [w for w in heard.get(k, []) if a0 - 0.15 <= w.start_s < a1]  # not the context's words
            outputs = self._outputs(j, words, d.start_s + j.a / RATE - a0)
            with self.lock:
                j.outputs = outputs
                if j.status != "confirmed":  # an early final waits for its end to be certain, or was dropped
                    continue
            self._deliver(j)

    def _outputs(
        self, j: Job, mine: list[transcribe.Word], offset: float
    ) -> list[tuple[dict[str, Any], ReportUtterance]]:
        """The event (and utterance) for a decoded job; ``mine`` are its words (the context's words were only
        there to help), ``offset`` turns track time into call time."""
        d = j.direction
        if mine and float(np.mean([w.probability for w in mine])) < self.opts.min_word_probability:
            mine = []  # too uncertain to publish
        words = [ReportWord(word=w.word, start_s=round(offset + w.start_s, 3), end_s=round(offset + w.end_s, 3),
                            probability=w.probability) for w in mine]  # fmt: skip
        text = " ".join(w.word for w in words)
        if not text:
            return []  # nothing recognisable: no empty final or partial
        utt = ReportUtterance(leg=d.leg if d.leg in _ROLES else "mixed", start_s=round(d.start_s + j.a / RATE, 3),
                              end_s=round(d.start_s + j.b / RATE, 3), text=text, words=words,
                              confidence=1.0)  # type: ignore[arg-type]  # fmt: skip
        if self.opts.redact:
            utt = redact_utterance(utt)
        event = {"type": "final" if j.final else "partial", "call_id": d.call_id, "leg": d.leg,
                 "start_s": utt.start_s, "end_s": utt.end_s, "text": utt.text,
                 "words": [w.model_dump() for w in utt.words]}  # fmt: skip
        return [(event, utt)]

    def _deliver(self, j: Job) -> None:
        """Publish a decoded job's events (with their latency now) and the live rule events of a final."""
        for event, utt in j.outputs or []:
            self.publish({**event, "latency_s": round(time.time() - j.ended_at, 3)})
            if j.final and self.forbidden is not None:
                self._rules(j.direction, utt)

    def publish(self, event: dict[str, Any]) -> None:
        with self._publish_lock:
            self._publish(event)

    def _rules(self, d: Direction, utt: ReportUtterance) -> None:
        """Forbidden phrases in a final segment, found by the same rule code as the report's findings."""
        assert self.forbidden is not None
        findings, _ = phrase_rules.apply(self.forbidden, [utt], [utt.leg])
        for f in findings:
            self.publish({"type": "rule", "call_id": d.call_id, "leg": d.leg, "rule": f.evidence["rule"],
                          "words": f.evidence["words"], "start_s": f.start_s, "end_s": f.end_s,
                          "severity": f.severity})  # fmt: skip


_ROLES = set(get_args(Role))
