"""Labelled evaluation suite for one-way audio, dead air and mixed recordings: seeded calls with known faults,
as stereo recordings and as G.711 SIP/RTP captures with per-direction impairments.

    python bench/gen_oneway.py OUT_DIR [--per-class 10] [--seed 1] [--espeak-only]

Writes one file per call (``<class>-<n>.wav`` or ``.pcap``) and ``labels.json`` (what each call holds: the class,
the silent side and the moment its audio was lost, the dead-air span...). Speech comes from espeak-ng (several
voices and speeds), the bundled example call (``examples/``) and, unless ``--espeak-only``, the shared speech
recordings in ``../shared/testdata/audio`` when they are there. Nothing is hand-placed: every time, length,
level, voice and impairment is drawn from the seeded generator.

Classes (audio, stereo: agent left, customer right):
  normal, dominant (the agent talks ~85%, the customer answers "yes", "okay"), oneway_full (one side only line
  noise or digital silence from the start, each side), oneway_after (one side lost 5-40 s in, the other goes on
  and asks "hello? are you there?"), oneway_hold (the customer is lost during a hold with music), hold_ok (a hold
  with music, then the customer answers), dead_air (10+ s with nobody speaking), mixed (a mono call saved as
  stereo: identical channels as PCM, u-law or MP3).
Classes (captures, caller = agent, callee = customer): cap_normal, cap_dominant, cap_dead_air, cap_never_sent
  (one direction sends no RTP, or 1-3 packets), cap_stopped (one direction's RTP stops 1.5-40 s in),
  cap_silence_payload (one direction sends G.711 silence from the start or later), cap_comfort_noise (one
  direction sends only CN packets from some time on), cap_oneway_after (RTP flows but carries line noise after
  the loss), cap_loss20 (20% loss on one direction: not one-way), cap_no_media (answered, no RTP at all).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import shutil
import struct
import subprocess
import sys
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_capture import ip_udp, sip  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RATE = 8000

AGENT_LINES = [
    "Thank you for calling customer support, my name is Alex, how can I help you today?",
    "I can certainly help you with that. Can I have your account number please?",
    "Thank you. I can see your account here, give me a second to pull up the details.",
    "It looks like your last payment was received on the fourth of the month.",
    "The charge you are seeing is the annual service fee, which was agreed when the contract started.",
    "I can offer you a refund of the fee as a one time courtesy.",
    "Your new router will be shipped today and should arrive within three working days.",
    "Is there anything else I can help you with today?",
    "I have updated your address in our system, you will receive a confirmation email shortly.",
    "Could you please confirm the date of birth on the account?",
    "The engineer can visit on Thursday morning between eight and twelve.",
    "I understand this is frustrating, and I apologise for the inconvenience.",
    "Let me explain the options you have for the new plan.",
    "The premium plan includes unlimited calls and twenty gigabytes of data every month.",
    "Thank you for your patience, and have a lovely day.",
    "I will set a reminder on the account so that this does not happen again.",
]
CUSTOMER_LINES = [
    "Hi, I'm calling because my internet keeps dropping every evening.",
    "Yes, it's four five seven two nine one eight.",
    "I was charged twice this month and I don't understand why.",
    "It started last Monday, and it has happened every day since.",
    "That sounds good, but how long will it take?",
    "No, I moved house in March, the address should be updated.",
    "Can you send me the details by email please?",
    "I would like to cancel the extra package on my bill.",
    "Thursday morning works for me, thank you.",
    "My date of birth is the twelfth of June nineteen eighty.",
    "I have already restarted the router twice today.",
    "Okay, and will that change my monthly payment?",
    "No, that's everything, thank you very much for your help.",
    "I tried calling yesterday but nobody picked up.",
]
REPLIES = ["yes", "okay", "uh huh", "right", "sure", "yeah", "mm hmm", "okay thanks", "got it", "yes please"]
HELLOS = ["hello?", "hello, are you there?", "can you hear me?", "hello? I can't hear you.", "are you still there?",
          "hello, hello?", "sorry, I can't hear anything.", "hello? is anyone there?"]  # fmt: skip
HOLD_IN = ["Let me put you on hold for a moment while I check that.", "Please hold the line for a moment."]
HOLD_OUT = ["Thank you for holding.", "Thanks for waiting, I have the answer now."]
VOICES = {"agent": ["en-us+m3", "en-us+f3", "en+m1", "en-us+f2", "en+m4"],
          "customer": ["en-gb+f2", "en-us+m7", "en+f4", "en-gb+m2", "en-us+f5"]}  # fmt: skip
SHARED_SPEECH = ["cmu_arctic/cmu_arctic_us_aew_a0001.wav", "cmu_arctic/cmu_arctic_us_aew_a0002.wav",
                 "cmu_arctic/cmu_arctic_us_axb_a0004.wav", "cmu_arctic/cmu_arctic_us_axb_a0005.wav",
                 "pjproject/input.8.wav"]  # fmt: skip

AUDIO_CLASSES = ["normal", "dominant", "oneway_full", "oneway_after", "oneway_hold", "hold_ok", "dead_air", "mixed"]
CAPTURE_CLASSES = ["cap_normal", "cap_dominant", "cap_dead_air", "cap_never_sent", "cap_stopped",
                   "cap_silence_payload", "cap_comfort_noise", "cap_oneway_after", "cap_loss20",
                   "cap_no_media"]  # fmt: skip
CLASSES = AUDIO_CLASSES + CAPTURE_CLASSES
ONE_WAY_CLASSES = {"oneway_full", "oneway_after", "oneway_hold", "cap_never_sent", "cap_stopped",
                   "cap_silence_payload", "cap_comfort_noise", "cap_oneway_after"}  # fmt: skip


# --- speech ---------------------------------------------------------------------------------------------------


def _read_audio(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        frames = [r for f in c.decode(audio=0) for r in resampler.resample(f)]
        frames += resampler.resample(None)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float64)


def _trim(x: np.ndarray) -> np.ndarray:
    """Cut leading and trailing silence (20 ms frames more than 40 dB below the loudest)."""
    n = 160
    frames = x[: x.size // n * n].reshape(-1, n)
    rms = np.sqrt(np.mean(frames**2, axis=1)) + 1e-12
    loud = np.flatnonzero(rms > rms.max() * 10 ** (-40 / 20))
    return x[loud[0] * n : (loud[-1] + 1) * n] if loud.size else x


def _normalise(x: np.ndarray, dbfs: float = -20.0) -> np.ndarray:
    frames = x[: x.size // 160 * 160].reshape(-1, 160)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    active = rms[rms > rms.max() * 0.05] if rms.size else rms
    level = float(np.sqrt(np.mean(active**2))) if active.size else 1.0
    return x * 10 ** (dbfs / 20) / max(level, 1e-9)


class Bank:
    """Speech to build calls from: espeak-ng lines (cached per text, voice and speed) and recorded utterances."""

    def __init__(self, workdir: Path, espeak_only: bool = False, shared: Path | None = None) -> None:
        if shutil.which("espeak-ng") is None:
            raise SystemExit("espeak-ng is needed to build the suite (apt-get install espeak-ng)")
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cache: dict[tuple[str, str, int], np.ndarray] = {}
        self.recorded: dict[str, list[np.ndarray]] = {"agent": [], "customer": []}
        self._example()
        shared = shared if shared is not None else REPO.parent / "shared" / "testdata" / "audio"
        if not espeak_only and shared.is_dir():
            for i, name in enumerate(SHARED_SPEECH):
                if (shared / name).is_file():
                    x = _normalise(_trim(_read_audio(shared / name)))
                    if x.size < 12 * RATE:  # long recordings are not one turn
                        self.recorded["agent" if i % 2 == 0 else "customer"].append(x)

    def _example(self) -> None:
        """The bundled example's turns, cut from its two legs at the times its script gives."""
        spec = importlib.util.spec_from_file_location("make_example", REPO / "examples" / "make_example.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        turns = module.TURNS
        legs = {who: _read_audio(REPO / "examples" / f"call-{who}.wav") for who in ("agent", "customer")}
        for k, (start, who, _voice, _text) in enumerate(turns):
            nxt = min([t for t, w, _, _ in turns[k + 1 :] if w == who] + [legs[who].size / RATE])
            piece = _trim(legs[who][int(start * RATE) : int(min(nxt, start + 9.0) * RATE)])
            if piece.size > 0.5 * RATE:
                self.recorded[who].append(_normalise(piece))

    def say(self, text: str, voice: str, speed: int) -> np.ndarray:
        key = (text, voice, speed)
        if key not in self.cache:
            wav = self.dir / f"tts-{len(self.cache)}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), text], check=True,
                           timeout=60, stdout=subprocess.DEVNULL)  # fmt: skip
            self.cache[key] = _normalise(_trim(_read_audio(wav)))
            wav.unlink()
        return self.cache[key]


