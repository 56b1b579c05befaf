"""Where recordings come from besides local files: HTTP(S) and SFTP recording servers (and uploads).

The helpers here are shared by every source: a safe local file name, and a copy that holds the size and time
limits while the bytes stream in."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import BinaryIO

from callqa.errors import FetchError, LimitError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str, default: str = "recording") -> str:
    """A file name that cannot leave its directory: odd characters replaced, at most 100 characters."""
    return _UNSAFE.sub("_", name).strip("._")[:100] or default


def copy_limited(blocks: Iterable[bytes], out: BinaryIO, what: str, max_bytes: int, deadline: float,
                 timeout_s: float) -> int:  # fmt: skip
    """Write ``blocks`` to ``out``; LimitError past ``max_bytes``, FetchError past the ``deadline``
    (``time.monotonic()``). Returns the bytes written."""
    total = 0
    for block in blocks:
        total += len(block)
        if total > max_bytes:
            raise LimitError(f"{what} is larger than the limit of {max_bytes} bytes")
        if time.monotonic() > deadline:
            raise FetchError(f"fetching {what} took longer than {timeout_s:g} s")
        out.write(block)
    return total
