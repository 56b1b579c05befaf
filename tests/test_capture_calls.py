"""Calls from captures: dialogs, directions, decoding, and the report through the common pipeline.

The behaviour is checked on generated captures (``captures.py``: known content, known impairments); the same
behaviours on real captures by others (with their quirks: comfort noise, PRACK, Opus, SIP over TCP, rtpproxy's
recordings) are checked where the reference set is present."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import captures
import numpy as np
import pytest
from captures import Call, Srtp, Stream
from test_cli import callqa

from callqa.capture.calls import read_capture
from callqa.config import Settings
from callqa.report import LegReport
from callqa.service.captures import analyze_capture


def streams_of(call) -> dict[str, list[tuple]]:  # type: ignore[no-untyped-def]
    return {role: [s.key for s in sts] for role, sts in call.streams.items()}


def test_two_sequential_calls_keep_their_own_streams(testdata: Path) -> None:
    cap = read_capture(testdata / "pcap/sipnab/sip-rtp-g711.pcap")
    assert [c.dialog.call_id for c in cap.calls] == ["1-1966@10.0.2.20", "1-1968@10.0.2.20"]
    first, second = cap.calls
    assert [k[4] for k in streams_of(first)["callee"]] != [k[4] for k in streams_of(second)["callee"]]
    assert first.encodings[first.streams["callee"][0].key][0] == ("PCMU", 8000)
    assert second.encodings[second.streams["callee"][0].key][8] == ("PCMA", 8000)


def test_directions_follow_the_sdp(testdata: Path) -> None:
    (call,) = read_capture(testdata / "pcap/sipnab/rtp-protocol.pcap").calls
    assert call.dialog.caller[0] == "10.33.6.101"
    assert [k[0] for k in streams_of(call)["caller"]] == ["10.33.6.101"]
    assert [k[0] for k in streams_of(call)["callee"]] == ["10.33.6.100"]
    assert call.dialog.end_reason == "callee hung up (BYE)"


def test_declined_call_and_answered_call(testdata: Path) -> None:
    declined, answered = read_capture(testdata / "pcap/sipnab/SIP_DTMF2.cap").calls
    assert declined.dialog.end_reason == "not answered: 603 Decline" and not declined.streams
    assert set(answered.streams) == {"caller", "callee"}
    callee = answered.streams["callee"][0]
    assert answered.encodings[callee.key][96] == ("telephone-event", 8000)


def test_sip_over_tcp_call_has_both_directions(testdata: Path) -> None:
    (call,) = read_capture(testdata / "pcap/sipnab/sip-over-tcp.pcap").calls
    assert call.dialog.messages == 7 and call.dialog.end_reason == "callee hung up (BYE)"
    assert set(call.streams) == {"caller", "callee"}


def test_reinvite_codec_change_gives_a_stream_per_codec(testdata: Path) -> None:
    (call,) = read_capture(testdata / "pcap/sipnab/register-invite-reinvite-bye.pcap").calls
    for role in ("caller", "callee"):
        codecs = {call.encodings[s.key][s.packets[0].pt][0].upper() for s in call.streams[role]}
        assert codecs == {"PCMU", "OPUS"}


def test_nat_alias_setting(testdata: Path) -> None:
    # the SDP names 10.33.6.100; pretend media arrived from a public address by aliasing it away and back
    cap = read_capture(testdata / "pcap/sipnab/rtp-protocol.pcap", {"10.33.6.100": "203.0.113.9"})
    (call,) = cap.calls
    assert call.matched_by == "sdp port (NAT)"  # the address no longer matches: associated by port
    assert set(call.streams) == {"caller", "callee"}


def assert_wav_of(path: Path, leg: LegReport) -> None:
    """``path`` is the leg's audio: mono, at the leg's rate, as long as the leg."""
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getframerate()) == (1, leg.sample_rate)
        assert w.getnframes() / w.getframerate() == pytest.approx(leg.duration_s, abs=0.01)


def test_capture_report_through_the_pipeline(testdata: Path, settings: Settings, tmp_path: Path) -> None:
    reports, warnings = analyze_capture(testdata / "pcap/sipnab/sip-rtp-g722.pcap", settings, wav_dir=tmp_path)
    (report,) = reports
    assert report.source == "capture" and report.sip and report.sip.call_id == "1-2161@10.0.2.20"
    (leg,) = report.legs
    assert (leg.role, leg.codec, leg.sample_rate) == ("callee", "G722", 16000)
    assert leg.speech_ratio > 0.5 and leg.rtp and leg.rtp.packets == 425 and leg.rtp.lost == 0
    assert leg.mos.dnsmos and leg.mos.dnsmos.ovrl > 2.5
    # the caller sent no RTP in an answered call: one-way audio
    assert [(f.code, f.severity, f.leg) for f in report.findings] == [("one_way_audio", "critical", "caller")]
    (wav,) = tmp_path.glob("*.wav")
    assert_wav_of(wav, leg)


def test_loss_lowers_network_mos_and_is_reported(testdata: Path, settings: Settings) -> None:
    (lossy,), _ = analyze_capture(testdata / "pcap/rtpproxy/lost.a.rtp", settings, stats_only=True)
    (clean,), _ = analyze_capture(testdata / "pcap/rtpproxy/lost.o.rtp", settings, stats_only=True)
    assert lossy.streams[0].lost == 321 and clean.streams[0].lost == 0
    assert lossy.streams[0].network_mos < 2.0 < 4.0 < clean.streams[0].network_mos
    assert [f.code for f in lossy.findings] == ["packet_loss"] and lossy.verdict == "failed"
    assert lossy.legs == [] and lossy.sip is None  # stats only; RTP without SIP


def test_unsupported_codec_is_named_and_still_measured(testdata: Path, settings: Settings) -> None:
    reports, _ = analyze_capture(testdata / "pcap/ndpi/rtp.pcapng", settings)
    undecoded = [w for r in reports for w in r.warnings if "not decoded" in w]
    assert undecoded and any("payload type" in w for w in undecoded)
    assert all(r.streams for r in reports)


def test_cli_pcap_json_and_stats_only(testdata: Path, tmp_path: Path) -> None:
    cap = str(testdata / "pcap/sipnab/rtp-protocol.pcap")
    lines = callqa("pcap", cap, "--jsonl", "--wav-dir", str(tmp_path / "wav"), db=tmp_path / "s.db").stdout
    (report,) = [json.loads(line) for line in lines.splitlines()]
    assert report["sip"]["from"] == "sip:MP114.FXS1@192.168.2.160"
    assert {s["leg"] for s in report["streams"]} == {"caller", "callee"}
    assert set(report["streams"][0]) >= {"ssrc", "src", "dst", "payload", "packets", "expected", "lost",
                                         "duplicates", "out_of_order", "max_delta_ms", "max_jitter_ms",
                                         "mean_jitter_ms", "network_mos"}  # fmt: skip
    assert sorted(p.name.rsplit("-", 1)[1] for p in (tmp_path / "wav").iterdir()) == ["callee.wav", "caller.wav"]
    stats = json.loads(callqa("pcap", cap, "--jsonl", "--stats-only", db=tmp_path / "s.db").stdout.splitlines()[0])
    assert stats["legs"] == [] and len(stats["streams"]) == 2
    bad = tmp_path / "junk.pcap"
    bad.write_bytes(b"\x00" * 64)
    proc = callqa("pcap", str(bad), db=tmp_path / "s.db", check=False)
    assert proc.returncode == 2 and "not a pcap" in proc.stderr


def dtmf_reference(testdata: Path) -> dict[str, str]:
    lines = (testdata / "tables/dtmf_reference.tsv").read_text().splitlines()[1:]
    return {row.split("\t")[0]: row.split("\t")[3].split(" (")[0] for row in lines}


def test_dtmf_digits_match_reference(testdata: Path, settings: Settings) -> None:
    for name, digits in dtmf_reference(testdata).items():
        reports, _ = analyze_capture(testdata / name, settings, stats_only=True)
        found = " ".join(d.digit for r in reports for d in r.dtmf)
        assert found == digits, name
    (_, answered), _ = analyze_capture(testdata / "pcap/sipnab/SIP_DTMF2.cap", settings, stats_only=True)
    assert {d.leg for d in answered.dtmf} == {"callee"}  # sent by 192.168.105.172, the called phone
    assert all(40 <= d.duration_ms <= 1000 for d in answered.dtmf)


def test_call_without_bye_ends_with_its_media(testdata: Path, settings: Settings) -> None:
    reports, _ = analyze_capture(testdata / "pcap/sipnab/SIP_DTMF2.cap", settings, stats_only=True)
    answered = reports[1]
    assert answered.sip.end_reason == "no BYE: RTP stopped"
    last = max(s.end_s for s in answered.streams)
    assert (answered.sip.ended_at - answered.sip.started_at).total_seconds() == pytest.approx(last, abs=0.01)


ALICE = "AES_CM_128_HMAC_SHA1_80:9sOd+W72ilwfNgNt0FzlGYj6YZPMqN1sJJx43UuS"  # rtpproxy's alice_to_bob.args
BOB = "AES_CM_128_HMAC_SHA1_80:NhqBK/JjtVJgmOgPyDKpvMTEjvFCQ4eiyVQelF6x"


def test_srtp_decrypted_with_the_right_key_only(testdata: Path, settings: Settings) -> None:
    keyed = settings.model_copy(update={"srtp_keys": [BOB, ALICE]})
    for name in ("alice_srtp.pcap", "bob_srtp.pcap"):
        (report,), _ = analyze_capture(testdata / "pcap/rtpproxy" / name, keyed)
        (stream,) = report.streams
        assert stream.note == "SRTP AES_CM_128_HMAC_SHA1_80, decrypted" and stream.packets > 1500
        assert report.legs[0].speech_ratio > 0.3  # decrypted G.722 is speech
    (plain,), _ = analyze_capture(testdata / "pcap/rtpproxy/bob_srtp.pcap", settings)
    assert plain.streams[0].note == "" and plain.legs[0].speech_ratio < 0.1  # ciphertext decodes to noise


def test_srtp_key_parsing() -> None:
    from callqa.errors import ParseError
    from callqa.protocol.srtp import SrtpContext

    ctx = SrtpContext.from_sdes("1 AES_CM_128_HMAC_SHA1_32 inline:" + ALICE.split(":")[1] + "|2^20|1:32")
    assert ctx.suite == "AES_CM_128_HMAC_SHA1_32" and len(ctx.master_key) == 16 and len(ctx.master_salt) == 14
    for bad in ("F8_128_HMAC_SHA1_80:abc", "AES_CM_128_HMAC_SHA1_80:!!!", "AES_CM_128_HMAC_SHA1_80:AAAA"):
        with pytest.raises(ParseError):
            SrtpContext.from_sdes(bad)


def test_jitter_buffers_trade_delay_for_discards(testdata: Path, settings: Settings) -> None:
    """rtpproxy's rtcp.o has jitter spikes (up to 58.9 ms per rtpproxy): a 20 ms buffer discards packets that a
    200 ms or an adaptive buffer keeps; a sequence restart (sess6.a) is not jitter."""
    from callqa.capture import emodel
    from callqa.protocol.rtp import unwrap

    def series(name: str) -> tuple[list[float], list[int]]:
        (call,) = read_capture(testdata / "pcap" / name).calls
        (stream,) = call.streams["caller"]
        voice = [p for p in stream.packets if p.pt in (8, 18)]
        arrivals, stamps, last = [p.arrival for p in voice], [], None
        for p in voice:
            last = unwrap(last, p.timestamp, 32)
            stamps.append(last)
        return arrivals, stamps

    arrivals, stamps = series("rtpproxy/acct_rtcp_hep/rtcp.o.pcap")
    small = emodel.jitter_buffer_loss(arrivals, stamps, 8000, 20)
    big = emodel.jitter_buffer_loss(arrivals, stamps, 8000, 200)
    adaptive, depth = emodel.adaptive_jitter_buffer(arrivals, stamps, 8000)
    assert small > big == 0 and adaptive < small
    assert 20 < depth <= 500
    arrivals, stamps = series("rtpproxy/sess6.a.rtp")
    assert emodel.jitter_buffer_loss(arrivals, stamps, 8000, 200) < 10  # two restarts, no mass discard
    (report,), _ = analyze_capture(testdata / "pcap/rtpproxy/sess6.o.rtp", settings, stats_only=True)
    assert set(report.streams[0].network_mos_jitter_buffers) == {"fixed_50ms", "fixed_200ms", "adaptive_500ms"}


def test_loss_bursts(testdata: Path, settings: Settings) -> None:
    (report,), _ = analyze_capture(testdata / "pcap/rtpproxy/weird.o.rtp", settings, stats_only=True)
    (stream,) = report.streams
    assert stream.loss_bursts > 0 and stream.max_loss_burst > 1  # 2106 of 3379 lost, in bursts
    (clean,), _ = analyze_capture(testdata / "pcap/rtpproxy/lost.o.rtp", settings, stats_only=True)
    assert (clean.streams[0].loss_bursts, clean.streams[0].max_loss_burst) == (0, 0)
    (restart,), _ = analyze_capture(testdata / "pcap/rtpproxy/sess6.a.rtp", settings, stats_only=True)
    assert restart.streams[0].max_loss_burst < 100  # the sequence restart is not a burst of lost packets


# --- generated captures -------------------------------------------------------------------------------------


def test_generated_sequential_calls_keep_their_own_streams(tmp_path: Path) -> None:
    """Two calls one after the other between the same addresses and ports, PCMU then PCMA."""
    first = Call("seq-1@10.2.0.1", codec="PCMU", callee_frames=captures.speech_frames(3, "PCMU"), seed=1)
    second = Call("seq-2@10.2.0.1", codec="PCMA", start=first.start + 5, seed=2,
                  callee_frames=captures.speech_frames(3, "PCMA"))  # fmt: skip
    cap = read_capture(captures.write(tmp_path / "two.pcap", first.packets() + second.packets()))
    assert [c.dialog.call_id for c in cap.calls] == ["seq-1@10.2.0.1", "seq-2@10.2.0.1"]
    one, two = cap.calls
    assert set(one.streams) == set(two.streams) == {"callee"}  # the caller sent nothing
    assert streams_of(one)["callee"] != streams_of(two)["callee"]
    assert [len(s.packets) for c in cap.calls for s in c.streams["callee"]] == [150, 150]
    assert one.encodings[one.streams["callee"][0].key][0] == ("PCMU", 8000)
    assert two.encodings[two.streams["callee"][0].key][8] == ("PCMA", 8000)


def test_generated_directions_follow_the_sdp(tmp_path: Path) -> None:
    call = Call("dir-1", caller_frames=captures.silence(2), callee_frames=captures.silence(2), hangup="callee")
    (found,) = read_capture(captures.write(tmp_path / "c.pcap", call.packets())).calls
    assert found.dialog.caller[0] == "10.1.0.1" and found.matched_by == "sdp"
    assert [k[:4] for k in streams_of(found)["caller"]] == [("10.1.0.1", 20000, "10.2.0.1", 30000)]
    assert [k[:4] for k in streams_of(found)["callee"]] == [("10.2.0.1", 30000, "10.1.0.1", 20000)]
    assert found.dialog.end_reason == "callee hung up (BYE)"


def test_generated_declined_call_and_answered_call(tmp_path: Path) -> None:
    declined = Call("no-1", answer="603 Decline", caller_frames=captures.silence(1))
    answered = Call("yes-1", start=declined.start + 3, dtmf_pt=96, caller_frames=captures.silence(2),
                    callee_frames=captures.silence(2))  # fmt: skip
    no, yes = read_capture(captures.write(tmp_path / "c.pcap", declined.packets() + answered.packets())).calls
    assert no.dialog.end_reason == "not answered: 603 Decline" and not no.streams
    assert set(yes.streams) == {"caller", "callee"}
    callee = yes.streams["callee"][0]
    assert yes.encodings[callee.key][96] == ("telephone-event", 8000)


def test_generated_reinvite_codec_change_gives_a_stream_per_codec(tmp_path: Path) -> None:
    frames = captures.silence(6)
    call = Call("re-1", caller_frames=frames, callee_frames=frames, reinvite=(3.0, "PCMA", frames, frames))
    (found,) = read_capture(captures.write(tmp_path / "c.pcap", call.packets())).calls
    for role in ("caller", "callee"):
        codecs = [found.encodings[s.key][s.packets[0].pt][0] for s in found.streams[role]]
        assert sorted(codecs) == ["PCMA", "PCMU"]


def test_generated_nat_alias_setting(tmp_path: Path) -> None:
    path = captures.write(tmp_path / "c.pcap", Call("nat-1", caller_frames=captures.silence(2),
                                                    callee_frames=captures.silence(2)).packets())  # fmt: skip
    assert read_capture(path).calls[0].matched_by == "sdp"
    # the SDP names 10.2.0.1; pretend media arrived from a public address by aliasing it away and back
    (call,) = read_capture(path, {"10.2.0.1": "203.0.113.9"}).calls
    assert call.matched_by == "sdp port (NAT)"  # the address no longer matches: associated by port
    assert set(call.streams) == {"caller", "callee"}


def test_generated_capture_report_through_the_pipeline(settings: Settings, tmp_path: Path) -> None:
    """G.722 speech from the callee only, in an answered call: decoded at 16 kHz, measured, one-way audio."""
    call = Call("g722-1", codec="G722", callee_frames=captures.speech_frames(8, "G722", [0.5, 4.0]))
    reports, _ = analyze_capture(captures.write(tmp_path / "c.pcap", call.packets()), settings, wav_dir=tmp_path)
    (report,) = reports
    assert report.source == "capture" and report.sip and report.sip.call_id == "g722-1"
    (leg,) = report.legs
    assert (leg.role, leg.codec, leg.sample_rate) == ("callee", "G722", 16000)
    assert leg.speech_ratio > 0.5 and leg.rtp and leg.rtp.packets == 400 and leg.rtp.lost == 0
    assert leg.mos.dnsmos and leg.mos.dnsmos.ovrl > 2.0
    # the fault is the silent caller side; the callee's synthetic (espeak) voice through G.722 scores near the
    # call MOS threshold (2.9-4.0 across model versions), so a low_mos warning on it may come and go
    found = [(f.code, f.severity, f.leg) for f in report.findings if f.code != "low_mos"]
    assert found == [("one_way_audio", "critical", "caller")]
    assert all(f.severity == "warning" for f in report.findings if f.code == "low_mos")
    (wav,) = tmp_path.glob("*.wav")
    assert_wav_of(wav, leg)


def rtp_only(path: Path, *streams: Stream) -> Path:
    return captures.write(path, [p for s in streams for p in s.packets()])


A, B = ("10.1.0.1", 20000), ("10.2.0.1", 30000)


def test_generated_loss_lowers_network_mos_and_is_reported(settings: Settings, tmp_path: Path) -> None:
    frames = captures.silence(10)
    lossy_drop = set(random_sample(500, 280, seed=1))
    (lossy,), _ = analyze_capture(rtp_only(tmp_path / "a.pcap", Stream(A, B, frames, drop=lossy_drop)), settings,
                                  stats_only=True)  # fmt: skip
    (clean,), _ = analyze_capture(rtp_only(tmp_path / "o.pcap", Stream(B, A, frames)), settings, stats_only=True)
    kept = sorted(set(range(500)) - lossy_drop)
    expected_lost = kept[-1] - kept[0] + 1 - len(kept)  # losses before the first or after the last are not seen
    assert lossy.streams[0].lost == expected_lost and clean.streams[0].lost == 0
    assert lossy.streams[0].network_mos < 2.0 < 4.0 < clean.streams[0].network_mos
    assert [f.code for f in lossy.findings] == ["packet_loss"] and lossy.verdict == "failed"
    assert lossy.legs == [] and lossy.sip is None  # stats only; RTP without SIP


def random_sample(n: int, k: int, seed: int) -> list[int]:
    import random

    return random.Random(seed).sample(range(n), k)


def test_generated_unsupported_codec_is_named_and_still_measured(settings: Settings, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    frames = [rng.integers(0, 256, 160, dtype=np.uint8).tobytes() for _ in range(100)]
    reports, _ = analyze_capture(rtp_only(tmp_path / "x.pcap", Stream(A, B, frames, pt=34)), settings)
    undecoded = [w for r in reports for w in r.warnings if "not decoded" in w]
    assert undecoded and any("PT 34" in w for w in undecoded)
    assert [s.packets for r in reports for s in r.streams] == [100]


def test_generated_cli_pcap_json_and_stats_only(tmp_path: Path) -> None:
    call = Call("cli-1", caller_frames=captures.speech_frames(3), callee_frames=captures.speech_frames(3, seed=1))
    cap = str(captures.write(tmp_path / "c.pcap", call.packets()))
    lines = callqa("pcap", cap, "--jsonl", "--wav-dir", str(tmp_path / "wav"), db=tmp_path / "s.db").stdout
    (report,) = [json.loads(line) for line in lines.splitlines()]
    assert report["sip"]["from"] == "sip:agent@10.1.0.1" and report["sip"]["call_id"] == "cli-1"
    assert {s["leg"] for s in report["streams"]} == {"caller", "callee"}
    assert set(report["streams"][0]) >= {"ssrc", "src", "dst", "payload", "packets", "expected", "lost",
                                         "duplicates", "out_of_order", "max_delta_ms", "max_jitter_ms",
                                         "mean_jitter_ms", "network_mos"}  # fmt: skip
    assert sorted(p.name.rsplit("-", 1)[1] for p in (tmp_path / "wav").iterdir()) == ["callee.wav", "caller.wav"]
    stats = json.loads(callqa("pcap", cap, "--jsonl", "--stats-only", db=tmp_path / "s.db").stdout.splitlines()[0])
    assert stats["legs"] == [] and len(stats["streams"]) == 2


def test_generated_dtmf_digits_and_their_leg(settings: Settings, tmp_path: Path) -> None:
    """RFC 4733 events in the callee's stream (as an IVR caller presses keys): digits, leg, durations."""
    digits = [(50, "1", 5), (100, "5", 12), (150, "#", 4), (200, "*", 30)]
    call = Call("dtmf-1", dtmf_pt=96, caller_frames=captures.silence(5), callee_frames=captures.silence(5),
                callee_options={"dtmf": digits})  # fmt: skip
    (report,), _ = analyze_capture(captures.write(tmp_path / "c.pcap", call.packets()), settings, stats_only=True)
    assert [d.digit for d in report.dtmf] == ["1", "5", "#", "*"]
    assert {d.leg for d in report.dtmf} == {"callee"}
    assert [d.duration_ms for d in report.dtmf] == [pytest.approx(20 * n, abs=20) for _, _, n in digits]
    assert [d.start_s for d in report.dtmf] == [pytest.approx(0.1 + 0.02 * k, abs=0.03) for k, _, _ in digits]


