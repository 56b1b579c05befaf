"""Live transcription: streaming VAD parity, utterances as they end, events over WebSocket, RTP followed live."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import jiwer
import numpy as np
import pytest
from conftest import EXAMPLE_TURNS
from fastapi import WebSocketDisconnect
from fastapi.testclient import TestClient
from sniffing import lines_until, wait_listening

from callqa import model_loaders
from callqa.api.keys import KeyStore
from callqa.api.main import create_app
from callqa.audio.decode import decode_file
from callqa.audio.resample import resample
from callqa.capture.calls import Tracker, read_capture
from callqa.capture.live_audio import LiveAudio
from callqa.capture.media import decode_stream
from callqa.config import AnalysisSettings, Settings
from callqa.protocol.pcap import CaptureFile
from callqa.quality.vad import FRAME, StreamingVad
from callqa.speech.live import LiveOptions, LiveTranscriber
from callqa.speech.rules import RuleSet
from callqa.store import Store

REPO = Path(__file__).resolve().parents[1]
SCRIPT = EXAMPLE_TURNS  # (start second, speaker, text) of the bundled example call


def test_streaming_vad_equals_the_batched_model_on_any_chunking() -> None:
    x = resample(decode_file(REPO / "examples/call-agent.wav", 3600).samples[0], 8000, 16000)
    x = x[: x.size // FRAME * FRAME]
    whole = np.asarray(model_loaders.silero_vad()(x)).reshape(-1)
    vad, probs, rng, i = StreamingVad(), [], np.random.default_rng(1), 0
    while i < x.size:
        n = int(rng.integers(1, 3000))
        probs.append(vad.feed(x[i : i + n]))
        i += n
    streamed = np.concatenate(probs)
    assert streamed.size == whole.size
    assert np.max(np.abs(streamed - whole)) < 1e-4


def test_example_call_transcribed_live_with_rule_events() -> None:
    events: list[dict] = []
    done = threading.Event()

    def publish(event: dict) -> None:
        events.append(event)
        if event["type"] == "call_end":
            done.set()

    rules = RuleSet.model_validate({"rules": [{"name": "no_promises", "type": "forbidden",
                                               "phrases": ["an engineer"], "leg": "agent"}]})  # fmt: skip
    live = LiveTranscriber(publish, rules=rules)
    legs = {who: decode_file(REPO / f"examples/call-{who}.wav", 3600).samples[0] for who in ("agent", "customer")}
    chunk = 160  # 20 ms at 8 kHz, as RTP delivers it, both directions interleaved
    for i in range(0, legs["agent"].size, chunk):
        for who, x in legs.items():
            live.feed("call-1", who, x[i : i + chunk], 8000, i / 8000)
        if i % (chunk * 50) == 0:
            time.sleep(0.01)  # let the worker run now and then (faster than real time overall)
    live.end_call("call-1")
    assert done.wait(300)
    live.close(timeout_s=300)
    published = [e for e in events if e["type"] == "final"]
    for leg in ("agent", "customer"):  # in order within a direction; across directions, by start time
        starts = [e["start_s"] for e in published if e["leg"] == leg]
        assert starts == sorted(starts)
    finals = sorted(published, key=lambda e: e["start_s"])
    assert [e["leg"] for e in finals] == [who for _, who, _ in SCRIPT]
    for e, (t, _, text) in zip(finals, SCRIPT, strict=True):
        assert abs(e["start_s"] - t) < 0.6, (e["start_s"], t)
        assert jiwer.wer(text.lower(), e["text"].lower()) < 0.5, e["text"]
        assert e["words"] and e["latency_s"] >= 0
    assert any(e["type"] == "partial" for e in events)
    [rule] = [e for e in events if e["type"] == "rule"]
    assert rule["rule"] == "no_promises" and rule["leg"] == "agent" and 33 < rule["start_s"] < 37
    assert events[-1] == {"type": "call_end", "call_id": "call-1"}


def _finals(together: bool) -> list[tuple[str, float, str]]:
    """The example call's finals, its utterances decoded one at a time (the worker idle whenever one is queued) or
    queued up and decoded in batches (the worker held up, as when it falls behind under load)."""
    legs = {who: decode_file(REPO / f"examples/call-{who}.wav", 3600).samples[0] for who in ("agent", "customer")}
    events: list[dict] = []
    live = LiveTranscriber(events.append, LiveOptions(partial_every_s=0))
    gate, run = threading.Event(), live._run

    def held(jobs):  # type: ignore[no-untyped-def]
        assert gate.wait(300)
        run(jobs)

    live._run = held  # type: ignore[method-assign]
    if not together:
        gate.set()
    for i in range(0, legs["agent"].size, 160):
        for who, x in legs.items():
            live.feed("call-1", who, x[i : i + 160], 8000, i / 8000)
        deadline = time.monotonic() + 300
        while not together and (live.busy or not live.jobs.empty()) and time.monotonic() < deadline:
            time.sleep(0.005)
    live.end_call("call-1")
    gate.set()
    live.close(timeout_s=300)
    assert not live.worker.is_alive()
    return sorted((e["leg"], e["start_s"], e["text"]) for e in events if e["type"] == "final")


def test_a_final_does_not_depend_on_what_is_decoded_with_it() -> None:
    alone, batched = _finals(together=False), _finals(together=True)
    assert len(alone) == len(SCRIPT) and batched == alone


class Recorder:
    def __init__(self) -> None:
        self.audio: dict[tuple[str, str], list[np.ndarray]] = {}
        self.starts: dict[tuple[str, str], float] = {}
        self.ended: list[str] = []

    def feed(self, call_id, leg, pcm, rate, call_time_s, arrival=None) -> None:  # type: ignore[no-untyped-def]
        self.audio.setdefault((call_id, leg), []).append(pcm)
        self.starts.setdefault((call_id, leg), call_time_s)

    def end_call(self, call_id: str) -> None:
        self.ended.append(call_id)


def test_rtp_is_followed_live_as_it_arrives(tmp_path: Path) -> None:
    """The capture fed frame by frame, polled as it goes: each direction's audio reaches the transcriber in
    pieces that add up to the whole stream decoded offline."""
    import captures

    first = captures.Call("f-1", callee_frames=captures.speech_frames(4), caller_frames=captures.silence(3), seed=1)
    second = captures.Call("f-2", start=first.start + 6, codec="PCMA", seed=2,
                           callee_frames=captures.speech_frames(3, "PCMA"), caller_frames=captures.silence(3, "PCMA"),
                           caller_options={"drop": {20, 21}})  # fmt: skip
    path = captures.write(tmp_path / "two.pcap", first.packets() + second.packets())
    sink, tracker = Recorder(), Tracker()
    follower = LiveAudio(sink)
    polls = 0
    for n, frame in enumerate(CaptureFile(path).frames()):
        tracker.feed_frame(frame.ts, frame.linktype, frame.data)
        if n % 40 == 0:
            follower.poll(tracker)
            polls += 1
    for call in tracker.expire(float("inf")):
        follower.ended(call)
    offline = read_capture(path)
    assert len(sink.ended) == len(offline.calls) == 2
    for call in offline.calls:
        for leg, streams in call.streams.items():
            whole = decode_stream(streams[0].packets, call.encodings[streams[0].key]).samples
            pieces = sink.audio[(call.id, leg)]
            live = np.concatenate(pieces)
            assert len(pieces) > 5  # it really came in pieces
            assert live.size == whole.size and np.array_equal(live, whole)


def test_events_reach_websocket_subscribers(tmp_path: Path) -> None:
    settings = Settings(db=tmp_path / "s.sqlite3", analysis=AnalysisSettings(nisqa=False))
    keys = KeyStore(Store(settings.db))
    write, read = keys.create("write"), keys.create("read")
    with TestClient(create_app(settings, provider=None)) as client:
        auth = {"Authorization": f"Bearer {read}"}
        with client.websocket_connect(f"/ws/calls?token={read}") as everything, \
                client.websocket_connect("/ws/calls/c2", headers=auth) as one:  # fmt: skip
            events = [{"type": "final", "call_id": "c1", "leg": "agent", "text": "hello"},
                      {"type": "rule", "call_id": "c2", "leg": "customer", "rule": "x"}]  # fmt: skip
            r = client.post("/live/events", json={"events": events}, headers={"Authorization": f"Bearer {write}"})
            assert r.status_code == 202 and r.json() == {"accepted": 2}
            assert everything.receive_json() == events[0] and everything.receive_json() == events[1]
            assert one.receive_json() == events[1]  # only its call
        r = client.post("/live/events", json={"events": events}, headers={"Authorization": f"Bearer {read}"})
        assert r.status_code == 403
        with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect("/ws/calls?token=x") as ws:
            ws.receive_json()
        assert closed.value.code == 1008


def _ulaw_frames(path: Path) -> list[bytes]:
    """The 20 ms µ-law payloads of a G.711 WAV (the bundled legs are stored µ-law)."""
    data = path.read_bytes()
    fmt = data.index(b"fmt ")
    assert int.from_bytes(data[fmt + 8 : fmt + 10], "little") == 7  # WAVE_FORMAT_MULAW
    start = data.index(b"data") + 8
    body = data[start : start + int.from_bytes(data[start - 4 : start], "little")]
    return [body[i : i + 160] for i in range(0, len(body) - 159, 160)]


def test_sniff_transcribes_a_hep_call_live(tmp_path: Path) -> None:
    """`callqa sniff --hep ... --transcribe`: the example call sent as HEP (SIP + both RTP directions, ten times
    faster than real time) is transcribed while it runs (live events) and in its report when it ends."""
    import json
    import os
    import socket
    import struct
    import subprocess
    import sys

    from callqa.protocol.hep import build_hep3
    from callqa.protocol.packet import PROTO_UDP, Segment

    try:
        frames = {who: _ulaw_frames(REPO / f"examples/call-{who}.wav") for who in ("agent", "customer")}
    except AssertionError:
        pytest.skip("the example legs are not stored as µ-law")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CALLQA_DB": str(tmp_path / "s.db"), "CALLQA_ANALYSIS__DNSMOS": "false",
           "CALLQA_ANALYSIS__NISQA": "false"}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "callqa.cli", "sniff", "--jsonl", "--transcribe", "--hep",
                             f"127.0.0.1:{port}", "--duration", "600", "--inactivity", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)  # fmt: skip
    wait_listening(proc, "udp", port)
    a, b, pa, pb = "10.9.0.1", "10.9.0.2", 16000, 18000

    def sip(first: str, cseq: str, body: str = "") -> bytes:
        head = [first, "Via: SIP/2.0/UDP 10.9.0.1:5060;branch=z9hG4bKx", "From: <sip:agent@10.9.0.1>;tag=1",
                "To: <sip:cust@10.9.0.2>", "Call-ID: live-hep-1", f"CSeq: {cseq}"]  # fmt: skip
        if body:
            head.append("Content-Type: application/sdp")
        return ("\r\n".join([*head, f"Content-Length: {len(body)}", "", ""]) + body).encode()

    def sdp(addr: str, p: int) -> str:
        return f"v=0\r\no=- 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\nm=audio {p} RTP/AVP 0\r\n"

    now = time.time()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:

        def send(t: float, src: str, sport: int, dst: str, dport: int, payload: bytes) -> None:
            out.sendto(build_hep3(Segment(now + t, PROTO_UDP, src, sport, dst, dport, payload)), ("127.0.0.1", port))

        send(0.0, a, 5060, b, 5060, sip("INVITE sip:cust@10.9.0.2 SIP/2.0", "1 INVITE", sdp(a, pa)))
        send(0.01, b, 5060, a, 5060, sip("SIP/2.0 200 OK", "1 INVITE", sdp(b, pb)))
        send(0.02, a, 5060, b, 5060, sip("ACK sip:cust@10.9.0.2 SIP/2.0", "1 ACK"))
        n = min(len(frames["agent"]), len(frames["customer"]))
        start = time.time()
        for k in range(n):
            t = 0.05 + k * 0.02
            send(t, a, pa, b, pb, struct.pack(">BBHII", 0x80, 0, k, 160 * k, 0xA1) + frames["agent"][k])
            send(t, b, pb, a, pa, struct.pack(">BBHII", 0x80, 0, k, 160 * k, 0xB2) + frames["customer"][k])
            lag = start + t / 10 - time.time()
            if lag > 0:
                time.sleep(lag)
        send(0.06 + n * 0.02, a, 5060, b, 5060, sip("BYE sip:cust@10.9.0.2 SIP/2.0", "2 BYE"))
    out, stderr = lines_until(proc, lambda lines: any('"live-hep-1"' in line for line in lines), timeout_s=300)
    stdout = "".join(out)
    assert proc.returncode == 0, stderr[-2000:]
    events = [json.loads(line[5:]) for line in stderr.splitlines() if line.startswith("live {")]
    published = [e for e in events if e["type"] == "final"]
    for leg in ("caller", "callee"):  # each direction's finals come in order (the two directions are fed apart)
        starts = [e["start_s"] for e in published if e["leg"] == leg]
        assert starts == sorted(starts)
    finals = sorted(published, key=lambda e: e["start_s"])
    role = {"agent": "caller", "customer": "callee"}  # a captured call names its directions by SIP role
    assert [e["leg"] for e in finals] == [role[who] for _, who, _ in SCRIPT], [
        (e["start_s"], e["text"]) for e in finals
    ]
    assert "recorded" in finals[0]["text"] and events[-1] == {"type": "call_end", "call_id": "live-hep-1"}
    (report,) = [json.loads(line) for line in stdout.splitlines()]
    assert [u["leg"] for u in report["transcript"]] == [role[who] for _, who, _ in SCRIPT]


def test_live_publishes_nothing_for_a_language_it_does_not_know(tmp_path: Path) -> None:
    import subprocess

    said = tmp_path / "de.wav"
    subprocess.run(["espeak-ng", "-v", "de", "-s", "150", "-w", str(said), "Guten Tag, ich möchte meine Rechnung "
                    "bezahlen. Können Sie mir bitte helfen? Vielen Dank für Ihre Geduld."], check=True)  # fmt: skip
    audio = decode_file(said, 3600)
    x = np.concatenate([resample(audio.samples[0], audio.sample_rate, 8000), np.zeros(8000, np.float32)])
    events: list[dict] = []
    done = threading.Event()
    live = LiveTranscriber(lambda e: (events.append(e), e["type"] == "call_end" and done.set()))
    for i in range(0, x.size, 160):
        live.feed("de", "customer", x[i : i + 160], 8000, i / 8000)
    live.end_call("de")
    assert done.wait(300)
    live.close(timeout_s=300)
    assert [e for e in events if e["type"] == "final"] == []


def _trimmed(x: np.ndarray, rate: int) -> np.ndarray:
    """The utterance without its leading and trailing silence (10 ms frames above -40 dBFS)."""
    frames = x[: x.size // (rate // 100) * (rate // 100)].reshape(-1, rate // 100)
    loud = np.flatnonzero(20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) + 1e-12) > -40)
    return x[loud[0] * (rate // 100) : (loud[-1] + 1) * (rate // 100)]


@pytest.mark.parametrize("early_s", [0.3, 0.0], ids=["early decoding", "decoding after the end"])
def test_a_pause_shorter_than_the_end_of_utterance_silence_does_not_split_it(early_s: float) -> None:
    """Two sentences 0.4 s apart (longer than the early-decoding point, shorter than the 0.5 s that ends an
    utterance), fed in real time: the early decode made in the pause is dropped and one final holds both."""
    import calls

    first, second = (_trimmed(u, calls.RATE) for u in calls.utterances()[1:3])
    silence = lambda s: np.zeros(int(s * calls.RATE))  # noqa: E731
    x = np.concatenate([silence(0.5), first, silence(0.4), second, silence(1.5)]).astype(np.float32)
    events: list[dict] = []
    queued: list[str] = []
    live = LiveTranscriber(events.append, LiveOptions(partial_every_s=0, speculate_after_s=early_s))
    queue = live._queue

    def spy(d, job):  # type: ignore[no-untyped-def]
        if job.final:
            queued.append(job.status)
        queue(d, job)

    live._queue = spy  # type: ignore[method-assign]
    t0, chunk = time.time(), calls.RATE // 50
    for i in range(0, x.size, chunk):
        time.sleep(max(0.0, t0 + i / calls.RATE - time.time()))  # real time: the worker decodes during the pause
        live.feed("c", "agent", x[i : i + chunk], calls.RATE, i / calls.RATE)
    live.end_call("c")
    live.close(timeout_s=300)
    assert not live.worker.is_alive()
    finals = [e for e in events if e["type"] == "final"]
    assert len(finals) == 1, [e["text"] for e in finals]
    (final,) = finals
    first_end = 0.5 + first.size / calls.RATE
    assert final["start_s"] < 0.6 and final["end_s"] > first_end + 0.4 + second.size / calls.RATE - 0.3
    assert (
        len(final["words"]) >= 10
    )  # "Hello, I would like to check the balance ..." and "Of course, could you tell me ..."
    if early_s:  # the pause started an early decode that was then dropped, and the real end another one
        assert queued.count("waiting") >= 2
    else:
        assert "waiting" not in queued
