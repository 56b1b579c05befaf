"""Files and directories readable by their owner only (0600 / 0700), whatever the process umask.

The store (reports, job records, API key hashes), kept leg audio and the upload spool hold recordings of people
and secrets: they are created private. Modes are set explicitly after creation (a umask can only remove bits,
and a permissive one would otherwise leave them world-readable). Existing files and directories are left as
their owner made them, except those this module created on the way; ``open_to_others`` names those that other
users can read, so that the service warns about a store or audio folder made by an older version or by hand.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """``mkdir -p`` where every directory created is 0700 (existing ones are not touched)."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by another process or thread
        os.chmod(d, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty and 0600 if it does not exist (so that SQLite, which gives its journal and WAL
    files the database's mode, opens a private file); an existing file is left as it is."""
    path = Path(path)
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return path
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def open_private(path: Path, mode: str = "wb") -> IO[Any]:
    """``open(path, mode)`` for writing, the file created (or truncated) with mode 0600."""
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


def open_to_others(paths: Iterable[Path]) -> list[tuple[Path, int]]:
    """The given paths, and the files and directories directly inside given directories, that users other
    than the owner can read, write or enter (mode & 0o077), with their modes. Missing paths are skipped."""
    found = []
    for path in paths:
        path = Path(path)
        try:
            entries = [path, *(sorted(path.iterdir()) if path.is_dir() else [])]
        except OSError:
            continue
        for p in entries:
            try:
                mode = stat.S_IMODE(p.lstat().st_mode)
            except OSError:
                continue
            if mode & 0o077 and not p.is_symlink():
                found.append((p, mode))
    return found
