"""Live audio: follow the calls a Tracker is assembling and feed each direction's newly arrived RTP, decoded,
to a live transcriber. Called every few hundred milliseconds from the capture loop."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from callqa.capture.calls import CapturedCall, Stream, StreamKey, Tracker
from callqa.capture.media import UnsupportedCodec, decode_stream
from callqa.config import LimitSettings
from callqa.errors import LimitError

MAX_GAP_S = 2.0  # a longer pause in a direction's RTP (silence suppression, hold) is not filled with zeros


class Sink(Protocol):
    def feed(self, call_id: str, leg: str, pcm: np.ndarray, rate: int, call_time_s: float,
             arrival: float | None = None) -> None: ...  # fmt: skip

    def end_call(self, call_id: str) -> None: ...


class LiveAudio:
    def __init__(self, sink: Sink, limits: LimitSettings | None = None, max_span_s: float = 3600.0) -> None:
        self.sink = sink
        # a poll's new packets of a stream are bounded like a capture's (a forged timestamp must not make the
        # decoder allocate hours of silence); a window that breaks a bound is skipped, the next one is fed
        self.limits, self.max_span_s = limits or LimitSettings(), max_span_s
        self.refused = 0  # windows skipped because they broke a bound
        self.warnings: list[str] = []
        self.done: dict[StreamKey, int] = {}  # stream key -> packets already fed
        self.fed_until: dict[tuple[str, str], float] = {}  # (call, leg) -> call time the audio reached
        self.unsupported: set[StreamKey] = set()

    def poll(self, tracker: Tracker) -> None:
        for call in tracker.finish():
            self.poll_call(call)

    def _stream(self, call: CapturedCall, leg: str, s: Stream, call_start: float) -> None:
        key, packets = s.key, s.packets
        first, n = self.done.get(key, 0), len(packets)
        if n <= first or key in self.unsupported:
            return
        self.done[key] = n
        try:
            audio = decode_stream((packets[i] for i in range(first, n)), call.encodings.get(key, {}), self.limits,
                                  self.max_span_s)  # fmt: skip
        except LimitError as exc:
            self.refused += 1
            self._warn(f"call {call.id} {leg}: live audio skipped: {exc}")
            return
        except UnsupportedCodec:
            if not any(p.payload for p in (packets[i] for i in range(first, n)) if len(p.payload) != 4):
                return  # only events so far
            self.unsupported.add(key)
            return
        at = audio.start - call_start
        reached = self.fed_until.get((call.id, leg))
        pcm = audio.samples
        if reached is not None and 0 < at - reached <= MAX_GAP_S:
            pcm = np.concatenate([np.zeros(int((at - reached) * audio.sample_rate), np.float32), pcm])
            at = reached
        elif reached is not None and at < reached:
            at = reached  # jitter: keep the direction contiguous
        self.sink.feed(call.id, leg, pcm, audio.sample_rate, at, float(packets[n - 1].arrival))
        self.fed_until[(call.id, leg)] = at + pcm.size / audio.sample_rate

    def ended(self, call: CapturedCall) -> None:
        """A call the tracker has handed over: its open utterances are finished and its state forgotten."""
        self.poll_call(call)
        self.sink.end_call(call.id)
        for streams in call.streams.values():
            for s in streams:
                self.done.pop(s.key, None)
                self.unsupported.discard(s.key)
        for k in [k for k in self.fed_until if k[0] == call.id]:
            del self.fed_until[k]

    def poll_call(self, call: CapturedCall) -> None:
        if call.dialog is None:
            return  # RTP without SIP: no call to follow live
        start = call.dialog.started_at or call.capture_start
        followed = 0
        for leg, streams in call.streams.items():
            for s in streams:
                followed += 1
                if followed > self.limits.max_streams_per_call:  # forged SSRCs must not multiply the work
                    if s.key not in self.unsupported:
                        self.unsupported.add(s.key)
                        self._warn(f"call {call.id}: more than {self.limits.max_streams_per_call} RTP streams; "
                                   f"the others are not followed live (limits.max_streams_per_call)")  # fmt: skip
                    continue
                self._stream(call, leg, s, start)

    def _warn(self, text: str) -> None:
        if len(self.warnings) < 100:
            self.warnings.append(text)
