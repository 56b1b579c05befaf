"""Exceptions raised by callqa.

Every error a user can act on derives from ``CallqaError`` and carries a plain message::

    CallqaError                 root; the CLI maps it to exit code 2, the API to a 4xx/5xx JSON body
    ├── InputError              the input cannot be analysed (missing file, wrong arguments)
    │   ├── DecodeError         the bytes are not audio FFmpeg can decode, or are truncated beyond use
    │   ├── LimitError          the input exceeds a configured limit (duration, size)
    │   └── FetchError          a remote recording could not be fetched (refused host, HTTP error, timeout)
    ├── ParseError(ValueError)  a protocol or file structure is malformed ("RTCP packet is truncated")
    ├── ModelError              a model is missing or failed to load (names the missing extra or file)
    └── StoreError              the result store cannot be read or written
"""

from __future__ import annotations


class CallqaError(Exception):
    """Root of all callqa errors."""


class InputError(CallqaError):
    """The input cannot be analysed."""


class DecodeError(InputError):
    """The input is not decodable audio."""


class LimitError(InputError):
    """The input exceeds a configured limit."""


class FetchError(InputError):
    """A remote recording could not be fetched."""


class ParseError(CallqaError, ValueError):
    """A protocol message or file structure is malformed."""


class ModelError(CallqaError):
    """A model is unavailable or failed to load."""


class StoreError(CallqaError):
    """The result store failed."""
