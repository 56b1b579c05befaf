"""A live stream's payloads on disk instead of in memory.

A thousand calls in progress at once carry about 16 MB of G.711 a second; kept as Python bytes objects they would
cost some 200 bytes a packet of memory for as long as each call lasts. ``PayloadSpool`` keeps a stream's newest
payloads in memory and appends them to a file of the stream's own every ``CHUNK`` bytes (one write and no open
file between them, so thousands of streams need no thousands of descriptors), and reads the file back in one go
when the call is analysed. The file is deleted with the spool (when its call has been analysed and dropped)."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import weakref
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path

CHUNK = 32 * 1024  # bytes held in memory per stream before they are appended to its file (about 4 s of G.711)


class PayloadSpool:
    """List-like (``append``, ``extend``, ``len``, indexing, iteration) payloads of one stream, spooled to
    ``directory``."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._path: str | None = None
        self._sizes = array("i")
        self._tail: list[bytes] = []  # the payloads not written yet
        self._tail_bytes = 0
        self._written = 0  # payloads in the file
        self._data: bytes | None = None  # the file's contents, once read
        self._starts: array[int] | None = None

    def append(self, payload: bytes) -> None:
        self._sizes.append(len(payload))
        self._tail.append(payload)
        self._tail_bytes += len(payload)
        if self._tail_bytes >= CHUNK:
            self._write()

    def extend(self, payloads: Iterable[bytes]) -> None:
        payloads = list(payloads)
        self._sizes.extend(map(len, payloads))
        self._tail += payloads
        self._tail_bytes += sum(self._sizes[len(self._sizes) - len(payloads) :]) if payloads else 0
        if self._tail_bytes >= CHUNK:
            self._write()

    def _write(self) -> None:
        if self._path is None:
            fd, self._path = tempfile.mkstemp(prefix="stream-", dir=self._dir)
            os.close(fd)
            weakref.finalize(self, _remove, self._path)
        chunk = b"".join(self._tail)
        with open(self._path, "ab") as f:
            f.write(chunk)
        if self._data is not None and self._starts is not None:  # read already (live transcription): kept whole
            total = len(self._data)
            for size in self._sizes[self._written : self._written + len(self._tail)]:
                self._starts.append(total)
                total += size
            self._data += chunk
        self._written += len(self._tail)
        self._tail, self._tail_bytes = [], 0

    def _load(self) -> tuple[bytes, array[int]]:
        if self._data is None or self._starts is None:
            assert self._path is not None
            with open(self._path, "rb") as f:
                self._data = f.read()
            starts, total = array("q"), 0
            for size in self._sizes[: self._written]:
                starts.append(total)
                total += size
            self._starts = starts
        return self._data, self._starts

    def __len__(self) -> int:
        return len(self._sizes)

    def __getitem__(self, i: int | slice) -> bytes | list[bytes]:  # type: ignore[override]
        if isinstance(i, slice):
            return [self._one(j) for j in range(*i.indices(len(self)))]
        return self._one(i)

    def _one(self, i: int) -> bytes:
        n = len(self._sizes)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        if i >= self._written:
            return self._tail[i - self._written]
        data, starts = self._load()
        return data[starts[i] : starts[i] + self._sizes[i]]

    def __iter__(self) -> Iterator[bytes]:
        for i in range(len(self)):
            yield self._one(i)

    def fresh(self) -> PayloadSpool:
        """An empty spool in the same directory."""
        return PayloadSpool(self._dir)

    @property
    def path(self) -> str | None:
        return self._path


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def spool_directory() -> Path:
    """A private directory for this process's spools, removed when it exits."""
    path = Path(tempfile.mkdtemp(prefix="callqa-spool-"))
    atexit.register(shutil.rmtree, path, True)
    return path