def test_generated_call_without_bye_ends_with_its_media(settings: Settings, tmp_path: Path) -> None:
    call = Call("nobye-1", hangup=None, caller_frames=captures.silence(4), callee_frames=captures.silence(3))
    (report,), _ = analyze_capture(captures.write(tmp_path / "c.pcap", call.packets()), settings, stats_only=True)
    assert report.sip.end_reason == "no BYE: RTP stopped"
    last = max(s.end_s for s in report.streams)
    assert last == pytest.approx(0.1 + 4 - 0.02, abs=0.005)
    assert (report.sip.ended_at - report.sip.started_at).total_seconds() == pytest.approx(last, abs=0.01)


def _key(seed: int) -> Srtp:
    import base64
    import random

    return Srtp(base64.b64encode(random.Random(seed).randbytes(30)).decode())


def test_generated_srtp_decrypted_with_the_right_key_only(settings: Settings, tmp_path: Path) -> None:
    alice, bob = _key(1), _key(2)
    speech = captures.speech_frames(6, "PCMU", [0.3, 3.2])
    paths = [rtp_only(tmp_path / f"{who}.pcap", Stream(A, B, speech, srtp=key, seq0=65400))  # ROC rolls over
             for who, key in (("alice", alice), ("bob", bob))]  # fmt: skip
    keyed = settings.model_copy(update={"srtp_keys": [bob.sdes, alice.sdes]})
    for path in paths:
        (report,), _ = analyze_capture(path, keyed)
        (stream,) = report.streams
        assert stream.note == "SRTP AES_CM_128_HMAC_SHA1_80, decrypted" and stream.packets == 300
        assert report.legs[0].speech_ratio > 0.3  # decrypted speech
    (plain,), _ = analyze_capture(paths[1], settings)
    assert plain.streams[0].note == "" and plain.legs[0].speech_ratio < 0.1  # ciphertext decodes to noise
    wrong = settings.model_copy(update={"srtp_keys": [_key(3).sdes]})
    (unkeyed,), _ = analyze_capture(paths[1], wrong)
    assert "decrypted" not in unkeyed.streams[0].note


