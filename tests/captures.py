"""SIP/RTP captures with known content and known impairments, for tests that need a capture but not a particular
real one. Frames are built and written by the project's own generator (``bench/gen_capture.py``); this module
adds what a test needs on top: real audio in G.711 or G.722, loss, jitter, a missing direction, RFC 4733 DTMF,
re-INVITEs, calls without BYE, sequence restarts and SRTP (RFC 3711 AES-CM with HMAC-SHA1, written here from the
RFC rather than with the code under test).

A capture is a list of (arrival time, Ethernet frame); ``write`` sorts and saves it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import random
import struct
import zlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gen_capture", REPO / "bench" / "gen_capture.py")
assert _spec is not None and _spec.loader is not None
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)

Packet = tuple[float, bytes]
T0 = 1_700_000_000.0
CODECS = {"PCMU": (0, "pcm_mulaw", 8000), "PCMA": (8, "pcm_alaw", 8000), "G722": (9, "g722", 16000)}
DTMF_EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11}


def udp(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    return gen.ip_udp(src, sport, dst, dport, payload)


def write(path: Path, packets: Iterable[Packet]) -> Path:
    gen.write_pcap(path, sorted(packets, key=lambda p: p[0]))
    return path


# --- media ------------------------------------------------------------------------------------------------


def encode(x: np.ndarray, codec: str, rate: int = 8000) -> list[bytes]:
    """Audio (mono float at ``rate``) as 20 ms payloads of ``codec`` (FFmpeg's encoders)."""
    _, name, codec_rate = CODECS[codec]
    if rate != codec_rate:
        from callqa.audio.resample import resample

        x = resample(np.asarray(x, np.float32), rate, codec_rate)
    pcm = np.clip(np.round(np.asarray(x) * 32767), -32768, 32767).astype(np.int16)
    ctx = av.CodecContext.create(name, "w")
    ctx.sample_rate, ctx.layout, ctx.format = codec_rate, "mono", "s16"  # type: ignore[attr-defined]
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = codec_rate
    data = b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)])  # type: ignore[attr-defined]
    size = 160  # 20 ms: 160 bytes of G.711 at 8 kHz, 160 bytes of G.722 (64 kbit/s)
    return [data[i : i + size] for i in range(0, len(data) - size + 1, size)]


def silence(seconds: float, codec: str = "PCMU") -> list[bytes]:
    return encode(np.zeros(int(seconds * 8000)), codec)


@dataclass
class Srtp:
    """One sender's SRTP (RFC 3711, AES_CM_128_HMAC_SHA1_80, key derivation rate 0)."""

    key: str  # base64 of the 16-byte master key and 14-byte salt, as in an SDES crypto attribute

    @property
    def sdes(self) -> str:
        return f"AES_CM_128_HMAC_SHA1_80:{self.key}"

    def _keys(self) -> tuple[bytes, bytes, bytes]:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        material = base64.b64decode(self.key)
        master, salt = material[:16], material[16:]

        def prf(label: int, n: int) -> bytes:  # RFC 3711 4.3.1 and 4.3.3
            iv = ((int.from_bytes(salt, "big") ^ (label << 48)) << 16).to_bytes(16, "big")
            enc = Cipher(algorithms.AES(master), modes.CTR(iv)).encryptor()
            return enc.update(bytes(n)) + enc.finalize()

        return prf(0, 16), prf(1, 20), prf(2, 14)

    def protect(self, packet: bytes, roc: int = 0) -> bytes:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        enc_key, auth_key, salt = self._keys()
        seq, ssrc = struct.unpack_from(">H", packet, 2)[0], struct.unpack_from(">I", packet, 8)[0]
        index = (roc << 16) | seq
        iv = ((int.from_bytes(salt, "big") << 16) ^ (ssrc << 64) ^ (index << 16)).to_bytes(16, "big")
        enc = Cipher(algorithms.AES(enc_key), modes.CTR(iv)).encryptor()
        body = packet[:12] + enc.update(packet[12:]) + enc.finalize()
        tag = hmac.new(auth_key, body + roc.to_bytes(4, "big"), hashlib.sha1).digest()[:10]
        return body + tag


