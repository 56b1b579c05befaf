"""pcap/pcapng, link/IP, RTP, SIP and SDP parsers on captured bytes: every field, every truncation point,
and random or mutated input (hypothesis) that may only ever raise ParseError."""

from __future__ import annotations

import contextlib
from pathlib import Path

import captures
import pytest
from captures import Call, Stream
from hypothesis import given, settings
from hypothesis import strategies as st

from callqa.audio import g711
from callqa.errors import ParseError
from callqa.protocol.packet import PROTO_UDP, Decoder
from callqa.protocol.pcap import CaptureFile
from callqa.protocol.rtp import RtpHeader, unwrap
from callqa.protocol.sdp import SessionDescription
from callqa.protocol.sip import SipMessage, looks_like_sip

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)
INVITE = (
    b"INVITE sip:101@10.0.0.2 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n"
    b"f: \"Agent\" <sip:agent@10.0.0.1>;tag=abc\r\n"
    b"t: <sip:101@10.0.0.2>\r\n"
    b"i: call-1@10.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"c: application/sdp\r\n"
    b"l: %d\r\n\r\n" % len(SDP)
) + SDP  # fmt: skip


def first_rtp(testdata: Path, name: str) -> bytes:
    return first_udp(testdata / "pcap" / name)


def first_udp(path: Path) -> bytes:
    cf = CaptureFile(path)
    dec = Decoder()
    for frame in cf.frames():
        seg = dec.decode(frame.ts, frame.linktype, frame.data)
        if seg and seg.proto == PROTO_UDP:
            return seg.payload
    raise AssertionError("no UDP in capture")


def dtmf_capture(path: Path) -> Path:
    """Ten RFC 4733 packets of the digit 0 (as SIPp's dtmf_2833_0.pcap holds), from the project's generator."""
    stream = Stream(("192.168.0.3", 49176), ("192.168.0.1", 10000), captures.silence(0.2), ssrc=0x1234, seq0=7,
                    dtmf=[(0, "0", 10)])  # fmt: skip
    return captures.write(path, stream.packets())


def test_rtp_header_fields(tmp_path: Path) -> None:
    data = first_udp(dtmf_capture(tmp_path / "dtmf.pcap"))
    h = RtpHeader.parse(data)
    assert (h.version, h.payload_type, h.marker, h.seq, h.ssrc) == (2, 101, True, 7, 0x1234)
    assert h.payload == bytes([0, 10, 0, 160])  # RFC 4733 event 0 (digit '0'), volume 10, 20 ms so far
    for cut in range(12):
        with pytest.raises(ParseError, match="truncated"):
            RtpHeader.parse(data[:cut])


def test_rtp_rejects_bad_padding_and_version() -> None:
    with pytest.raises(ParseError, match="version"):
        RtpHeader.parse(bytes([0x40]) + bytes(11))
    with pytest.raises(ParseError, match="padding"):
        RtpHeader.parse(bytes([0xA0, 0]) + bytes(9) + b"\x00" + b"\xff")


def test_unwrap_handles_wraparound() -> None:
    assert unwrap(None, 5, 16) == 5
    assert unwrap(65535, 0, 16) == 65536
    assert unwrap(65536, 65535, 16) == 65535
    assert unwrap(2**32 - 160, 0, 32) == 2**32
    assert unwrap(10, 5, 16) == 5


def test_pcap_truncated_at_every_byte(tmp_path: Path) -> None:
    source = dtmf_capture(tmp_path / "dtmf.pcap")
    data = source.read_bytes()
    full = list(CaptureFile(source).frames())
    assert len(full) == 10
    boundaries = {24}
    for f in full:
        boundaries.add(max(boundaries) + 16 + len(f.data))
    assert max(boundaries) == len(data)
    path = tmp_path / "cut.pcap"
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        cf = CaptureFile(path)
        try:
            frames = list(cf.frames())
        except ParseError:
            assert cut < 24  # only a missing global header is fatal
            continue
        assert frames == full[: len(frames)]  # every complete packet before the cut is kept
        if cut in boundaries:
            assert not cf.warnings
        else:
            assert "truncated" in cf.warnings[0]


