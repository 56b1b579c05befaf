"""Bounds on hostile input: each is checked before the work it bounds is allocated, and each violation is a
clear error naming its setting (exit 2 in the CLI, 413 in the API), in bounded memory and time."""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, write_wav
from hostile import one_way_calls, rtp_offsets, shift_rtp_timestamp, speech_wav, wav_with

from callqa.audio.decode import decode_file
from callqa.audio.resample import resample
from callqa.capture.calls import Tracker
from callqa.capture.live_audio import LiveAudio
from callqa.capture.media import check_leg
from callqa.config import LimitSettings, Settings
from callqa.errors import DecodeError, LimitError
from callqa.protocol.pcap import CaptureFile
from callqa.protocol.rtp import RtpPacket
from callqa.service.captures import analyze_capture

MEMORY_CAP = 1536 * 1024**2  # address space allowed to a CLI run here (a regression fails instead of swapping)


def run_cli(*args: str, db: Path) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """``callqa ARGS`` under an address-space cap: (process, seconds, its peak RSS in MB)."""
    env = {**os.environ, "CALLQA_DB": str(db), "CALLQA_ANALYSIS__NISQA": "false"}

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    out, err = db.with_suffix(".out"), db.with_suffix(".err")
    t0 = time.monotonic()
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen([sys.executable, "-m", "callqa.cli", *args], stdout=o, stderr=e, env=env,
                                cwd=REPO, preexec_fn=cap)  # fmt: skip
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(), err.read_text())
    return done, seconds, usage.ru_maxrss / 1024


# --- recordings -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A speech WAV, two one-way G.711 calls of 8.5 s, and one call of 110 s of RTP, all generated."""
    d = tmp_path_factory.mktemp("inputs")
    return {"wav": speech_wav(d / "speech.wav"), "g711": one_way_calls(d / "prompts.pcap"),
            "long": one_way_calls(d / "long.pcap", 1, 110.0, "PCMA")}  # fmt: skip


def test_giga_hertz_sample_rate_is_refused_from_the_header(tmp_path: Path, inputs: dict[str, Path]) -> None:
    """A 128 KB WAV whose header declares 1.6 GHz (the reported reproduction) made the resampler allocate
    without limit: it is now refused before decoding, through the CLI, with exit 2 naming the limit."""
    data = inputs["wav"].read_bytes()
    f = tmp_path / "ghz.wav"
    f.write_bytes(wav_with(data, rate=1_600_000_001, byte_rate=3_200_000_002)[: 128 * 1024])
    proc, seconds, _ = run_cli("analyze", str(f), db=tmp_path / "s.db")
    assert proc.returncode == 2, proc.stderr
    assert "limits.max_sample_rate" in proc.stderr and "Traceback" not in proc.stderr
    assert seconds < 30
    with pytest.raises(LimitError, match="1600000001 Hz"):
        decode_file(f, 7200)
    # a limit is a setting: a file at 48 kHz passes the default and is refused under a lower one
    ok = write_wav(tmp_path / "48k.wav", np.zeros(4800), 48000)
    assert decode_file(ok, 60).sample_rate == 48000
    with pytest.raises(LimitError, match="limits.max_sample_rate"):
        decode_file(ok, 60, limits=LimitSettings(max_sample_rate=16000))


def test_channels_and_decoded_size_are_bounded(tmp_path: Path) -> None:
    f = write_wav(tmp_path / "nine.wav", np.zeros((9, 80)), 8000)
    with pytest.raises(LimitError, match="9 channels.*limits.max_channels"):
        decode_file(f, 60)
    g = write_wav(tmp_path / "long.wav", np.zeros(80000), 8000)  # 10 s = 320 000 bytes as float32
    assert decode_file(g, 60, limits=LimitSettings(max_decoded_bytes=400_000)).duration_s == 10
    with pytest.raises(LimitError, match="limits.max_decoded_bytes"):
        decode_file(g, 60, limits=LimitSettings(max_decoded_bytes=200_000))


def test_resampler_refuses_absurd_ratios() -> None:
    with pytest.raises(LimitError):
        resample(np.zeros(100, np.float32), 1_600_000_001, 16000)
    assert resample(np.zeros(480, np.float32), 48000, 16000).size == 160