def test_generated_srtp_key_from_the_sdp(settings: Settings, tmp_path: Path) -> None:
    """An SDES a=crypto line in each side's SDP keys that side's stream: no setting needed."""
    ka, kb = _key(4), _key(5)
    call = Call("srtp-1", crypto={"caller": ka, "callee": kb}, caller_frames=captures.speech_frames(4),
                callee_frames=captures.speech_frames(4, seed=1), caller_options={"srtp": ka},
                callee_options={"srtp": kb})  # fmt: skip
    (report,), _ = analyze_capture(captures.write(tmp_path / "c.pcap", call.packets()), settings)
    assert {s.leg: s.note for s in report.streams} == {
        "caller": "SRTP AES_CM_128_HMAC_SHA1_80, decrypted",
        "callee": "SRTP AES_CM_128_HMAC_SHA1_80, decrypted",
    }
    assert all(leg.speech_ratio > 0.3 for leg in report.legs)


def _series(path: Path) -> tuple[list[float], list[int]]:
    from callqa.protocol.rtp import unwrap

    (call,) = read_capture(path).calls
    (stream,) = call.streams["caller"]
    arrivals, stamps, last = [p.arrival for p in stream.packets], [], None
    for p in stream.packets:
        last = unwrap(last, p.timestamp, 32)
        stamps.append(last)
    return arrivals, stamps