def test_pcapng_and_encapsulations(testdata: Path) -> None:
    """ERSPAN/GRE (pcapng), IP-in-IP, IPv6 fragments, Linux cooked capture and BSD loopback all yield SIP/RTP."""
    cases = {
        "heplify/erspan_sip_ipv4_udp.pcapng": 140, "sngrep/ipip.pcap": 4, "sngrep/ipv6frag.pcap": 32,
        "heplify/sip_ipv6_udp.pcap": 6,
    }  # fmt: skip
    for name, sip_messages in cases.items():
        dec, n = Decoder(), 0
        for frame in CaptureFile(testdata / "pcap" / name).frames():
            seg = dec.decode(frame.ts, frame.linktype, frame.data)
            n += bool(seg and looks_like_sip(seg.payload))
        assert n == sip_messages, name
    assert first_rtp(testdata, "sipnab/speech_8k_ulaw.pcap")[1] & 0x7F == 0  # SLL, PCMU
    assert first_rtp(testdata, "rtpproxy/DLT_NULL.a.rtp")[0] >> 6 == 2  # loopback


def test_not_a_capture(tmp_path: Path) -> None:
    f = tmp_path / "x.pcap"
    f.write_bytes(b"GIF89a" + bytes(100))
    with pytest.raises(ParseError, match="not a pcap"):
        list(CaptureFile(f).frames())


def test_sip_message_fields() -> None:
    m = SipMessage.parse(INVITE)
    assert (m.method, m.is_request, m.uri) == ("INVITE", True, "sip:101@10.0.0.2")
    assert m.call_id == "call-1@10.0.0.1" and m.from_tag == "abc"
    assert m.header("content-type") == "application/sdp" and m.body == SDP
    sdp = SessionDescription.parse(m.body)
    (media,) = sdp.media
    assert (media.address, media.port, media.payload_types) == ("10.0.0.1", 4000, (0, 101))
    assert media.encoding(0) == ("PCMU", 8000) and media.encoding(101) == ("telephone-event", 8000)
    ok = SipMessage.parse(b"SIP/2.0 200 OK\r\nCall-ID: x\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n")
    assert (ok.status, ok.reason, ok.method) == (200, "OK", "BYE")


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (INVITE.replace(b"l: %d" % len(SDP), b"l: abc"), "Content-Length"),
        (INVITE.replace(b"l: %d" % len(SDP), b"l: -5"), "negative"),
        (INVITE.replace(b"i: call-1@10.0.0.1\r\n", b""), "Call-ID"),
        (b"HELLO world\r\nCall-ID: x\r\n\r\n", "start line"),
        (b"INVITE sip:a SIP/2.0\r\nno colon here\r\n\r\n", "colon"),
    ],
)
def test_malformed_sip(data: bytes, error: str) -> None:
    with pytest.raises(ParseError, match=error):
        SipMessage.parse(data)


def test_malformed_sdp() -> None:
    with pytest.raises(ParseError, match="port"):
        SessionDescription.parse(b"v=0\r\nm=audio 99999 RTP/AVP 0\r\n")
    with pytest.raises(ParseError, match="media line"):
        SessionDescription.parse(b"m=audio\r\n")
    assert SessionDescription.parse(b"garbage\x00\xff").media == ()