def test_unknown_extensible_sub_format_is_a_decode_error(tmp_path: Path, inputs: dict[str, Path]) -> None:
    """WAVE_FORMAT_EXTENSIBLE with a sub-format GUID FFmpeg has no decoder for: an AttributeError (HTTP 500,
    traceback and exit 1) before; a DecodeError (exit 2) now."""
    src = inputs["wav"]
    ext = tmp_path / "ext.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), "-ac", "2", "-c:a", "pcm_s24le", str(ext)],
                   check=True, timeout=60)  # fmt: skip
    data = bytearray(ext.read_bytes())
    fmt = data.find(b"fmt ")
    assert struct.unpack_from("<H", data, fmt + 8)[0] == 0xFFFE  # extensible
    struct.pack_into("<H", data, fmt + 8 + 24, 0x4242)  # the GUID's leading format tag: no such codec
    bad = tmp_path / "bad-ext.wav"
    bad.write_bytes(bytes(data))
    with pytest.raises(DecodeError, match="no decoder"):
        decode_file(bad, 60)
    proc, _, _ = run_cli("analyze", str(bad), db=tmp_path / "s.db")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr


# --- captures ---------------------------------------------------------------------------------------------------


def test_rtp_timestamp_jump_is_refused_quickly(tmp_path: Path, inputs: dict[str, Path]) -> None:
    """One RTP timestamp moved 37 hours ahead (four flipped bytes) in a real capture stretched the leg's
    timeline to gigabytes: now that direction is not decoded (a warning naming the limit) while the capture's
    calls are still reported and measured, in little memory and time."""
    data = inputs["g711"].read_bytes()
    f = tmp_path / "jump.pcap"
    f.write_bytes(shift_rtp_timestamp(data, 100, 2**30))
    proc, seconds, peak_mb = run_cli("pcap", "--jsonl", str(f), "--no-cache", db=tmp_path / "s.db")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    reports = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(reports) == 2  # both calls of the capture are reported
    refused = [w for r in reports for w in r["warnings"] if "limits.max_rtp_jump_s" in w]
    assert len(refused) == 1 and "not decoded" in refused[0]
    assert seconds < 30 and peak_mb < 600
    # the same capture untouched analyses as before; with statistics only the forged one is measured
    settings = Settings(db=tmp_path / "s2.db")
    reports, _ = analyze_capture(f, settings, None, stats_only=True)
    assert sum(s.packets for r in reports for s in r.streams) == len(rtp_offsets(data))


def test_jump_within_the_bound_is_silence_on_the_timeline(tmp_path: Path, inputs: dict[str, Path]) -> None:
    data = inputs["g711"].read_bytes()
    f = tmp_path / "small-jump.pcap"
    f.write_bytes(shift_rtp_timestamp(data, 100, 8000 * 20))  # 20 s ahead: odd, within the bound
    settings = Settings(db=tmp_path / "s.db")
    settings = settings.model_copy(update={"analysis": settings.analysis.model_copy(update={"nisqa": False})})
    reports, _ = analyze_capture(f, settings, None)
    assert max(leg.duration_s for r in reports for leg in r.legs) > 20  # the packet is placed 20 s on
    tight = settings.model_copy(update={"limits": LimitSettings(max_rtp_jump_s=2.0)})
    reports, _ = analyze_capture(f, tight, None)
    assert any("limits.max_rtp_jump_s" in w for r in reports for w in r.warnings)
    assert max(leg.duration_s for r in reports for leg in r.legs) < 20  # that direction was not decoded


def test_leg_bounds_streams_payloads_and_span(inputs: dict[str, Path]) -> None:
    from callqa.capture.calls import read_capture

    call = read_capture(inputs["g711"]).calls[0]
    streams = [(s.packets, call.encodings.get(s.key) or {}) for sts in call.streams.values() for s in sts]
    check_leg(streams, LimitSettings(), 7200)
    with pytest.raises(LimitError, match="limits.max_streams_per_call"):
        check_leg(streams * 3, LimitSettings(max_streams_per_call=2), 7200)
    check_leg(streams, LimitSettings(max_rtp_payload_bytes=160), 7200)  # 20 ms of G.711 is 160 bytes
    packets = list(streams[0][0])
    big = RtpPacket(packets[5].arrival, packets[5].seq, packets[5].timestamp, packets[5].pt, False, b"\xff" * 3000)
    with pytest.raises(LimitError, match="3000 bytes.*limits.max_rtp_payload_bytes"):
        check_leg([([*packets[:5], big, *packets[6:]], streams[0][1])], LimitSettings(), 7200)
    with pytest.raises(LimitError, match="max_leg_duration_s"):
        check_leg(streams, LimitSettings(), 5)
    with pytest.raises(LimitError, match="limits.max_decoded_bytes"):
        check_leg(streams, LimitSettings(max_decoded_bytes=100_000), 7200)


