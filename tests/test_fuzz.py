"""Fuzzing: real recordings (WAV, µ-law WAV, MP3, FLAC) and real captures, mutated by Hypothesis (bit flips,
byte overwrites, truncation, header fields set to extremes), go through the parsers and the first stages of the
analysis. Each input must end in a result or a typed error (what the CLI turns into exit 0 or 2: never a
traceback), within a memory bound (tracemalloc peak, numpy included) and a time bound.

The run is bounded for CI (``CALLQA_FUZZ_EXAMPLES`` per target, 25 by default, derandomised so that CI is
reproducible; set ``CALLQA_FUZZ_RANDOM=1`` and a larger count to explore). Inputs that once failed are kept in
``fuzz_corpus.json`` as recipes (a shared file and the mutations that broke it; the shared files are never
copied into the repository) and replayed every run, in process and through the CLI.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, TESTDATA
from hostile import rtp_offsets

from callqa.audio.levels import measure_levels
from callqa.audio.resample import resample
from callqa.audio.silences import detect_silences
from callqa.capture.calls import read_capture
from callqa.capture.media import UnsupportedCodec
from callqa.config import AnalysisSettings, LimitSettings, Settings
from callqa.errors import CallqaError
from callqa.service.captures import decode_leg
from callqa.service.recordings import legs_from_files

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given  # noqa: E402
from hypothesis import settings as hsettings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

EXAMPLES = int(os.environ.get("CALLQA_FUZZ_EXAMPLES", "25"))
RANDOM = os.environ.get("CALLQA_FUZZ_RANDOM") == "1"
PEAK_BYTES = 300 * 1024**2  # per input, with the limits below
SECONDS = 10.0  # per input
CORPUS = Path(__file__).with_name("fuzz_corpus.json")
# the limits the fuzzed inputs run under: the defaults, with the decoded size scaled to the inputs' sizes
LIMITS = LimitSettings(max_decoded_bytes=128 * 1024**2)
SETTINGS = Settings(analysis=AnalysisSettings(nisqa=False, dnsmos=False, max_leg_duration_s=600), limits=LIMITS)

Mutation = tuple[str, int, int]  # (kind, position, value)


def mutate(data: bytes, mutations: list[Mutation]) -> bytes:
    """Apply ``flip`` (bit ``value`` of byte ``position``), ``set`` (a byte), ``set16``/``set32`` (a little-endian
    field: 0 when ``value`` is 0, all ones when 1, else ``value``), ``add32be`` (add to a big-endian field) and
    ``cut`` (truncate at ``position``)."""
    out = bytearray(data)
    for kind, pos, value in mutations:
        if not out:
            break
        pos %= len(out)
        if kind == "flip":
            out[pos] ^= 1 << (value % 8)
        elif kind == "set":
            out[pos] = value % 256
        elif kind in ("set16", "set32"):
            n = 2 if kind == "set16" else 4
            field = (b"\xff" if value % 2 else b"\x00") * n if value < 2 else int(value).to_bytes(8, "little")[:n]
            out[pos : pos + n] = field[: len(out) - pos]
        elif kind == "add32be":  # e.g. an RTP timestamp moved on by ``value`` ticks
            field = int.from_bytes(out[pos : pos + 4].ljust(4, b"\0"), "big")
            out[pos : pos + 4] = ((field + value) % 2**32).to_bytes(4, "big")[: len(out) - pos]
        elif kind == "cut":
            del out[max(1, pos) :]
    return bytes(out)


def mutations(size: int, hot: list[int]) -> st.SearchStrategy[list[Mutation]]:
    """Mutations biased to the header (first 64 bytes) and to ``hot`` positions (e.g. RTP headers)."""
    where = st.one_of(st.integers(0, 63), st.integers(0, max(0, size - 1)),
                      st.sampled_from(hot or [0]).flatmap(lambda p: st.integers(p, p + 11)))  # fmt: skip
    one = st.tuples(st.sampled_from(["flip", "set", "set16", "set32", "add32be", "cut"]), where,
                    st.one_of(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, 2**31, 2**32 - 1]),
                              st.integers(0, 2**32 - 1)))  # fmt: skip
    return st.lists(one, min_size=1, max_size=16)


def bounded(run: Callable[[], object]) -> None:
    """``run`` returns or raises a CallqaError, within PEAK_BYTES and SECONDS."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        run()
    except CallqaError:
        pass
    finally:
        seconds = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < PEAK_BYTES, f"peak {peak / 1e6:.0f} MB"
    assert seconds < SECONDS, f"{seconds:.1f} s"


def analyse_recording(path: Path) -> None:
    """What `callqa analyze` does up to the models: decode, form legs, levels, silences, 16 kHz for the VAD."""
    legs, _ = legs_from_files([path], SETTINGS)
    for leg in legs:
        measure_levels(leg.samples, 0.98)
        detect_silences(leg.samples, leg.sample_rate, -50.0, 2.0)
        resample(leg.samples, leg.sample_rate, 16000)


def analyse_capture(path: Path) -> None:
    """What `callqa pcap` does up to the models: parse, assemble calls, measure streams, decode each leg."""
    from callqa.capture.stats import measure_stream

    for call in read_capture(path).calls:
        for role, streams in call.streams.items():
            for s in streams:
                measure_stream(call, s, role, SETTINGS.analysis.jitter_buffer_ms)
            with contextlib.suppress(UnsupportedCodec):  # named in the report; the other legs go on
                decode_leg(call, streams, SETTINGS.analysis.max_leg_duration_s, LIMITS)