@dataclass
class Speaker:
    bank: Bank
    role: str
    voice: str
    speed: int
    gain_db: float
    rng: random.Random

    def line(self) -> np.ndarray:
        recorded = self.bank.recorded[self.role]
        if recorded and self.rng.random() < 0.25:
            return self.rng.choice(recorded)
        pool = AGENT_LINES if self.role == "agent" else CUSTOMER_LINES
        return self.say(self.rng.choice(pool))

    def say(self, text: str) -> np.ndarray:
        return self.bank.say(text, self.voice, self.speed) * 10 ** (self.gain_db / 20)

    def turn(self, sentences: int) -> np.ndarray:
        parts = []
        for i in range(sentences):
            if i:
                parts.append(np.zeros(int(self.rng.uniform(0.2, 0.6) * RATE)))
            parts.append(self.line())
        return np.concatenate(parts)


# --- call scripts -----------------------------------------------------------------------------------------------

Event = tuple[str, float, np.ndarray]  # side, start second, audio


@dataclass
class Label:
    name: str
    cls: str
    kind: str  # audio | capture
    duration_s: float
    oneway: str | None = None  # the side that is not heard (agent/customer; caller/callee in captures)
    start_s: float | None = None  # when its audio was lost
    dead_air: tuple[float, float] | None = None
    mixed: bool = False
    no_media: bool = False
    loss: str | None = None  # direction with 20% loss
    variant: str = ""
    notes: dict[str, Any] = field(default_factory=dict)