@dataclass
class Stream:
    """One direction of RTP: what it carries and what happens to it on the way."""

    src: tuple[str, int]
    dst: tuple[str, int]
    frames: list[bytes]  # 20 ms payloads in sending order
    pt: int = 0
    start: float = T0
    ssrc: int | None = None
    seq0: int | None = None
    drop: Collection[int] = ()  # frame indices lost on the way
    jitter_ms: float = 0.0  # uniform extra delay per packet (under 20 ms keeps the order)
    delays_ms: dict[int, float] = field(default_factory=dict)  # extra delay of particular frames (spikes)
    restart_at: int | None = None  # the sender restarts its sequence numbers (back by 5000) and timestamps here
    dtmf: list[tuple[int, str, int]] = field(default_factory=list)  # (first frame, digit, frames) sent as events
    dtmf_pt: int = 101
    srtp: Srtp | None = None
    seed: int = 0

    def packets(self) -> list[Packet]:
        rng = random.Random(self.seed)
        ssrc = rng.getrandbits(32) if self.ssrc is None else self.ssrc
        seq = rng.getrandbits(15) if self.seq0 is None else self.seq0
        ts = rng.getrandbits(31)
        events = {k + i: (digit, n, i) for k, digit, n in self.dtmf for i in range(n)}
        out: list[Packet] = []
        event_ts = 0
        for k, payload in enumerate(self.frames):
            if k == self.restart_at:  # back by 5000, as a sender that restarts from a new random number may
                seq, ts = seq - 5000, rng.getrandbits(31) - 160 * k
            pt, marker, body, stamp = self.pt, k == 0, payload, ts + 160 * k
            if k in events:  # RFC 4733: one timestamp per event, the duration grows, the last packet says "end"
                digit, n, i = events[k]
                event_ts = stamp if i == 0 else event_ts
                end = i == n - 1
                body = struct.pack(">BBH", DTMF_EVENTS[digit], 0x80 * end | 10, 160 * (i + 1))
                pt, marker, stamp = self.dtmf_pt, i == 0, event_ts
            packet = struct.pack(">BBHII", 0x80, marker << 7 | pt, (seq + k) & 0xFFFF, stamp & 0xFFFFFFFF, ssrc)
            packet += body
            if self.srtp is not None:
                packet = self.srtp.protect(packet, roc=max(0, seq + k) >> 16)
            if k in self.drop:
                continue
            arrival = self.start + 0.02 * k + (rng.random() * self.jitter_ms + self.delays_ms.get(k, 0.0)) / 1000
            out.append((arrival, udp(*self.src, *self.dst, packet)))
        return out

    @property
    def end(self) -> float:
        return self.start + 0.02 * len(self.frames)


# --- SIP ----------------------------------------------------------------------------------------------------


