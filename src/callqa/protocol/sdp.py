"""SDP (RFC 4566) as far as media association needs: connection address, media ports, payload type map,
direction. Unknown lines are ignored; malformed ones raise ParseError."""

from __future__ import annotations

from dataclasses import dataclass, field

from callqa.errors import ParseError
from callqa.protocol.rtp import encoding_of

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


@dataclass(frozen=True, slots=True)
class Media:
    kind: str  # audio, video, ...
    port: int
    proto: str
    address: str
    payload_types: tuple[int, ...]
    rtpmap: dict[int, tuple[str, int]] = field(default_factory=dict)  # PT -> (encoding, clock rate)
    direction: str = "sendrecv"
    crypto: tuple[str, ...] = ()  # a=crypto lines (SDES keys for SRTP)

    def encoding(self, pt: int) -> tuple[str, int]:
        """(name, clock) of a payload type: from a=rtpmap, else the RFC 3551 static table, else ('', 0)."""
        return encoding_of(pt, self.rtpmap)


@dataclass(frozen=True, slots=True)
class SessionDescription:
    address: str
    media: tuple[Media, ...]

    @classmethod
    def parse(cls, body: bytes) -> SessionDescription:
        text = body.decode("utf-8", errors="replace")
        session_addr = ""
        media: list[dict[str, object]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if len(line) < 2 or line[1] != "=":
                continue
            kind, value = line[0], line[2:]
            if kind == "c":
                parts = value.split()
                if len(parts) < 3:
                    raise ParseError(f"SDP connection line is malformed: {line!r}")
                addr = parts[2].split("/")[0]
                if media:
                    media[-1]["address"] = addr
                else:
                    session_addr = addr
            elif kind == "m":
                parts = value.split()
                if len(parts) < 3:
                    raise ParseError(f"SDP media line is malformed: {line!r}")
                try:
                    port = int(parts[1].split("/")[0])
                except ValueError as exc:
                    raise ParseError(f"SDP media port is not a number: {line!r}") from exc
                if not 0 <= port <= 65535:
                    raise ParseError(f"SDP media port {port} is out of range")
                pts = tuple(int(p) for p in parts[3:] if p.isdigit() and int(p) < 128)
                media.append({"kind": parts[0], "port": port, "proto": parts[2], "pts": pts, "rtpmap": {},
                              "direction": "sendrecv", "crypto": []})  # fmt: skip
            elif kind == "a" and media:
                m = media[-1]
                if value.startswith("rtpmap:"):
                    pt_text, _, enc = value[7:].partition(" ")
                    name, _, rest = enc.partition("/")
                    rate = rest.split("/")[0]
                    if pt_text.isdigit() and rate.isdigit():
                        m["rtpmap"][int(pt_text)] = (name, int(rate))  # type: ignore[index]
                elif value in DIRECTIONS:
                    m["direction"] = value
                elif value.startswith("crypto:"):
                    m["crypto"].append(value[7:])  # type: ignore[attr-defined]
        return cls(
            session_addr,
            tuple(
                Media(str(m["kind"]), int(m["port"]), str(m["proto"]), str(m.get("address", session_addr)),  # type: ignore[call-overload]
                      m["pts"], m["rtpmap"], str(m["direction"]), tuple(m["crypto"]))  # type: ignore[arg-type]
                for m in media
            ),
        )  # fmt: skip
