"""Calls from real captures: dialogs, directions, decoding, and the report through the common pipeline."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import pytest
from test_cli import callqa

from callqa.capture.calls import read_capture
from callqa.config import Settings
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
    with wave.open(str(wav)) as w:
        assert (w.getnchannels(), w.getframerate()) == (1, 16000)
        assert w.getnframes() / 16000 == pytest.approx(leg.duration_s, abs=0.01)


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
