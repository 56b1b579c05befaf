"""SIP messages (RFC 3261): start line, headers (compact forms expanded), body by Content-Length."""

from __future__ import annotations

import re
from dataclasses import dataclass

from callqa.errors import ParseError

METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "UPDATE", "INFO", "REFER",
           "NOTIFY", "SUBSCRIBE", "MESSAGE", "PUBLISH")  # fmt: skip
COMPACT = {"i": "call-id", "f": "from", "t": "to", "v": "via", "m": "contact", "l": "content-length",
           "c": "content-type", "s": "subject", "k": "supported", "e": "content-encoding"}  # fmt: skip
_REQUEST = re.compile(rb"^([A-Z]+) (\S+) SIP/2\.0\r?$")
_STATUS = re.compile(rb"^SIP/2\.0 (\d{3}) ?(.*?)\r?$")
_TAG = re.compile(r";\s*tag=([^;>\s]+)", re.IGNORECASE)
_URI = re.compile(r"<?(sips?:[^>;\s]+)", re.IGNORECASE)


_PREFIXES = (b"SIP/2.0 ", *(m.encode() + b" " for m in METHODS))


def looks_like_sip(data: bytes) -> bool:
    """A start line's first word: cheap enough to run on every UDP payload (RTP never starts with a letter)."""
    return data[:1].isalpha() and data.startswith(_PREFIXES)


@dataclass(frozen=True, slots=True)
class SipMessage:
    method: str  # the request method, or the CSeq method of a response
    status: int  # 0 for requests
    reason: str
    uri: str
    headers: dict[str, list[str]]
    body: bytes

    @property
    def is_request(self) -> bool:
        return self.status == 0

    def header(self, name: str) -> str:
        values = self.headers.get(name.lower())
        return values[0] if values else ""

    @property
    def call_id(self) -> str:
        return self.header("call-id")

    @property
    def from_tag(self) -> str:
        m = _TAG.search(self.header("from"))
        return m.group(1) if m else ""

    @classmethod
    def parse(cls, data: bytes) -> SipMessage:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            head, sep, rest = data.partition(b"\n\n")
        lines = head.split(b"\n")
        first = lines[0].rstrip(b"\r")
        headers: dict[str, list[str]] = {}
        for raw in lines[1:]:
            line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
            if line[:1] in (" ", "\t") and headers:  # folded continuation line
                last = next(reversed(headers))
                headers[last][-1] += " " + line.strip()
                continue
            name, colon, value = line.partition(":")
            if not colon:
                raise ParseError(f"SIP header line without a colon: {line[:40]!r}")
            key = name.strip().lower()
            key = COMPACT.get(key, key)
            headers.setdefault(key, []).append(value.strip())
        if not headers.get("call-id"):
            raise ParseError("SIP message has no Call-ID")
        body = rest
        length = headers.get("content-length")
        if length:
            try:
                n = int(length[0])
            except ValueError as exc:
                raise ParseError(f"SIP Content-Length is not a number: {length[0]!r}") from exc
            if n < 0:
                raise ParseError(f"SIP Content-Length is negative: {n}")
            body = rest[:n]
        cseq = headers.get("cseq", [""])[0].split()
        if m := _REQUEST.match(first):
            return cls(m.group(1).decode(), 0, "", m.group(2).decode(errors="replace"), headers, body)
        if m := _STATUS.match(first):
            method = cseq[1] if len(cseq) > 1 else ""
            return cls(method, int(m.group(1)), m.group(2).decode(errors="replace"), "", headers, body)
        raise ParseError(f"not a SIP start line: {first[:60]!r}")


def uri_of(header_value: str) -> str:
    """The SIP URI inside a From/To header value (without display name and parameters)."""
    m = _URI.search(header_value)
    return m.group(1) if m else header_value.strip()