def test_live_follower_skips_a_forged_window_and_goes_on(inputs: dict[str, Path]) -> None:
    """The sniffer's live path shares the decoder: a forged timestamp costs that poll's audio, not gigabytes,
    and the stream is followed again from the next poll."""
    data = inputs["g711"].read_bytes()
    forged = shift_rtp_timestamp(data, 100, 2**30)
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"forged-{os.getpid()}.pcap"
    path.write_bytes(forged)
    fed: list[int] = []

    class Sink:
        def feed(self, call_id, leg, pcm, rate, call_time_s, arrival=None) -> None:  # type: ignore[no-untyped-def]
            fed.append(pcm.size)

        def end_call(self, call_id: str) -> None:
            pass

    try:
        tracker, follower = Tracker(), LiveAudio(Sink())
        for n, frame in enumerate(CaptureFile(path).frames()):
            tracker.feed_frame(frame.ts, frame.linktype, frame.data)
            if n % 40 == 0:
                follower.poll(tracker)
        follower.poll(tracker)
    finally:
        path.unlink()
    assert follower.refused == 1 and "limits.max_rtp_jump_s" in follower.warnings[0]
    assert max(fed) < 8000 * 10 and sum(fed) > 8000 * 10  # pieces of a second, most of the 17 s fed


def test_live_follower_bounds_the_streams_of_a_call(inputs: dict[str, Path]) -> None:
    path = inputs["g711"]
    fed: set[tuple[str, str]] = set()

    class Sink:
        def feed(self, call_id, leg, pcm, rate, call_time_s, arrival=None) -> None:  # type: ignore[no-untyped-def]
            fed.add((call_id, leg))

        def end_call(self, call_id: str) -> None:
            pass

    tracker = Tracker()
    for frame in CaptureFile(path).frames():
        tracker.feed_frame(frame.ts, frame.linktype, frame.data)
    calls = tracker.finish()
    assert all(sum(len(s) for s in c.streams.values()) == 1 for c in calls)  # one stream per call here
    follower = LiveAudio(Sink(), LimitSettings(max_streams_per_call=1))
    follower.poll(tracker)
    assert len(fed) == 2 and not follower.warnings
    for call in calls:  # the same stream twice in a call: the second one is over the bound
        leg, streams = next(iter(call.streams.items()))
        call.streams["callee" if leg == "caller" else "caller"] = list(streams)
        follower.poll_call(call)
    assert "limits.max_streams_per_call" in follower.warnings[0]


def test_replay_faster_than_real_time_is_not_a_jump(inputs: dict[str, Path]) -> None:
    """Captures replayed ten times faster (HEP agents, benchmarks) move their timestamps on 10 ms per 1 ms of
    arrival time over the whole call: no single jump, so nothing is refused."""
    from callqa.capture.calls import read_capture

    call = read_capture(inputs["long"]).calls[0]  # 110 s of RTP
    (stream,) = [s for sts in call.streams.values() for s in sts]
    packets = list(stream.packets)
    t0 = packets[0].arrival
    fast = [RtpPacket(t0 + (p.arrival - t0) / 10, p.seq, p.timestamp, p.pt, p.marker, p.payload) for p in packets]
    enc = call.encodings.get(stream.key) or {}
    check_leg([(fast, enc)], LimitSettings(), 7200)  # 110 s of audio arriving in 11 s
    last = fast[-1]  # the last packet's timestamp 61 s on: the timeline would end a minute later than it does
    forged = [*fast[:-1], RtpPacket(last.arrival, last.seq, last.timestamp + 8000 * 61, last.pt, False,
                                    last.payload)]  # fmt: skip
    with pytest.raises(LimitError, match="jump 6[01] s.*limits.max_rtp_jump_s"):
        check_leg([(forged, enc)], LimitSettings(), 7200)