def _end(events: list[Event]) -> float:
    return max((t + x.size / RATE for _, t, x in events), default=0.0)


def conversation(rng: random.Random, sp: dict[str, Speaker], t0: float, until: float, dominant: bool = False
                 ) -> list[Event]:  # fmt: skip
    """Turns from t0 until about ``until``: alternating sentences, or (dominant) long agent turns with short
    well-timed replies from the customer."""
    events: list[Event] = []
    t, side = t0, "agent"
    reply_rate = rng.uniform(0.7, 1.0)  # how often the customer answers at all
    skipped = 0
    while t < until:
        if dominant and side == "customer":
            if rng.random() < reply_rate or skipped:  # never two agent turns in a row without a reply
                skipped = 0
                x = sp["customer"].say(rng.choice(REPLIES))
                events.append(("customer", t, x))
                t += x.size / RATE + rng.uniform(0.2, 0.8)
            else:
                skipped = 1
                t += rng.uniform(0.0, 1.8)  # the agent waits a moment for a reply that does not come, goes on
        else:
            x = sp[side].turn(rng.randint(2, 3) if dominant else rng.randint(1, 2))
            events.append((side, t, x))
            t += x.size / RATE + rng.uniform(-0.2, 1.2) if not dominant else x.size / RATE + rng.uniform(0.2, 0.8)
        side = "customer" if side == "agent" else "agent"
    return events


def unanswered(rng: random.Random, talker: Speaker, t: float) -> tuple[list[Event], float]:
    """The talker after the other side was lost: maybe a line or two more, then "hello? ... are you there?"
    with waits for the reply that never comes; returns the events and the call's end."""
    events: list[Event] = []
    t += rng.uniform(2.0, 5.0)  # the reply that does not come
    if rng.random() < 0.5:
        for _ in range(rng.randint(1, 2)):
            x = talker.turn(1)
            events.append((talker.role, t, x))
            t += x.size / RATE + rng.uniform(2.0, 5.0)
    for _ in range(rng.randint(2, 5)):
        x = talker.say(rng.choice(HELLOS))
        events.append((talker.role, t, x))
        t += x.size / RATE + rng.uniform(2.0, 5.0)
    return events, t - rng.uniform(0.5, 2.0)