def test_generated_jitter_buffers_trade_delay_for_discards(settings: Settings, tmp_path: Path) -> None:
    """Delay spikes of 30-90 ms on every 40th packet: a 20 ms buffer discards them, a 200 ms buffer keeps them
    all, an adaptive buffer grows past 20 ms and discards fewer; a sequence restart is not jitter."""
    from callqa.capture import emodel

    spikes = {k: 30.0 + (k % 3) * 30 for k in range(20, 1000, 40)}
    path = rtp_only(tmp_path / "j.pcap", Stream(A, B, captures.silence(20), jitter_ms=4, delays_ms=spikes))
    arrivals, stamps = _series(path)
    small = emodel.jitter_buffer_loss(arrivals, stamps, 8000, 20)
    big = emodel.jitter_buffer_loss(arrivals, stamps, 8000, 200)
    adaptive, depth = emodel.adaptive_jitter_buffer(arrivals, stamps, 8000)
    assert small >= len(spikes) - 1 and big == 0 and adaptive < small
    assert 20 < depth <= 500
    restart = rtp_only(tmp_path / "r.pcap", Stream(A, B, captures.silence(20), jitter_ms=4, restart_at=500))
    assert emodel.jitter_buffer_loss(*_series(restart), 8000, 200) < 10  # no mass discard
    (report,), _ = analyze_capture(restart, settings, stats_only=True)
    assert set(report.streams[0].network_mos_jitter_buffers) == {"fixed_50ms", "fixed_200ms", "adaptive_500ms"}