def test_g711_tables_match_ffmpeg() -> None:
    import av
    import numpy as np

    for codec, table in (("pcm_mulaw", g711.ULAW), ("pcm_alaw", g711.ALAW)):
        ctx = av.CodecContext.create(codec, "r")
        ctx.sample_rate, ctx.layout = 8000, "mono"  # type: ignore[attr-defined]
        frames = ctx.decode(av.Packet(bytes(range(256))))  # type: ignore[attr-defined]
        assert np.array_equal(np.concatenate([f.to_ndarray().reshape(-1) for f in frames]), table)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_parsers_only_raise_parse_error_on_random_bytes(data: bytes) -> None:
    for parse in (RtpHeader.parse, SipMessage.parse, SessionDescription.parse):
        with contextlib.suppress(ParseError):
            parse(data)
    dec = Decoder()
    for linktype in (0, 1, 101, 113, 276):
        with contextlib.suppress(ParseError):
            dec.decode(0.0, linktype, data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_parsers_on_mutated_messages(data: st.DataObject) -> None:
    raw = bytearray(INVITE)
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        msg = SipMessage.parse(bytes(raw))
        SessionDescription.parse(msg.body)
    except ParseError:
        pass


def test_tcp_reassembly_segments_retransmissions_and_websocket() -> None:
    from callqa.protocol.tcp import TcpSipReassembler

    flow = ("10.0.0.1", 5060, "10.0.0.2", 5060)
    r = TcpSipReassembler()
    two = INVITE + INVITE.replace(b"call-1@", b"call-2@")
    assert list(r.feed(flow, 1000, two[:50])) == []  # start line and part of the headers
    assert list(r.feed(flow, 1000, two[:50])) == []  # a retransmission adds nothing
    out = list(r.feed(flow, 1050, two[50 : len(INVITE) + 10]))
    assert out == [INVITE]
    out = list(r.feed(flow, 1000 + len(INVITE) + 10, two[len(INVITE) + 10 :]))
    assert [SipMessage.parse(m).call_id for m in out] == ["call-2@10.0.0.1"]
    # RFC 7118: SIP in a masked WebSocket text frame (client to server)
    key = bytes([1, 2, 3, 4])
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(INVITE))
    frame = bytes([0x81, 0xFE]) + len(INVITE).to_bytes(2, "big") + key + masked
    ws = ("10.0.0.3", 40000, "10.0.0.2", 443)
    assert list(r.feed(ws, 7, frame[:30])) == []
    assert list(r.feed(ws, 37, frame[30:])) == [INVITE]


def test_rtcp_compound_reports_match_tshark(testdata: Path) -> None:
    """Values as ``tshark -T fields -e rtcp.ssrc.fraction -e rtcp.ssrc.cum_nr ...`` prints them."""
    from callqa.protocol.rtcp import RR, SR, looks_like_rtcp, parse_compound

    dec = Decoder()
    datagrams = []
    for frame in CaptureFile(testdata / "pcap/ndpi/rtcp_multiple_pkts_in_the_same_datagram.pcap").frames():
        seg = dec.decode(frame.ts, frame.linktype, frame.data)
        assert seg is not None and looks_like_rtcp(seg.payload)
        datagrams.append(seg.payload)
    reports = [parse_compound(d)[0] for d in datagrams]  # each datagram: SR or RR, then SDES (skipped)
    assert [r.packet_type for r in reports] == [SR, RR, SR, RR, SR]
    assert [hex(r.sender_ssrc) for r in reports[:2]] == ["0x5d931534", "0x1932db4"]
    fourth = reports[3].blocks[0]
    assert (fourth.ssrc, fourth.fraction_lost, fourth.cumulative_lost, fourth.jitter) == (0x5D931534, 0.0, 1, 6)
    assert (fourth.lsr, fourth.dlsr) == (3245362529, 263452)
    assert reports[1].blocks[0].fraction_lost == 1 / 256
    for cut in range(1, len(datagrams[3])):
        try:
            parse_compound(datagrams[3][:cut])
        except ParseError as exc:
            assert "truncated" in str(exc)


def test_bulk_reader_warns_about_truncation_like_the_per_packet_reader(tmp_path: Path) -> None:
    from callqa.capture.calls import read_capture

    call = Call("cut-1", caller_frames=captures.silence(2), callee_frames=captures.silence(2))
    data = captures.write(tmp_path / "call.pcap", call.packets()).read_bytes()
    path = tmp_path / "cut.pcap"
    for cut in (len(data) - 100, len(data) - 3):
        path.write_bytes(data[:cut])
        per_packet = read_capture(path, keep_audio=True).warnings
        bulk = read_capture(path, keep_audio=False).warnings
        assert per_packet == bulk and "truncated" in bulk[0]
    corrupt = bytearray(data)
    corrupt[24 + 8 : 24 + 12] = (10**8).to_bytes(4, "little")  # first record claims 100 MB
    path.write_bytes(bytes(corrupt))
    assert "implausible record length" in read_capture(path, keep_audio=False).warnings[0]
