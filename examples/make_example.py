"""Make the bundled example call: two G.711 u-law legs (agent, customer) from speech synthesised by espeak-ng.

    python examples/make_example.py [OUT_DIR]

The agent and the customer take turns; one 12-second pause (both waiting on a lookup) is dead air that the
analysis reports. Needs espeak-ng on the PATH; the generated files are committed so the example works offline.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import av
import numpy as np

RATE = 8000
TURNS = [  # (start second, speaker, voice, text)
    (0.5, "agent", "en-us+m3", "Thank you for calling Acme support, this call may be recorded. How can I help?"),
    (6.0, "customer", "en-gb+f2", "Hi, my internet has been dropping every evening since Monday."),
    (11.0, "agent", "en-us+m3", "I'm sorry to hear that. Let me look up your line, one moment please."),
    (28.5, "customer", "en-gb+f2", "Are you still there?"),
    (31.0, "agent", "en-us+m3", "Yes, thanks for waiting. I can see errors on your line, I will send an engineer."),
    (37.5, "customer", "en-gb+f2", "Great, thank you very much. Goodbye."),
]
DURATION_S = 41.0


def synthesise(text: str, voice: str, tmp: Path) -> np.ndarray:
    wav = tmp / "tts.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(wav), text], check=True, timeout=60)
    with av.open(str(wav)) as c:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        frames = [r for f in c.decode(audio=0) for r in resampler.resample(f)]
        frames += resampler.resample(None)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames])


def write_ulaw(path: Path, x: np.ndarray) -> None:
    with av.open(str(path), "w", format="wav") as c:
        stream = c.add_stream("pcm_mulaw", rate=RATE, layout="mono")
        pcm = np.clip(x * 32767, -32768, 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        for packet in stream.encode(frame):
            c.mux(packet)
        for packet in stream.encode(None):
            c.mux(packet)


def main(out_dir: Path) -> None:
    rng = np.random.default_rng(7)
    legs = {"agent": np.zeros(int(DURATION_S * RATE)), "customer": np.zeros(int(DURATION_S * RATE))}
    with tempfile.TemporaryDirectory() as tmp:
        for start, who, voice, text in TURNS:
            speech = synthesise(text, voice, Path(tmp))
            speech *= 10 ** (-20 / 20) / max(np.sqrt(np.mean(speech**2)), 1e-9)  # about -20 dBFS RMS
            i = int(start * RATE)
            legs[who][i : i + speech.size] += speech[: legs[who].size - i]
    out_dir.mkdir(parents=True, exist_ok=True)
    for who, x in legs.items():
        x += rng.normal(0, 10 ** (-62 / 20), x.size)  # a faint line-noise floor, as real legs have
        write_ulaw(out_dir / f"call-{who}.wav", x)
        print(out_dir / f"call-{who}.wav")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