def test_generated_loss_bursts(settings: Settings, tmp_path: Path) -> None:
    bursts = set(range(100, 120)) | set(range(300, 305)) | {400}
    (report,), _ = analyze_capture(rtp_only(tmp_path / "b.pcap", Stream(A, B, captures.silence(10), drop=bursts)),
                                   settings, stats_only=True)  # fmt: skip
    (stream,) = report.streams
    assert stream.lost == 26 and stream.loss_bursts > 0 and stream.max_loss_burst == 20
    (clean,), _ = analyze_capture(rtp_only(tmp_path / "c.pcap", Stream(A, B, captures.silence(10))), settings,
                                  stats_only=True)  # fmt: skip
    assert (clean.streams[0].loss_bursts, clean.streams[0].max_loss_burst) == (0, 0)
    restart = rtp_only(tmp_path / "r.pcap", Stream(A, B, captures.silence(10), restart_at=250))
    (restarted,), _ = analyze_capture(restart, settings, stats_only=True)
    assert restarted.streams[0].max_loss_burst < 100  # the sequence restart is not a burst of lost packets


def test_captured_legs_are_kept_for_listening(tmp_path: Path, settings: Settings) -> None:
    """With an audio folder (sniff by default, pcap --keep-audio) each decoded direction is kept as the WAV the
    web page plays: one file per leg, as long as the leg; statistics-only runs keep nothing."""
    call = Call("keep-1", caller_frames=captures.speech_frames(6.0), callee_frames=captures.speech_frames(6.0, seed=1))
    cap = captures.write(tmp_path / "c.pcap", call.packets())
    (report,), _ = analyze_capture(cap, settings, None, audio_dir=tmp_path / "audio")
    kept = sorted((tmp_path / "audio" / report.id).glob("*.wav"))
    assert [p.name for p in kept] == [f"{i}-{leg.role}.wav" for i, leg in enumerate(report.legs)]
    for path, leg in zip(kept, report.legs, strict=True):
        assert_wav_of(path, leg)
    db = tmp_path / "cli" / "s.db"
    callqa("pcap", "--keep-audio", "--no-nisqa", str(cap), db=db)
    assert len(list((db.parent / "audio").glob("*/*.wav"))) == 2
    callqa("pcap", "--stats-only", "--no-cache", str(cap), db=tmp_path / "stats" / "s.db")
    assert not (tmp_path / "stats" / "audio").exists()