def music(rng: random.Random, seconds: float) -> np.ndarray:
    """Hold music: a melody of decaying harmonic notes over a soft chord, about -24 dBFS."""
    n = int(seconds * RATE)
    out = np.zeros(n)
    t = np.arange(n) / RATE
    root = rng.choice([196.0, 220.0, 246.9, 261.6])
    scale = [0, 2, 4, 5, 7, 9, 11, 12]
    chord = sum(np.sin(2 * np.pi * root * 2 ** (k / 12) * t) for k in (0, 4, 7)) * 0.02
    out += chord
    pos = 0
    while pos < n:
        dur = int(rng.choice([0.25, 0.5, 0.5, 0.75]) * RATE)
        f = root * 2 * 2 ** (rng.choice(scale) / 12)
        tt = np.arange(min(dur, n - pos)) / RATE
        note = sum(np.sin(2 * np.pi * f * h * tt) / h**1.5 for h in (1, 2, 3, 4)) * np.exp(-tt * 3.0)
        out[pos : pos + tt.size] += 0.12 * note
        pos += dur
    return _normalise(out, -24.0)


@dataclass
class Call:
    label: Label
    events: list[Event]
    lost_from: float | None = None  # the lost side carries only line noise (or nothing) from here
    lost_silence: bool = False  # digital silence instead of line noise
    music: tuple[float, np.ndarray] | None = None
    media_start: float = 0.0
    end: float = 0.0


def speakers(rng: random.Random, bank: Bank) -> dict[str, Speaker]:
    return {role: Speaker(bank, role, rng.choice(VOICES[role]), rng.randint(145, 185), rng.uniform(-5.0, 3.0), rng)
            for role in ("agent", "customer")}  # fmt: skip


def script(cls: str, rng: random.Random, bank: Bank, name: str, media_start: float = 0.0) -> Call:
    """The content of one call of ``cls`` (captures use the matching audio script)."""
    sp = speakers(rng, bank)
    t0 = media_start + rng.uniform(0.3, 1.0)
    base = cls.removeprefix("cap_")
    label = Label(name, cls, "capture" if cls.startswith("cap_") else "audio", 0.0)
    if base in ("normal", "mixed", "loss20", "no_media"):
        events = conversation(rng, sp, t0, media_start + rng.uniform(30, 70))
        return Call(label, events, media_start=media_start, end=_end(events) + rng.uniform(0.5, 2.0))
    if base == "dominant":
        events = conversation(rng, sp, t0, media_start + rng.uniform(40, 80), dominant=True)
        return Call(label, events, media_start=media_start, end=_end(events) + rng.uniform(0.5, 2.0))
    if base == "dead_air":
        before = conversation(rng, sp, t0, media_start + rng.uniform(8, 30))
        a = _end(before)
        gap = rng.uniform(12, 30)
        after = conversation(rng, sp, a + gap, a + gap + rng.uniform(10, 30))
        label.dead_air = (round(a, 3), round(a + gap, 3))
        events = before + after
        return Call(label, events, media_start=media_start, end=_end(events) + rng.uniform(0.5, 2.0))
    if base in ("oneway_full", "never_sent"):
        lost = rng.choice(["agent", "customer"])
        talker = sp["customer" if lost == "agent" else "agent"]
        x = talker.turn(1)
        events, end = unanswered(rng, talker, t0 + x.size / RATE)
        events = [(talker.role, t0, x), *events]
        label.oneway, label.start_s = lost, media_start
        return Call(label, events, lost_from=0.0, lost_silence=rng.random() < 0.3, media_start=media_start, end=end)
    if base in ("oneway_after", "stopped", "silence_payload", "comfort_noise"):
        lost = rng.choice(["agent", "customer"])
        low = 1.5 if base == "stopped" and rng.random() < 0.2 else 5.0
        t_loss = media_start + rng.uniform(low, 40.0)
        if base == "silence_payload" and rng.random() < 0.3:
            t_loss = media_start  # silence payload from the start
            label.variant = "from start"
        events = conversation(rng, sp, t0, t_loss + 15.0)
        other = "customer" if lost == "agent" else "agent"
        kept = [e for e in events if e[1] < t_loss]  # the lost side's words after t_loss are not heard
        rest, end = unanswered(rng, sp[other], max(t_loss, _end([e for e in kept if e[0] == other])))
        label.oneway, label.start_s = lost, round(t_loss, 3)
        return Call(label, kept + rest, lost_from=t_loss, lost_silence=rng.random() < 0.2,
                    media_start=media_start, end=max(end, t_loss + 3.0))  # fmt: skip
    if base in ("oneway_hold", "hold_ok"):
        events = conversation(rng, sp, t0, media_start + rng.uniform(10, 30))
        t = _end(events) + rng.uniform(0.3, 1.0)
        x = sp["agent"].say(rng.choice(HOLD_IN))
        events.append(("agent", t, x))
        h0 = t + x.size / RATE + 0.5
        h1 = h0 + rng.uniform(10, 35)
        back = sp["agent"].say(rng.choice(HOLD_OUT))
        events.append(("agent", h1, back))
        t = h1 + back.size / RATE
        call = Call(label, events, music=(h0, music(rng, h1 - h0)), media_start=media_start)
        if base == "hold_ok":
            events += conversation(rng, sp, t + rng.uniform(0.3, 1.0), t + rng.uniform(10, 30))
            events.sort(key=lambda e: e[1])
            call.end = _end(events) + rng.uniform(0.5, 2.0)
        else:
            rest, call.end = unanswered(rng, sp["agent"], t)
            events += rest
            call.lost_from = rng.uniform(h0, h1)
            label.oneway, label.start_s = "customer", round(h1, 3)
            label.notes["lost_at_s"] = round(call.lost_from, 3)
        return call
    raise ValueError(f"unknown class {cls}")


