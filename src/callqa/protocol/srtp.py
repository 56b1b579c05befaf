"""SRTP (RFC 3711) decryption with SDES keys (RFC 4568 ``a=crypto``): AES_CM_128_HMAC_SHA1_80 and _32.

Session keys are derived from the master key and salt (key derivation rate 0); the rollover counter is tracked
per SSRC from the sequence numbers. A key is only used once a packet's authentication tag verifies, so a wrong
or missing key leaves the stream reported as encrypted rather than decoded into noise.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from dataclasses import dataclass, field

from callqa.errors import ParseError

SUITES = {"AES_CM_128_HMAC_SHA1_80": 10, "AES_CM_128_HMAC_SHA1_32": 4}
LABEL_ENCRYPTION, LABEL_AUTH, LABEL_SALT = 0, 1, 2


def _aes_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    enc = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return enc.update(data) + enc.finalize()


def _derive(master_key: bytes, master_salt: bytes, label: int, length: int) -> bytes:
    """RFC 3711 4.3.1 with kdr = 0: x = label << 48 XOR salt, AES-CM keystream from IV x * 2^16."""
    x = int.from_bytes(master_salt, "big") ^ (label << 48)
    return _aes_ctr(master_key, (x << 16).to_bytes(16, "big"), bytes(length))


@dataclass
class SrtpContext:
    """Decrypts the SRTP packets of one sender (one master key)."""

    suite: str
    master_key: bytes
    master_salt: bytes
    _keys: tuple[bytes, bytes, bytes] = field(init=False)
    _roc: dict[int, tuple[int, int]] = field(default_factory=dict)  # ssrc -> (roc, last seq)

    def __post_init__(self) -> None:
        self._keys = (
            _derive(self.master_key, self.master_salt, LABEL_ENCRYPTION, 16),
            _derive(self.master_key, self.master_salt, LABEL_AUTH, 20),
            _derive(self.master_key, self.master_salt, LABEL_SALT, 14),
        )

    @classmethod
    def from_sdes(cls, text: str) -> SrtpContext:
        """``AES_CM_128_HMAC_SHA1_80:BASE64`` or an SDP crypto attribute ``1 AES_CM_... inline:BASE64|...``."""
        parts = text.replace("inline:", " ").replace(":", " ", 1).split()
        suite = next((p for p in parts if p in SUITES), "")
        if not suite:
            raise ParseError(f"unsupported SRTP crypto suite in {text[:60]!r}")
        encoded = parts[parts.index(suite) + 1].split("|")[0]
        try:
            material = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ParseError(f"SRTP key is not base64: {exc}") from exc
        if len(material) != 30:
            raise ParseError(f"SRTP key material is {len(material)} bytes, expected 30 (16 key + 14 salt)")
        return cls(suite, material[:16], material[16:])

    def _index(self, ssrc: int, seq: int) -> tuple[int, int]:
        """RFC 3711 3.3.1 index estimate; returns (roc, index)."""
        roc, last = self._roc.get(ssrc, (0, seq))
        if last < 32768:
            v = roc - 1 if seq - last > 32768 else roc
        else:
            v = roc + 1 if last - 32768 > seq else roc
        return max(v, 0), (max(v, 0) << 16) | seq

    def decrypt(self, packet: bytes) -> bytes | None:
        """The RTP packet with its payload decrypted, or None when the authentication tag does not verify."""
        tag_len = SUITES[self.suite]
        if len(packet) < 12 + tag_len:
            return None
        body, tag = packet[:-tag_len], packet[-tag_len:]
        seq, ssrc = struct.unpack_from(">H", body, 2)[0], struct.unpack_from(">I", body, 8)[0]
        roc, index = self._index(ssrc, seq)
        enc_key, auth_key, salt = self._keys
        mac = hmac.new(auth_key, body + roc.to_bytes(4, "big"), hashlib.sha1).digest()[:tag_len]
        if not hmac.compare_digest(mac, tag):
            return None
        header_len = 12 + 4 * (body[0] & 0x0F)
        if body[0] & 0x10 and len(body) >= header_len + 4:
            header_len += 4 + 4 * struct.unpack_from(">H", body, header_len + 2)[0]
        iv = (int.from_bytes(salt, "big") << 16) ^ (ssrc << 64) ^ (index << 16)
        plain = _aes_ctr(enc_key, iv.to_bytes(16, "big"), body[header_len:])
        last_roc, last_seq = self._roc.get(ssrc, (0, seq))
        if (roc, seq) >= (last_roc, last_seq) or ssrc not in self._roc:
            self._roc[ssrc] = (roc, seq)
        return body[:header_len] + plain