RECORDINGS = {"wav": "audio/pjproject/input.8.wav", "flac": "audio/whisper/jfk.flac"}
CAPTURES = {"g711": "pcap/sipnab/sip-rtp-g711.pcap", "g729": "pcap/rtpproxy/lost.a.rtp",
            "g722": "pcap/sipnab/sip-rtp-g722.pcap"}  # fmt: skip


def generated_seeds(tmp: Path) -> dict[str, bytes]:
    """Without the reference set: generated speech and captures of the same kinds (G.729 has no encoder in
    FFmpeg, so its place is taken by a G.711 A-law capture)."""
    from hostile import one_way_calls, speech_wav

    wav = speech_wav(tmp / "speech.wav", 8.0)
    flac = tmp / "speech.flac"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(wav), "-ar", "16000", str(flac)], check=True, timeout=60)
    return {"wav": wav.read_bytes(), "flac": flac.read_bytes(), "g711": one_way_calls(tmp / "u.pcap").read_bytes(),
            "g729": one_way_calls(tmp / "a.pcap", codec="PCMA").read_bytes(),
            "g722": one_way_calls(tmp / "g722.pcap", codec="G722").read_bytes()}  # fmt: skip


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Real recordings and captures from the reference set when it is present, else generated ones."""
    tmp = tmp_path_factory.mktemp("seeds")
    if TESTDATA.is_dir():
        out = {name: (TESTDATA / rel).read_bytes() for name, rel in {**RECORDINGS, **CAPTURES}.items()}
    else:
        out = generated_seeds(tmp)
    out["flac"] = out["flac"][: 160 * 1024]  # the first seconds: a whole minute per example is not needed
    out["ulaw"] = (REPO / "examples/call-agent.wav").read_bytes()[: 64 * 1024]
    wav = tmp / "seed.wav"
    wav.write_bytes(out["wav"])
    mp3 = tmp / "speech.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(wav), "-c:a", "libmp3lame", "-b:a", "32k", str(mp3)],
                   check=True, timeout=60)  # fmt: skip
    out["mp3"] = mp3.read_bytes()
    # warm up outside the bounds: the first call imports scipy's filters and FFmpeg's codecs
    analyse_recording(mp3)
    g711 = tmp / "seed.pcap"
    g711.write_bytes(out["g711"])
    analyse_capture(g711)
    return out


def fuzz_settings() -> hsettings:
    return hsettings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, database=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                            HealthCheck.data_too_large])  # fmt: skip


@pytest.mark.parametrize("kind", ["wav", "ulaw", "mp3", "flac"])
def test_fuzz_recordings(kind: str, seeds: dict[str, bytes], tmp_path: Path) -> None:
    data = seeds[kind]

    @fuzz_settings()
    @given(mutations(len(data), []))
    def run(ms: list[Mutation]) -> None:
        f = tmp_path / f"fuzzed.{'wav' if kind == 'ulaw' else kind}"
        f.write_bytes(mutate(data, ms))
        bounded(lambda: analyse_recording(f))

    run()


@pytest.mark.parametrize("kind", sorted(CAPTURES))
def test_fuzz_captures(kind: str, seeds: dict[str, bytes], tmp_path: Path) -> None:
    data = seeds[kind]
    hot = rtp_offsets(data)

    @fuzz_settings()
    @given(mutations(len(data), hot))
    def run(ms: list[Mutation]) -> None:
        f = tmp_path / "fuzzed.pcap"
        f.write_bytes(mutate(data, ms))
        bounded(lambda: analyse_capture(f))

    run()


# --- inputs that once failed ------------------------------------------------------------------------------------


def corpus() -> list[dict[str, object]]:
    return list(json.loads(CORPUS.read_text()))


def rebuild(entry: dict[str, object], tmp_path: Path) -> Path:
    data = (TESTDATA / str(entry["source"])).read_bytes()
    ms = [(str(k), int(p), int(v)) for k, p, v in entry["mutations"]]  # type: ignore[attr-defined]
    f = tmp_path / f"{entry['name']}{Path(str(entry['source'])).suffix}"
    f.write_bytes(mutate(data, ms))
    return f


@pytest.mark.parametrize("entry", corpus(), ids=lambda e: str(e["name"]))
def test_corpus_in_process(entry: dict[str, object], tmp_path: Path, testdata: Path) -> None:
    f = rebuild(entry, tmp_path)
    bounded(lambda: (analyse_capture if entry["kind"] == "capture" else analyse_recording)(f))


def test_corpus_through_the_cli(tmp_path: Path, testdata: Path) -> None:
    """Every corpus input through the real CLI: exit 0 or 2, never a traceback."""
    env = {**os.environ, "CALLQA_DB": str(tmp_path / "s.db"), "CALLQA_ANALYSIS__NISQA": "false",
           "CALLQA_ANALYSIS__DNSMOS": "false"}  # fmt: skip
    for entry in corpus():
        f = rebuild(entry, tmp_path)
        cmd = ["pcap", str(f), "--stats-only"] if entry["kind"] == "capture" else ["analyze", str(f)]
        proc = subprocess.run([sys.executable, "-m", "callqa.cli", *cmd, "--no-cache"], capture_output=True,
                              text=True, env=env, timeout=120, cwd=REPO)  # fmt: skip
        assert proc.returncode in (0, 2) and "Traceback" not in proc.stderr, (entry["name"], proc.stderr[-2000:])


def test_mutations_are_what_they_say() -> None:
    data = bytes(range(16))
    assert mutate(data, [("flip", 1, 0)])[1] == 0
    assert mutate(data, [("set32", 4, 1)])[4:8] == b"\xff" * 4
    assert mutate(data, [("cut", 5, 0)]) == data[:5]
    assert np.frombuffer(mutate(data, [("set16", 0, 0)])[:2], "<u2")[0] == 0
