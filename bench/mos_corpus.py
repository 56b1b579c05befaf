"""Build the labelled corpus the call MOS is fitted on: clean speech through telephone conditions, each clip
labelled with intrusive P.862 (narrowband MOS-LQO) and P.862.2 (wideband) by the ``pesq`` package, which
implements the ITU reference code, and with the features the report computes (``callqa.quality.callmos``).

Everything is made here from a seed; nothing is downloaded. Clean speech comes from the reference recordings in
the test data folder, from the voice prompts of Debian's Asterisk sound packages and alsa-utils' channel test
voice (real talkers recorded as uncompressed PCM: ``setup.sh --dev`` installs them; a voice whose package is
missing is skipped with a note) and from espeak-ng. Real speech dominates. The PESQ-labelled material the tests score
against (``audio/pesq``, ``audio/visqol``, ``audio/pjproject``) is never used here.

Each clip belongs to a partition: ``fit`` clips use only the fitting speakers and condition families,
``held`` clips only the held-out ones, so no speaker and no condition of the validation set is seen in fitting.

    nice -n 5 python bench/mos_corpus.py --testdata ../shared/testdata --nisqa-weights nisqa.tar \
        --out /tmp/callqa-mos --clips 640

Clips already in ``<out>/corpus.jsonl`` are kept (same seed, same clip index): reruns only add what is missing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from scipy.signal import butter, sosfilt

from callqa.audio.decode import decode_file
from callqa.audio.resample import resample
from callqa.config import AnalysisSettings, Settings
from callqa.errors import DecodeError
from callqa.pipeline import Leg, analyze_legs
from callqa.quality import callmos

CORPUS_VERSION = 3
SR = 16000  # clean references are kept at 16 kHz
FRAME_MS = 20

# (speaker, file in the test data folder, channel): real recordings
REAL = [
    ("jfk", "audio/whisper/jfk.flac", None),
    ("diar_l", "audio/faster_whisper/stereo_diarization.wav", 0),
    ("diar_r", "audio/faster_whisper/stereo_diarization.wav", 1),
    ("silero", "audio/silero_vad/test.wav", None),
    ("arctic_aew", "audio/cmu_arctic/cmu_arctic_us_aew_a0001.wav", None),
    ("arctic_aew", "audio/cmu_arctic/cmu_arctic_us_aew_a0002.wav", None),
    ("arctic_axb", "audio/cmu_arctic/cmu_arctic_us_axb_a0004.wav", None),
    ("arctic_axb", "audio/cmu_arctic/cmu_arctic_us_axb_a0005.wav", None),
]
# (speaker, folders of PCM recordings of that talker, files per folder): real talkers that Debian packages ship.
# Asterisk's prompts (8 kHz 16-bit WAV, one professional talker per voice; Allison recorded the US English and
# the Mexican Spanish sets) and alsa-utils' channel test voice. The GSM-coded prompt packages are not used: a
# coded reference would label coding noise as clean.
ASTERISK = Path("/usr/share/asterisk/sounds")
PACKAGED = [
    ("ast_allison", [ASTERISK / "en_US_f_Allison", ASTERISK / "es_MX_f_Allison"], 24),
    ("ast_june", [ASTERISK / "fr_CA_f_June"], 40),
    ("ast_menardi", [ASTERISK / "it_IT_f_Menardi"], 40),
    ("ast_carlo", [ASTERISK / "it_IT_m_Carlo"], 40),
    ("ast_ivr_ru", [ASTERISK / "ru_RU_f_IvrvoiceRU"], 40),
    ("alsa_voice", [Path("/usr/share/sounds/alsa")], 40),
]
ESPEAK_TEXT = [
    "Thank you for calling the service desk, my name is Daniel, how can I help you today?",
    "Hello, I would like to check the balance of my savings account, please.",
    "Of course, could you tell me your date of birth and the first line of your address?",
    "It is the fourth of July, and I live at twelve Station Road near the river.",
    "The engineer will visit on Tuesday morning between eight and twelve o'clock.",
    "I have been waiting for a refund since the end of last month and nobody called me back.",
]
ESPEAK_VOICES = ["en-us+m3", "en-gb+f2", "en-us+f3", "en-gb+m4", "en-us+m1", "en-gb+f4"]
HELD_SPEAKERS = {"arctic_axb", "diar_r", "jfk", "tts_en-gb+f2", "tts_en-us+m1"}

FIT_FAMILIES = ["clean", "g711", "g722", "amrnb", "opus", "g723", "loss_random", "jitter", "noise_babble", "hum",
                "clipping", "level", "bandlimit", "echo", "mixed"]  # fmt: skip
HELD_FAMILIES = ["gsm", "loss_bursty", "noise_street", "transcode", "mixed_held"]


@dataclass
class Source:
    speaker: str
    x: np.ndarray  # 16 kHz float64, active level about -26 dBFS


def active_rms(x: np.ndarray, sr: int = SR) -> float:
    """RMS over the louder frames (a crude P.56 active level: frames within 30 dB of the loudest)."""
    n = int(0.02 * sr)
    frames = x[: x.size // n * n].reshape(-1, n)
    e = np.sqrt(np.mean(frames**2, axis=1)) + 1e-12
    keep = e > e.max() * 10 ** (-30 / 20)
    return float(np.sqrt(np.mean(frames[keep] ** 2)))


def set_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    return x * (10 ** (dbfs / 20) / active_rms(x))


def packaged_speech(folders: list[Path], per_folder: int) -> list[np.ndarray]:
    """Up to ``per_folder`` recordings of 1.2-8 s from each folder (its own files, sorted, evenly spaced: the same
    choice on every machine with the same package), at 16 kHz; none when the folder is missing."""
    out = []
    for folder in folders:
        if not folder.is_dir():
            print(f"note: {folder} is missing (its Debian package is not installed); its talker is left out")
            continue
        clips = []
        for f in sorted(folder.glob("*.wav")):
            if "noise" in f.stem.lower():  # alsa-utils' pink noise test signal
                continue
            try:
                d = decode_file(f, 600)
            except DecodeError:  # a few prompts are empty files
                continue
            x = d.samples.mean(axis=0)
            if 1.2 <= x.size / d.sample_rate <= 8.0 and np.any(x):
                clips.append(resample(x, d.sample_rate, SR).astype(np.float64))
        step = max(1.0, len(clips) / per_folder)
        out += [clips[int(i * step)] for i in range(min(per_folder, len(clips)))]
    return out


def load_sources(testdata: Path) -> list[Source]:
    out = []
    for speaker, name, channel in REAL:
        d = decode_file(testdata / name, 3600)
        x = d.samples[channel] if channel is not None else d.samples.mean(axis=0)
        out.append(Source(speaker, set_level(resample(x, d.sample_rate, SR).astype(np.float64), -26)))
    for speaker, folders, per_folder in PACKAGED:
        out += [Source(speaker, set_level(x, -26)) for x in packaged_speech(folders, per_folder)]
    for voice in ESPEAK_VOICES:
        for i, text in enumerate(ESPEAK_TEXT):
            if (i + ESPEAK_VOICES.index(voice)) % 2:  # half the sentences per voice: less synthetic speech
                continue
            with tempfile.TemporaryDirectory() as tmp:
                wav = Path(tmp) / "tts.wav"
                subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(wav), text], check=True,
                               capture_output=True, timeout=60)  # fmt: skip
                d = decode_file(wav, 3600)
            x = resample(d.samples.mean(axis=0), d.sample_rate, SR).astype(np.float64)
            out.append(Source(f"tts_{voice}", set_level(x, -26)))
    return out


def pick_speech(sources: list[Source], held: bool, rng: np.random.Generator) -> tuple[str, np.ndarray]:
    """A 3-8 s clean clip of one speaker of the partition, with short pauses around it. Real speech is drawn
    three times as often as synthetic; each talker is equally likely, however many recordings it has."""
    pool = [s for s in sources if (s.speaker in HELD_SPEAKERS) == held]
    real = sorted({s.speaker for s in pool if not s.speaker.startswith("tts_")})
    tts = sorted({s.speaker for s in pool if s.speaker.startswith("tts_")})
    speaker = real[rng.integers(len(real))] if rng.random() < 0.75 or not tts else tts[rng.integers(len(tts))]
    same = [s for s in pool if s.speaker == speaker]
    parts: list[np.ndarray] = []
    target = rng.uniform(3.0, 8.0) * SR
    while sum(p.size for p in parts) < target:
        s = same[rng.integers(len(same))].x
        length = int(min(s.size, target - sum(p.size for p in parts) + SR))
        a = int(rng.integers(0, s.size - length + 1))
        parts += [s[a : a + length], np.zeros(int(rng.uniform(0.2, 0.6) * SR))]
    pad = np.zeros(int(rng.uniform(0.3, 0.8) * SR))
    x = np.concatenate([pad, *parts[:-1], pad])[: int(9.5 * SR)]
    # the talker's room and microphone: a faint noise floor, so pauses are not digital silence
    floor = sosfilt(butter(1, 1000, "low", fs=SR, output="sos"), rng.normal(0, 1, x.size))
    return speaker, x + floor * 10 ** (rng.uniform(-72, -55) / 20) / np.std(floor)


# -- conditions -------------------------------------------------------------------------------------------


def codec_roundtrip(x: np.ndarray, sr: int, codec: str, bitrate: int = 0) -> tuple[np.ndarray, int]:
    """``x`` encoded and decoded by FFmpeg's (or sox's, for GSM 06.10) codec; returns (samples, rate)."""
    if codec == "gsm":
        return _sox_gsm(resample(x, sr, 8000)), 8000
    name, rate = {"pcm_mulaw": ("pcm_mulaw", 8000), "pcm_alaw": ("pcm_alaw", 8000), "g722": ("g722", 16000),
                  "amr_nb": ("libopencore_amrnb", 8000), "opus": ("libopus", 8000),
                  "g723_1": ("g723_1", 8000)}[codec]  # fmt: skip
    y = resample(x, sr, rate).astype(np.float64)
    pcm = (np.clip(y, -1, 1 - 1 / 32768) * 32767).astype(np.int16)
    enc = av.CodecContext.create(name, "w")
    enc.sample_rate, enc.layout, enc.format = rate, "mono", "s16"  # type: ignore[attr-defined]
    if bitrate:
        enc.bit_rate = bitrate
    enc.open()
    step = enc.frame_size or 160  # type: ignore[attr-defined]
    pcm = np.concatenate([pcm, np.zeros(-pcm.size % step + step, np.int16)])
    packets = []
    for i in range(0, pcm.size, step):
        frame = av.AudioFrame.from_ndarray(pcm[None, i : i + step], format="s16", layout="mono")
        frame.sample_rate, frame.pts = rate, i
        packets += enc.encode(frame)  # type: ignore[attr-defined]
    packets += enc.encode(None)  # type: ignore[attr-defined]
    dec = av.CodecContext.create({"libopus": "opus", "libopencore_amrnb": "amrnb"}.get(name, name), "r")
    dec.sample_rate, dec.layout = rate, "mono"  # type: ignore[attr-defined]
    out = []
    for packet in packets:
        for f in dec.decode(packet):  # type: ignore[attr-defined]
            a = f.to_ndarray().astype(np.float64).reshape(-1)
            a = a / 32768.0 if f.format.name.startswith("s16") else a
            out.append(resample(a, f.sample_rate, rate).astype(np.float64) if f.sample_rate != rate else a)
    z = np.concatenate(out)
    return z[: y.size], rate


def _sox_gsm(y: np.ndarray) -> np.ndarray:
    pcm = (np.clip(y, -1, 1 - 1 / 32768) * 32767).astype("<i2").tobytes()
    raw = ["-t", "raw", "-r", "8000", "-e", "signed", "-b", "16", "-c", "1"]
    gsm = subprocess.run(["sox", *raw, "-", "-t", "gsm", "-"], input=pcm, capture_output=True, check=True).stdout
    back = subprocess.run(["sox", "-t", "gsm", "-r", "8000", "-c", "1", "-", *raw, "-"], input=gsm,
                          capture_output=True, check=True).stdout  # fmt: skip
    return np.frombuffer(back, "<i2").astype(np.float64)[: y.size] / 32768.0


def loss_pattern(n: int, rate: float, burst: float, rng: np.random.Generator) -> np.ndarray:
    """Lost frames: Gilbert model with mean burst length ``burst`` (1 = random loss) and loss ratio ``rate``."""
    if rate <= 0:
        return np.zeros(n, bool)
    r = 1.0 / burst
    p = min(1.0, rate * r / max(1e-6, 1 - rate))
    lost, bad = np.zeros(n, bool), False
    for i in range(n):
        bad = (rng.random() < p) if not bad else (rng.random() >= r)
        lost[i] = bad
    return lost


def jitter_discards(n: int, depth_ms: float, spikes: float, rng: np.random.Generator) -> np.ndarray:
    """Frames a fixed jitter buffer of ``depth_ms`` discards: delays of exponential jitter plus delay spikes
    (a queue building up and draining), one spike per ``1/spikes`` seconds on average."""
    delay = rng.exponential(rng.uniform(3, 15), n)
    i = 0
    while i < n:
        i += int(rng.exponential(50 / max(spikes, 1e-3))) + 1
        if i < n:
            height, length = rng.uniform(60, 400), int(rng.integers(5, 40))
            delay[i : i + length] += height * np.linspace(1, 0, min(length, n - i))
    return delay > depth_ms


def apply_loss(y: np.ndarray, sr: int, lost: np.ndarray, conceal: bool) -> np.ndarray:
    """Lost 20 ms frames become silence (what a capture decoder without concealment plays) or are concealed by
    repeating the last good frame's last pitch-length stretch, fading out over consecutive losses (in the
    manner of G.711 Appendix I)."""
    n = int(sr * FRAME_MS / 1000)
    y = y.copy()
    run, last = 0, np.zeros(n)
    fade = np.linspace(0, 1, max(1, n // 10))
    for k in range(min(lost.size, y.size // n)):
        seg = slice(k * n, (k + 1) * n)
        if not lost[k]:
            if run and conceal:  # cross-fade back into real speech
                y[seg][: fade.size] = y[seg][: fade.size] * fade + last[: fade.size] * (1 - fade)
            last, run = y[seg].copy(), 0
            continue
        run += 1
        if conceal:
            period = _pitch_period(last, sr)
            rep = np.resize(last[-period:], n) * 0.8**run if run <= 3 else np.zeros(n)
            y[seg] = rep
            last = rep
        else:
            y[seg] = 0.0
    return y


def _pitch_period(frame: np.ndarray, sr: int) -> int:
    """The strongest autocorrelation lag between 2.5 and 16 ms (the pitch period), the frame when silent."""
    lo, hi = int(sr / 400), int(sr / 60)
    if frame.size < hi or not np.any(frame):
        return frame.size
    ac = np.correlate(frame, frame, "full")[frame.size - 1 :]
    return int(lo + np.argmax(ac[lo:hi]))


def babble(sources: list[Source], speaker: str, size: int, rng: np.random.Generator) -> np.ndarray:
    others = [s.x for s in sources if s.speaker != speaker]
    total = np.zeros(size)
    for _ in range(int(rng.integers(4, 9))):
        s = others[rng.integers(len(others))]
        total += np.roll(np.resize(s, size), int(rng.integers(size)))
    return total


def street(size: int, rng: np.random.Generator) -> np.ndarray:
    """Traffic-like noise: low-pass (brown-ish) noise with slow swells of passing vehicles and a little hiss."""
    brown = np.cumsum(rng.normal(0, 1, size))
    brown -= np.convolve(brown, np.ones(801) / 801, "same")
    sos = butter(2, rng.uniform(400, 1500), "low", fs=SR, output="sos")
    t = np.arange(size) / SR
    swell = 1 + sum(rng.uniform(0.5, 2) * np.exp(-(((t - rng.uniform(0, t[-1])) / rng.uniform(0.5, 2)) ** 2))
                    for _ in range(int(rng.integers(1, 4))))  # fmt: skip
    return sosfilt(sos, brown) * swell + rng.normal(0, 0.05 * np.std(brown), size)


def hum(size: int, rng: np.random.Generator) -> np.ndarray:
    f0 = 50.0 if rng.random() < 0.5 else 60.0
    t = np.arange(size) / SR
    return sum(rng.uniform(0.2, 1) / k * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) for k in range(1, 12, 2))


def add_noise(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    return x + noise * (active_rms(x) / (np.sqrt(np.mean(noise**2)) + 1e-12) * 10 ** (-snr_db / 20))


def clip(x: np.ndarray, over_db: float) -> np.ndarray:
    g = 10 ** (over_db / 20) / (np.abs(x).max() + 1e-12)
    return np.clip(x * g, -1, 1) / g


def bandlimit(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    hi = rng.uniform(1500, 3200)
    lo = rng.uniform(200, 700)
    sos = butter(6, [lo, min(hi, sr / 2 - 100)], "band", fs=sr, output="sos")
    return sosfilt(sos, x)


def echo(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    delay = int(rng.uniform(0.03, 0.4) * SR)
    gain = 10 ** (rng.uniform(-25, -3) / 20)
    path = sosfilt(butter(2, [300, 3000], "band", fs=SR, output="sos"), x)
    return x + gain * np.concatenate([np.zeros(delay), path[:-delay]])


NARROW = ["pcm_mulaw", "pcm_alaw", "amr_nb", "opus", "g723_1"]


def network(y: np.ndarray, sr: int, rng: np.random.Generator, kind: str, p: dict[str, Any]) -> np.ndarray:
    n = y.size // int(sr * FRAME_MS / 1000) + 1
    conceal = bool(rng.random() < 0.5)
    if kind == "random":
        rate = float(rng.uniform(0.005, 0.3))
        lost = loss_pattern(n, rate, 1.0, rng)
    elif kind == "bursty":
        rate, burst = float(rng.uniform(0.01, 0.3)), float(rng.uniform(2, 8))
        lost = loss_pattern(n, rate, burst, rng)
        p["burst"] = round(burst, 2)
    else:
        depth = float(rng.uniform(30, 100))
        lost = jitter_discards(n, depth, float(rng.uniform(0.1, 1.0)), rng)
        p["buffer_ms"] = round(depth, 1)
    p.update(loss=round(float(lost.mean()), 4), conceal=conceal)
    return apply_loss(y, sr, lost, conceal)


def degrade(x: np.ndarray, speaker: str, family: str, sources: list[Source], rng: np.random.Generator
            ) -> tuple[np.ndarray, int, dict[str, Any]]:  # fmt: skip
    """(degraded samples, their rate, the condition's parameters) for one family."""
    p: dict[str, Any] = {}
    sr = SR
    y = x.copy()
    codecs: list[tuple[str, int]] = []
    net = ""
    if family == "mixed" or family == "mixed_held":
        held = family == "mixed_held"
        parts = rng.choice(["noise", "codec", "net", "level", "clip"], size=int(rng.integers(2, 4)), replace=False)
        parts = list(parts) + ["codec"] if "codec" not in parts else list(parts)
        for part in parts:
            if part == "noise":
                if held:
                    kind = "street" if rng.random() < 0.5 else "babble"
                else:
                    kind = "babble" if rng.random() < 0.6 else "hum"
                if kind == "street":
                    noise = street(y.size, rng)
                else:
                    noise = babble(sources, speaker, y.size, rng) if kind == "babble" else hum(y.size, rng)
                snr = float(rng.uniform(0, 40))
                y = add_noise(y, noise, snr)
                p.update(noise=kind, snr_db=round(snr, 1))
            elif part == "codec":
                codecs = [("gsm", 0)] if held and rng.random() < 0.5 else [_random_codec(rng, held)]
            elif part == "net":
                net = "bursty" if held else ("random" if rng.random() < 0.5 else "jitter")
            elif part == "clip":
                over = float(rng.uniform(3, 20))
                y = clip(y, over)
                p["clip_db"] = round(over, 1)
    elif family in ("noise_babble", "noise_street", "hum"):
        noise = {"noise_babble": lambda: babble(sources, speaker, y.size, rng), "hum": lambda: hum(y.size, rng),
                 "noise_street": lambda: street(y.size, rng)}[family]()  # fmt: skip
        snr = float(rng.uniform(0, 40))
        y = add_noise(y, noise, snr)
        p["snr_db"] = round(snr, 1)
        codecs = [("pcm_alaw" if rng.random() < 0.5 else "pcm_mulaw", 0)]
    elif family == "clipping":
        over = float(rng.uniform(2, 24))
        y = clip(y, over)
        p["clip_db"] = round(over, 1)
        codecs = [("pcm_mulaw", 0)]
    elif family == "bandlimit":
        y = bandlimit(y, SR, rng)
        codecs = [("pcm_alaw", 0)]
    elif family == "echo":
        y = echo(y, rng)
        codecs = [("pcm_mulaw", 0)]
    elif family in ("g711", "level"):
        codecs = [("pcm_mulaw" if rng.random() < 0.5 else "pcm_alaw", 0)]
    elif family == "g722":
        codecs = [("g722", 0)]
    elif family == "amrnb":
        codecs = [("amr_nb", int(rng.choice([4750, 5150, 5900, 6700, 7400, 7950, 10200, 12200])))]
    elif family == "opus":
        codecs = [("opus", int(rng.choice([6000, 8000, 10000, 12000, 16000])))]
    elif family == "g723":
        codecs = [("g723_1", 6300)]
    elif family == "gsm":
        codecs = [("gsm", 0)]
    elif family in ("loss_random", "loss_bursty", "jitter"):
        codecs = [("pcm_mulaw" if rng.random() < 0.5 else "pcm_alaw", 0)]
        net = {"loss_random": "random", "loss_bursty": "bursty", "jitter": "jitter"}[family]
    elif family == "transcode":
        chain = [("gsm", 0), ("amr_nb", 7950), ("opus", 12000), ("g723_1", 6300), ("pcm_mulaw", 0), ("g722", 0)]
        idx = rng.choice(len(chain), size=int(rng.integers(2, 4)), replace=False)
        codecs = [chain[i] for i in idx]
    # clean: straight to 8 kHz linear PCM
    level = float(rng.uniform(-45, -10)) if family in ("level", "mixed", "mixed_held") else float(rng.uniform(-32, -18))
    if not (family in ("mixed", "mixed_held") and "clip_db" in p) and family != "clipping":
        y = set_level(y, level)
    else:
        y = y * 10 ** (level / 20) / active_rms(x)  # the clipped shape at the call's level
    p["level_dbfs"] = round(level, 1)
    p["codecs"] = [f"{c}{'@' + str(b) if b else ''}" for c, b in codecs]
    for i, (c, b) in enumerate(codecs):
        y, sr = codec_roundtrip(y, sr, c, b)
        if net and i == len(codecs) - 1:
            y = network(y, sr, rng, net, p)
    if not codecs:
        y, sr = resample(y, sr, 8000).astype(np.float64), 8000
    if net and not codecs:
        y = network(y, sr, rng, net, p)
    if rng.random() < 0.3 and sr == 8000:  # a trace of line noise on some calls
        y = y + rng.normal(0, 10 ** (rng.uniform(-75, -60) / 20), y.size)
    return np.clip(y, -1, 1), sr, p


def _random_codec(rng: np.random.Generator, held: bool) -> tuple[str, int]:
    options = [("pcm_mulaw", 0), ("pcm_alaw", 0), ("g722", 0), ("amr_nb", 5900), ("amr_nb", 12200), ("opus", 8000)]
    return options[int(rng.integers(len(options)))]


def pesq_scores(ref16: np.ndarray, deg: np.ndarray, sr: int) -> tuple[float, float]:
    """(P.862 narrowband MOS-LQO at 8 kHz, P.862.2 wideband MOS-LQO at 16 kHz)."""
    from pesq import pesq

    ref8 = resample(ref16, SR, 8000).astype(np.float64)
    deg8 = resample(deg, sr, 8000).astype(np.float64) if sr != 8000 else deg
    deg16 = resample(deg, sr, SR).astype(np.float64) if sr != SR else deg
    nb = pesq(8000, ref8, deg8, "nb")
    wb = pesq(SR, ref16, deg16, "wb")
    return float(nb), float(wb)


def refeature(path: Path) -> None:
    """Recompute every row's features with the current ``callmos.leg_features`` (no model runs again)."""
    from callqa.report import LegReport

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for row in rows:
        base = path.parent / f"clip{row['clip']:04d}"
        y = np.load(base.with_suffix(".npy")).astype(np.float32) / 32767
        leg = LegReport.model_validate_json(base.with_suffix(".json").read_text())
        row["features"] = callmos.leg_features(leg, y, row["sample_rate"])
        row["windows"] = callmos.window_features(leg)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"recomputed the features of {len(rows)} clips")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--testdata", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "callqa-mos")
    ap.add_argument("--clips", type=int, default=640)
    ap.add_argument("--first", type=int, default=0, help="start at this clip index (to build a range of the corpus "
                    "in another process and concatenate the rows and clips afterwards)")  # fmt: skip
    ap.add_argument("--held-share", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--nisqa-weights", type=Path, default=None)
    ap.add_argument("--models-dir", type=Path, default=None, help="where the NISQA ONNX export is cached")
    ap.add_argument(
        "--refeature",
        action="store_true",
        help="recompute the features of the clips built from their kept audio and leg reports",
    )
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "corpus.jsonl"
    if args.refeature:
        refeature(path)
        return
    done = set()
    if path.is_file():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row["corpus_version"] == CORPUS_VERSION and row["seed"] == args.seed:
                done.add(row["clip"])
    settings = Settings(analysis=AnalysisSettings(transcribe=False), nisqa_weights=args.nisqa_weights,
                        **({"models_dir": args.models_dir} if args.models_dir else {}))  # fmt: skip
    sources = load_sources(args.testdata)
    t0 = time.perf_counter()
    with path.open("a") as out:
        for i in range(args.first, args.clips):
            if i in done:
                continue
            rng = np.random.default_rng([args.seed, i])
            held = bool(rng.random() < args.held_share)
            families = HELD_FAMILIES if held else FIT_FAMILIES
            family = str(families[int(rng.integers(len(families)))])
            speaker, x = pick_speech(sources, held, rng)
            y, sr, params = degrade(x, speaker, family, sources, rng)
            nb, wb = pesq_scores(x, y, sr)
            report = analyze_legs([Leg("caller", f"clip{i}", y.astype(np.float32), sr)], settings)
            leg = report.legs[0]
            np.save(args.out / f"clip{i:04d}.npy", (np.clip(y, -1, 1) * 32767).astype(np.int16))
            (args.out / f"clip{i:04d}.json").write_text(leg.model_dump_json())
            row = {"corpus_version": CORPUS_VERSION, "seed": args.seed, "clip": i,
                   "partition": "held" if held else "fit", "speaker": speaker, "family": family, "params": params,
                   "sample_rate": sr, "duration_s": round(y.size / sr, 3), "pesq_nb": nb, "pesq_wb": wb,
                   "features": callmos.leg_features(leg, y.astype(np.float32), sr),
                   "windows": callmos.window_features(leg)}  # fmt: skip
            out.write(json.dumps(row) + "\n")
            out.flush()
            print(f"{i:4d} {row['partition']:4s} {family:13s} {speaker:14s} pesq {nb:.2f}/{wb:.2f} "
                  f"dnsmos {leg.mos.dnsmos.ovrl if leg.mos.dnsmos else float('nan'):.2f} "
                  f"nisqa {leg.mos.nisqa.mos if leg.mos.nisqa else float('nan'):.2f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
