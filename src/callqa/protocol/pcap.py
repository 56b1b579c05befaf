"""pcap and pcapng file reading: frames with their capture time and link type.

pcap: https://datatracker.ietf.org/doc/draft-ietf-opsawg-pcap/ ; pcapng: draft-ietf-opsawg-pcapng.
Pure parsing over a byte buffer, no I/O beyond reading the file; a truncated file ends the iteration with a
warning instead of an exception.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from callqa.errors import InputError, ParseError

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BYTE_ORDER = 0x1A2B3C4D
PCAPNG_IDB = 1
PCAPNG_PB = 2  # obsolete packet block
PCAPNG_SPB = 3
PCAPNG_EPB = 6
OPT_IF_TSRESOL = 9
MAX_RECORD = 262144 * 4  # a longer pcap record means a corrupt file


@dataclass(frozen=True, slots=True)
class Frame:
    ts: float  # seconds since the epoch
    linktype: int
    data: bytes


@dataclass
class CaptureFile:
    """Frames of one capture file; ``warnings`` collects what was skipped and why."""

    path: Path
    format: str = ""
    warnings: list[str] = field(default_factory=list)

    def frames(self) -> Iterator[Frame]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError as exc:
            raise InputError(f"capture not found: {self.path}") from exc
        except OSError as exc:
            raise InputError(f"cannot read {self.path}: {exc}") from exc
        if len(data) < 4:
            raise ParseError(f"{self.path} is too short to be a capture file")
        magic_le = struct.unpack_from("<I", data)[0]
        magic_be = struct.unpack_from(">I", data)[0]
        if magic_le == PCAPNG_SHB:
            self.format = "pcapng"
            yield from self._pcapng(data)
        elif PCAP_MAGIC_US in (magic_le, magic_be) or PCAP_MAGIC_NS in (magic_le, magic_be):
            self.format = "pcap"
            yield from self._pcap(data, "<" if magic_le in (PCAP_MAGIC_US, PCAP_MAGIC_NS) else ">")
        else:
            raise ParseError(f"{self.path} is not a pcap or pcapng file (magic 0x{magic_be:08x})")

    def _pcap(self, data: bytes, endian: str) -> Iterator[Frame]:
        if len(data) < 24:
            raise ParseError(f"{self.path}: pcap global header is truncated")
        magic, _, _, _, _, _, linktype = struct.unpack_from(endian + "IHHiIII", data)
        divisor = 1e9 if magic == PCAP_MAGIC_NS else 1e6
        linktype &= 0xFFFF
        record = struct.Struct(endian + "IIII")
        pos, end = 24, len(data)
        while pos < end:
            if pos + 16 > end:
                self.warnings.append(f"capture truncated at byte {pos} (partial record header)")
                return
            sec, frac, incl, _orig = record.unpack_from(data, pos)
            pos += 16
            if incl > MAX_RECORD:
                self.warnings.append(f"implausible record length {incl} at byte {pos - 16}: stopped reading")
                return
            if pos + incl > end:
                self.warnings.append(f"capture truncated at byte {pos} (partial packet)")
                return
            yield Frame(sec + frac / divisor, linktype, data[pos : pos + incl])
            pos += incl

    def _pcapng(self, data: bytes) -> Iterator[Frame]:
        pos, end = 0, len(data)
        endian = "<"
        interfaces: list[tuple[int, float]] = []  # (linktype, seconds per tick)
        while pos < end:
            if pos + 12 > end:
                self.warnings.append(f"capture truncated at byte {pos} (partial block header)")
                return
            btype = struct.unpack_from(endian + "I", data, pos)[0]
            if btype == PCAPNG_SHB:
                order = data[pos + 8 : pos + 12]
                endian = "<" if struct.unpack("<I", order)[0] == PCAPNG_BYTE_ORDER else ">"
                interfaces = []  # a new section has its own interfaces
            blen = struct.unpack_from(endian + "I", data, pos + 4)[0]
            if blen < 12 or blen % 4 or pos + blen > end:
                self.warnings.append(f"capture truncated or corrupt at byte {pos} (block length {blen})")
                return
            body = data[pos + 8 : pos + blen - 4]
            if btype == PCAPNG_IDB and len(body) >= 8:
                linktype = struct.unpack_from(endian + "H", body)[0]
                interfaces.append((linktype, _tsresol(body[8:], endian)))
            elif btype in (PCAPNG_EPB, PCAPNG_PB) and len(body) >= 20:
                if btype == PCAPNG_EPB:
                    ifid, hi, lo, caplen, _orig = struct.unpack_from(endian + "IIIII", body)
                else:
                    ifid, _drops, hi, lo, caplen, _orig = struct.unpack_from(endian + "HHIIII", body)
                head = 20 if btype == PCAPNG_EPB else 20
                if ifid >= len(interfaces) or head + caplen > len(body):
                    self.warnings.append(f"packet block at byte {pos} names no interface or is truncated")
                else:
                    linktype, tick = interfaces[ifid]
                    yield Frame(((hi << 32) | lo) * tick, linktype, body[head : head + caplen])
            elif btype == PCAPNG_SPB and len(body) >= 4 and interfaces:
                orig = struct.unpack_from(endian + "I", body)[0]
                yield Frame(0.0, interfaces[0][0], body[4 : 4 + orig])
            pos += blen


def _tsresol(options: bytes, endian: str) -> float:
    """Seconds per timestamp tick from an IDB's options (if_tsresol), default microseconds."""
    pos = 0
    while pos + 4 <= len(options):
        code, length = struct.unpack_from(endian + "HH", options, pos)
        if code == 0:
            break
        if code == OPT_IF_TSRESOL and length >= 1 and pos + 5 <= len(options):
            v = options[pos + 4]
            return 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0**-v
        pos += 4 + ((length + 3) & ~3)
    return 1e-6
