"""Hostile inputs made from real ones: WAV headers with extreme fields, captures with forged RTP fields.

Classic pcap files only (the shared captures used here are classic pcap with Ethernet, IPv4 and UDP)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

PCAP_HEADER = 24
RECORD_HEADER = 16


def pcap_records(data: bytes) -> Iterator[tuple[int, int]]:
    """(offset of the frame, its captured length) of each record of a classic little-endian pcap."""
    if data[:4] not in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        raise ValueError("not a little-endian classic pcap")
    pos = PCAP_HEADER
    while pos + RECORD_HEADER <= len(data):
        incl = struct.unpack_from("<I", data, pos + 8)[0]
        yield pos + RECORD_HEADER, incl
        pos += RECORD_HEADER + incl


def rtp_offsets(data: bytes) -> list[int]:
    """Offsets of the RTP headers carried in Ethernet/IPv4/UDP frames (version 2, not RTCP)."""
    out = []
    for frame, n in pcap_records(data):
        if n < 54 or data[frame + 12 : frame + 14] != b"\x08\x00" or data[frame + 23] != 17:
            continue
        rtp = frame + 14 + 4 * (data[frame + 14] & 0x0F) + 8
        if rtp + 12 <= frame + n and data[rtp] >> 6 == 2 and not 72 <= data[rtp + 1] & 0x7F <= 79:
            out.append(rtp)
    return out


def shift_rtp_timestamp(data: bytes, index: int, by: int) -> bytes:
    """The capture with the RTP timestamp of its ``index``-th RTP packet moved by ``by`` clock ticks (the UDP
    checksum is cleared so that the change is not the thing a reader rejects)."""
    out = bytearray(data)
    rtp = rtp_offsets(data)[index]
    ts = struct.unpack_from(">I", out, rtp + 4)[0]
    struct.pack_into(">I", out, rtp + 4, (ts + by) % 2**32)
    struct.pack_into(">H", out, rtp - 2, 0)
    return bytes(out)


def wav_with(data: bytes, **fields: int) -> bytes:
    """A copy of a canonical WAV whose ``fmt `` fields (``rate``, ``channels``, ``bits``, ``block_align``,
    ``byte_rate``, ``format``) are set to the given values."""
    out = bytearray(data)
    pos = data.find(b"fmt ")
    if pos < 0:
        raise ValueError("no fmt chunk")
    at = {"format": (pos + 8, "<H"), "channels": (pos + 10, "<H"), "rate": (pos + 12, "<I"),
          "byte_rate": (pos + 16, "<I"), "block_align": (pos + 20, "<H"), "bits": (pos + 22, "<H")}  # fmt: skip
    for name, value in fields.items():
        off, fmt = at[name]
        struct.pack_into(fmt, out, off, value % (1 << (8 * struct.calcsize(fmt))))
    return bytes(out)


# --- generated inputs: the hostile-input tests run without the reference set -----------------------------------


def speech_wav(path: Path, seconds: float = 6.0) -> Path:
    """A 16-bit PCM WAV at 8 kHz with espeak-ng speech (what the reported reproductions started from)."""
    import calls
    from conftest import write_wav

    return write_wav(path, calls.leg(seconds, [0.5], noise_dbfs=-60.0), calls.RATE)


def one_way_calls(path: Path, calls_n: int = 2, seconds: float = 8.5, codec: str = "PCMU") -> Path:
    """``calls_n`` sequential SIP calls, each with ``seconds`` of speech in one direction only (like FreeSWITCH
    playing a prompt), written as a pcap."""
    import captures

    packets = []
    for n in range(calls_n):
        call = captures.Call(f"prompt-{n}", start=captures.T0 + n * (seconds + 2.0), caller_port=20000 + 2 * n,
                             callee_port=30000 + 2 * n, codec=codec, caller_frames=None, seed=n,
                             callee_frames=captures.speech_frames(seconds, codec, seed=n))  # fmt: skip
        packets += call.packets()
    return captures.write(path, packets)