def render(call: Call, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Both legs on the call's timeline: a line-noise floor (sometimes with mains hum) plus each side's speech;
    the lost side keeps only its noise (or digital silence) from ``lost_from``."""
    n = int(call.end * RATE) + 1
    legs = {}
    t = np.arange(n) / RATE
    for side in ("agent", "customer"):
        floor = rng.uniform(-72, -52)
        x = rng.normal(0, 10 ** (floor / 20), n)
        if rng.random() < 0.3:
            hz = rng.choice([50.0, 60.0])
            x += sum(np.sin(2 * np.pi * hz * k * t) / k for k in (1, 3, 5)) * 10 ** ((floor + 6) / 20)
        for who, start, audio in call.events:
            if who == side:
                a = int(start * RATE)
                m = min(audio.size, n - a)
                if m > 0:
                    x[a : a + m] += audio[:m]
        if side == "agent" and call.music is not None:
            a = int(call.music[0] * RATE)
            m = min(call.music[1].size, n - a)
            x[a : a + m] += call.music[1][:m]
        if call.lost_from is not None and call.label.oneway in (side, ROLE_OF.get(side)):
            a = int(call.lost_from * RATE)
            x[a:] = 0.0 if call.lost_silence else rng.normal(0, 10 ** (floor / 20), n - a)
        x[: int(call.media_start * RATE)] = 0.0
        legs[side] = np.clip(x, -1.0, 1.0)
    return legs


ROLE_OF = {"agent": "caller", "customer": "callee"}


# --- files ----------------------------------------------------------------------------------------------------


def write_wav(path: Path, channels: list[np.ndarray]) -> None:
    pcm = np.clip(np.round(np.stack(channels).T * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(len(channels))
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())


def write_encoded(path: Path, x: np.ndarray, codec: str, fmt: str) -> None:
    """A mono signal as a stereo file with both channels the same (a mono call saved as stereo)."""
    with av.open(str(path), "w", format=fmt) as c:
        stream = c.add_stream(codec, rate=RATE if codec == "pcm_mulaw" else 16000, layout="stereo")
        pcm = np.clip(x * 32767, -32768, 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.stack([pcm, pcm]).T.reshape(1, -1).copy(), format="s16",
                                           layout="stereo")  # fmt: skip
        frame.sample_rate = RATE
        if codec != "pcm_mulaw":
            resampler = av.AudioResampler(format=stream.format.name, layout="stereo", rate=16000)
            frames = resampler.resample(frame) + resampler.resample(None)
        else:
            frames = [frame]
        for f in frames:
            for packet in stream.encode(f):
                c.mux(packet)
        for packet in stream.encode(None):
            c.mux(packet)


# u-law encoding by nearest decoded value (the decoder table is the reference)
def _ulaw_table() -> tuple[np.ndarray, np.ndarray]:
    from callqa.audio import g711

    order = np.argsort(g711.ULAW, kind="stable")
    return g711.ULAW[order].astype(np.float64), order.astype(np.uint8)


def ulaw_encode(x: np.ndarray) -> bytes:
    values, codes = _ULAW
    pcm = np.clip(x * 32768.0, -32768, 32767)
    i = np.clip(np.searchsorted(values, pcm), 1, values.size - 1)
    nearer = np.where(np.abs(values[i - 1] - pcm) <= np.abs(values[i] - pcm), i - 1, i)
    return codes[nearer].tobytes()


_ULAW = _ulaw_table()


def sdp_body(addr: str, port: int) -> str:
    return (f"v=0\r\no=- 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0 13 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:13 CN/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\n")  # fmt: skip


def write_capture(path: Path, call: Call, legs: dict[str, np.ndarray] | None, rng: random.Random,
                  impair: dict[str, Any]) -> None:  # fmt: skip
    """One SIP call (agent = caller 127.0.5.1, customer = callee 127.0.6.1) with 20 ms PCMU both ways, in time
    order; ``impair``: side, mode (never, stop, silence, cn, noise, loss), from (seconds), packets (never)."""
    a, b, pa, pb = "127.0.5.1", "127.0.6.1", 16000, 18000
    cid = f"{call.label.name}@{a}"
    common = [f"Call-ID: {cid}", f"From: <sip:agent@{a}>;tag=a1", f"To: <sip:cust@{b}>;tag=b1",
              f"Via: SIP/2.0/UDP {a}:5060;branch=z9hG4bK1"]  # fmt: skip
    base = 1_700_000_000.0
    ans = call.media_start - 0.05
    pkts: list[tuple[float, bytes]] = [
        (0.0, ip_udp(a, 5060, b, 5060, sip(["INVITE sip:cust@127.0.6.1 SIP/2.0", *common, "CSeq: 1 INVITE",
                                            "Content-Type: application/sdp"], sdp_body(a, pa)))),
        (0.1, ip_udp(b, 5060, a, 5060, sip(["SIP/2.0 180 Ringing", *common, "CSeq: 1 INVITE"]))),
        (ans, ip_udp(b, 5060, a, 5060, sip(["SIP/2.0 200 OK", *common, "CSeq: 1 INVITE",
                                            "Content-Type: application/sdp"], sdp_body(b, pb)))),
        (ans + 0.02, ip_udp(a, 5060, b, 5060, sip(["ACK sip:cust@127.0.6.1 SIP/2.0", *common, "CSeq: 1 ACK"]))),
    ]  # fmt: skip
    if legs is not None:
        for side, (src, sp_, dst, dp) in (("agent", (a, pa, b, pb)), ("customer", (b, pb, a, pa))):
            x = legs[side]
            mine = impair.get("side") == side
            mode = impair.get("mode") if mine else None
            ssrc, seq0, ts0 = rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(32)
            k0 = int(call.media_start * RATE) // 160
            sent = seq = 0
            for k in range(k0, int(call.end * RATE) // 160):
                t = k * 0.02
                late = t >= impair.get("from", 0.0)
                if mode == "never" and sent >= impair.get("packets", 0):
                    break
                if mode == "stop" and late:
                    break
                seq += 1
                if mode == "loss" and rng.random() < 0.2:
                    continue  # sent, lost on the way: a gap in the sequence numbers
                pt, payload = 0, ulaw_encode(x[k * 160 : k * 160 + 160])
                if mode == "silence" and late:
                    payload = b"\xff" * 160
                if mode == "cn" and late:
                    if (k - k0) % 10:
                        seq -= 1
                        continue  # a SID every 200 ms, nothing sent in between (DTX)
                    pt, payload = 13, bytes([rng.randint(60, 80)])
                hdr = struct.pack(">BBHII", 0x80, pt, (seq0 + seq) & 0xFFFF, (ts0 + 160 * (k - k0)) & 0xFFFFFFFF, ssrc)
                pkts.append((t + rng.random() * 0.004, ip_udp(src, sp_, dst, dp, hdr + payload)))
                sent += 1
    end = call.end + 0.05
    by = impair.get("bye", "callee")
    s_, d_ = (b, a) if by == "callee" else (a, b)
    pkts.append((end, ip_udp(s_, 5060, d_, 5060, sip([f"BYE sip:x@{d_} SIP/2.0", *common, "CSeq: 2 BYE"]))))
    pkts.append((end + 0.01, ip_udp(d_, 5060, s_, 5060, sip(["SIP/2.0 200 OK", *common, "CSeq: 2 BYE"]))))
    pkts.sort(key=lambda p: p[0])
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for ts, frame in pkts:
            ts += base
            sec = int(ts)
            f.write(struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(frame), len(frame)))
            f.write(frame)


# --- the suite ------------------------------------------------------------------------------------------------


def make_call(cls: str, i: int, seed: int, bank: Bank, out: Path) -> Label:
    rng = random.Random(f"{seed}-{cls}-{i}")
    nrng = np.random.default_rng(rng.getrandbits(64))
    name = f"{cls}-{i:03d}"
    capture = cls.startswith("cap_")
    media_start = rng.uniform(0.5, 2.5) if capture else 0.0
    call = script(cls, rng, bank, name, media_start)
    label = call.label
    label.duration_s = round(call.end, 3)
    legs = render(call, nrng)
    if not capture:
        if cls == "mixed":
            label.mixed = True
            mono = np.clip(legs["agent"] + legs["customer"], -1, 1)
            label.variant = rng.choice(["pcm", "ulaw", "mp3"])
            path = out / f"{name}.{'mp3' if label.variant == 'mp3' else 'wav'}"
            if label.variant == "pcm":
                write_wav(path, [mono, mono])
            else:
                write_encoded(path, mono, *(("pcm_mulaw", "wav") if label.variant == "ulaw" else ("libmp3lame", "mp3")))
        else:
            path = out / f"{name}.wav"
            write_wav(path, [legs["agent"], legs["customer"]])
        label.notes["file"] = path.name
        return label
    impair: dict[str, Any] = {"bye": rng.choice(["caller", "callee"])}
    base = cls.removeprefix("cap_")
    lost = label.oneway
    if base == "never_sent":
        impair.update(side=lost, mode="never", packets=rng.choice([0, 0, 1, 1, 3]))
        label.variant = f"{impair['packets']} packets"
    elif base == "stopped":
        impair.update(side=lost, mode="stop", **{"from": label.start_s})
    elif base == "silence_payload":
        impair.update(side=lost, mode="silence", **{"from": label.start_s})
    elif base == "comfort_noise":
        impair.update(side=lost, mode="cn", **{"from": label.start_s})
    elif base == "loss20":
        label.loss = rng.choice(["agent", "customer"])
        impair.update(side=label.loss, mode="loss")
    elif base == "no_media":
        label.no_media = True
    for key in ("oneway", "loss"):
        value = getattr(label, key)
        if value:
            setattr(label, key, ROLE_OF[value])
    path = out / f"{name}.pcap"
    write_capture(path, call, None if label.no_media else legs, rng, impair)
    label.notes["file"] = path.name
    return label


def build(out: Path, per_class: int, seed: int = 1, espeak_only: bool = False,
          classes: list[str] | None = None) -> list[Label]:  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    bank = Bank(out / "tts", espeak_only)
    labels = []
    for cls in classes or CLASSES:
        n = per_class * 2 if cls in ("oneway_full", "cap_never_sent") else per_class  # each side
        labels += [make_call(cls, i, seed, bank, out) for i in range(n)]
    (out / "labels.json").write_text(json.dumps([asdict(x) for x in labels], indent=1))
    shutil.rmtree(out / "tts", ignore_errors=True)
    return labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--espeak-only", action="store_true", help="no recorded speech besides the bundled example")
    args = ap.parse_args()
    labels = build(args.out, args.per_class, args.seed, args.espeak_only)
    print(f"{args.out}: {len(labels)} calls in {len({x.cls for x in labels})} classes")


if __name__ == "__main__":
    main()
