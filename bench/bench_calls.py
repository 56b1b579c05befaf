"""The calls the pipeline benchmark analyses: 3-minute two-leg 8 kHz G.711 u-law calls.

- real speech: one leg of continuous read speech (every read-speech recording of the shared reference set, one
  after another with short pauses), the other of conversational turns (the reference set's conversational and
  talker recordings as turns separated by pauses of 0.4-2.5 s), both looped to 3 minutes;
- synthetic: the bundled espeak-ng example call looped to 3 minutes.

The shared recordings are read from ``../shared/testdata`` beside the checkout (``CALLQA_SHARED`` overrides it).
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
RATE = 8000
SECONDS = 180

READ_SPEECH = (  # continuous read speech: one talker after another, 0.3 s between recordings
    "audio/cmu_arctic/cmu_arctic_us_aew_a0001.wav",
    "audio/cmu_arctic/cmu_arctic_us_aew_a0002.wav",
    "audio/pjproject/input.16.wav",
    "audio/visqol/clean_speech_CA01_01.wav",
    "audio/cmu_arctic/cmu_arctic_us_axb_a0004.wav",
    "audio/cmu_arctic/cmu_arctic_us_axb_a0005.wav",
    "audio/pesq/speech.wav",
    "audio/whisper/jfk.flac",
    "audio/visqol/alignment_reference.wav",
)
CONVERSATION = (  # turns of a conversation: each recording (or channel) a turn, pauses between turns
    "audio/silero_vad/test.wav",
    "audio/faster_whisper/stereo_diarization.wav",
    "audio/pjproject/input.8.wav",
    "audio/visqol/clean_speech_transcoded_CA01_01.wav",
)


def shared_dir() -> Path:
    return Path(os.environ.get("CALLQA_SHARED", REPO.parent / "shared"))


def _load(path: Path) -> list[np.ndarray]:
    """Each channel of a recording at 8 kHz."""
    from callqa.audio.decode import decode_file
    from callqa.audio.resample import resample

    d = decode_file(path, 3600)
    return [resample(ch, d.sample_rate, RATE) for ch in d.samples]


def _fit(parts: list[np.ndarray]) -> np.ndarray:
    x = np.concatenate(parts)
    return np.tile(x, int(np.ceil(SECONDS * RATE / x.size)))[: SECONDS * RATE]


def write_ulaw(x: np.ndarray, path: Path) -> Path:
    with av.open(str(path), "w", format="wav") as c:
        stream = c.add_stream("pcm_mulaw", rate=RATE, layout="mono")
        pcm = np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = RATE
        for p in [*stream.encode(frame), *stream.encode(None)]:
            c.mux(p)
    return path


def make_real_call(out_dir: Path, shared: Path) -> list[Path] | None:
    """(read-speech leg, conversational leg), or None when the shared recordings are absent."""
    testdata = shared / "testdata"
    files = [testdata / f for f in READ_SPEECH + CONVERSATION]
    if not all(f.is_file() for f in files):
        return None
    rng = np.random.default_rng(12)
    read: list[np.ndarray] = []
    for f in READ_SPEECH:
        for ch in _load(testdata / f):
            read += [ch, np.zeros(int(0.3 * RATE), np.float32)]
    turns: list[np.ndarray] = []
    for f in CONVERSATION:
        for ch in _load(testdata / f):
            turns += [ch, np.zeros(int(rng.uniform(0.4, 2.5) * RATE), np.float32)]
    return [write_ulaw(_fit(read), out_dir / "real-agent.wav"), write_ulaw(_fit(turns), out_dir / "real-customer.wav")]


def make_synthetic_call(out_dir: Path) -> list[Path]:
    """The bundled example legs looped to 3 minutes."""
    from callqa.audio.decode import decode_file

    paths = []
    for who in ("agent", "customer"):
        x = decode_file(REPO / "examples" / f"call-{who}.wav", 3600).samples[0]
        paths.append(write_ulaw(_fit([x]), out_dir / f"synthetic-{who}.wav"))
    return paths