def sdp(addr: str, port: int, codecs: Iterable[str] = ("PCMU",), dtmf_pt: int | None = 101,
        crypto: Srtp | None = None, version: int = 1) -> str:  # fmt: skip
    pts = [CODECS[c][0] for c in codecs]
    lines = ["v=0", f"o=- 1 {version} IN IP4 {addr}", "s=-", f"c=IN IP4 {addr}", "t=0 0",
             f"m=audio {port} {'RTP/SAVP' if crypto else 'RTP/AVP'} {' '.join(map(str, pts))}"
             + (f" {dtmf_pt}" if dtmf_pt is not None else "")]  # fmt: skip
    lines += [f"a=rtpmap:{CODECS[c][0]} {c}/8000" for c in codecs]
    if dtmf_pt is not None:
        lines.append(f"a=rtpmap:{dtmf_pt} telephone-event/8000")
    if crypto is not None:
        lines.append(f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{crypto.key}")
    return "\r\n".join(lines) + "\r\n"


@dataclass
class Call:
    """A SIP call over UDP with one RTP stream per direction (either may be missing)."""

    call_id: str
    caller: str = "10.1.0.1"
    callee: str = "10.2.0.1"
    caller_port: int = 20000
    callee_port: int = 30000
    codec: str = "PCMU"
    start: float = T0
    caller_frames: list[bytes] | None = None  # None: that side sends no RTP
    callee_frames: list[bytes] | None = None
    answer: str = "200 OK"  # or e.g. "603 Decline": no media
    hangup: str | None = "caller"  # who sends BYE; None: no BYE (the media just stops)
    dtmf_pt: int = 101
    caller_options: dict = field(default_factory=dict)  # more Stream fields, e.g. drop, jitter_ms, dtmf, srtp
    callee_options: dict = field(default_factory=dict)
    crypto: dict[str, Srtp] = field(default_factory=dict)  # role -> the SDES key its SDP offers
    reinvite: tuple[float, str, list[bytes], list[bytes]] | None = None  # (after s, codec, caller, callee frames)
    seed: int = 0

    def _sip(self, t: float, frm: str, first: str, cseq: str, body: str = "") -> Packet:
        src, dst = (self.caller, self.callee) if frm == "caller" else (self.callee, self.caller)
        branch = zlib.crc32((self.call_id + cseq + first).encode())
        lines = [first, f"Via: SIP/2.0/UDP {src}:5060;branch=z9hG4bK{branch}",
                 f"From: \"Agent\" <sip:agent@{self.caller}>;tag=from-{self.seed}",
                 f"To: <sip:customer@{self.callee}>" + (";tag=to-1" if not first.startswith("INVITE") or
                                                        cseq != "1 INVITE" else ""),
                 f"Call-ID: {self.call_id}", f"CSeq: {cseq}"]  # fmt: skip
        if body:
            lines.append("Content-Type: application/sdp")
        return t, udp(src, 5060, dst, 5060, gen.sip(lines, body))

    def packets(self) -> list[Packet]:
        t = self.start
        invite = f"INVITE sip:customer@{self.callee} SIP/2.0"
        out = [self._sip(t, "caller", invite, "1 INVITE", sdp(self.caller, self.caller_port, [self.codec],
                                                             self.dtmf_pt, self.crypto.get("caller")))]  # fmt: skip
        out.append(self._sip(t + 0.01, "callee", "SIP/2.0 100 Trying", "1 INVITE"))
        if not self.answer.startswith("200"):
            out.append(self._sip(t + 0.5, "callee", f"SIP/2.0 {self.answer}", "1 INVITE"))
            out.append(self._sip(t + 0.51, "caller", f"ACK sip:customer@{self.callee} SIP/2.0", "1 ACK"))
            return out
        out.append(self._sip(t + 0.05, "callee", "SIP/2.0 200 OK", "1 INVITE",
                             sdp(self.callee, self.callee_port, [self.codec], self.dtmf_pt,
                                 self.crypto.get("callee"))))  # fmt: skip
        out.append(self._sip(t + 0.06, "caller", f"ACK sip:customer@{self.callee} SIP/2.0", "1 ACK"))
        media0 = t + 0.1
        parts = [(media0, self.codec, self.caller_frames, self.callee_frames)]
        if self.reinvite is not None:
            after, codec, a, b = self.reinvite
            parts.append((media0 + after, codec, a, b))
        end = media0
        for n, (m0, codec, a, b) in enumerate(parts):
            if n:  # a re-INVITE changes the codec: new SDP versions, then new streams
                out.append(
                    self._sip(
                        m0 - 0.05,
                        "caller",
                        invite,
                        "2 INVITE",
                        sdp(self.caller, self.caller_port, [codec], self.dtmf_pt, version=2),
                    )
                )
                out.append(
                    self._sip(
                        m0 - 0.04,
                        "callee",
                        "SIP/2.0 200 OK",
                        "2 INVITE",
                        sdp(self.callee, self.callee_port, [codec], self.dtmf_pt, version=2),
                    )
                )
                out.append(self._sip(m0 - 0.03, "caller", f"ACK sip:customer@{self.callee} SIP/2.0", "2 ACK"))
            nxt = parts[n + 1][0] if n + 1 < len(parts) else None
            for role, frames, src, dst, opts in (
                ("caller", a, (self.caller, self.caller_port), (self.callee, self.callee_port), self.caller_options),
                ("callee", b, (self.callee, self.callee_port), (self.caller, self.caller_port), self.callee_options),
            ):
                if frames is None:
                    continue
                if nxt is not None:
                    frames = frames[: int((nxt - m0) / 0.02) - 3]
                s = Stream(src, dst, frames, CODECS[codec][0], m0, dtmf_pt=self.dtmf_pt,
                           seed=self.seed * 10 + 2 * n + (role == "callee"), **(opts if n == 0 else {}))  # fmt: skip
                out += s.packets()
                end = max(end, s.end)
        if self.hangup is not None:
            who = self.hangup
            target = self.callee if who == "caller" else self.caller
            out.append(self._sip(end + 0.1, who, f"BYE sip:someone@{target} SIP/2.0", "3 BYE"))
            out.append(self._sip(end + 0.11, "callee" if who == "caller" else "caller", "SIP/2.0 200 OK", "3 BYE"))
        return out


def speech_frames(seconds: float, codec: str = "PCMU", turns: list[float] | None = None, seed: int = 0,
                  babble_snr_db: float | None = None) -> list[bytes]:  # fmt: skip
    """``seconds`` of a leg with espeak-ng speech at ``turns`` (default: one utterance at 0.5 s), encoded; with
    ``babble_snr_db``, babble of other talkers behind it at that SNR (a noisy room at the sender's end)."""
    import calls

    x = calls.leg(seconds, turns if turns is not None else [0.5], seed=seed)
    if babble_snr_db is not None:  # the speech level is -20 dBFS (calls.synthesise), as is the babble
        x = x + calls.babble(x.size, seed) * 10 ** (-babble_snr_db / 20)
    return encode(x, codec)


def stream_summary(path: Path, keep_audio: bool) -> list[tuple]:  # type: ignore[type-arg]
    """Every RTP stream's statistics in a capture, sorted: (call, role, key, total, expected, lost, duplicates,
    out of order, max delta, max jitter, mean jitter). ``keep_audio`` takes the per-packet path, else the bulk one."""
    from callqa.capture.calls import read_capture, stream_stats

    cap = read_capture(path, keep_audio=keep_audio)
    out = []
    for call in cap.calls:
        for role, streams in call.streams.items():
            for s in streams:
                st = stream_stats(s, call.encodings.get(s.key, {}), cap.start)
                out.append((call.id, role, s.key, st.total, st.expected, st.lost, st.duplicates, st.out_of_order,
                            round(st.max_delta, 9), round(st.max_jitter, 9), round(st.mean_jitter, 9)))  # fmt: skip
    return sorted(out)
