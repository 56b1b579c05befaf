"""SHA-256 of files and of JSON-able material: cache keys, model versions, download checks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from callqa.errors import InputError


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MB blocks; a missing or unreadable file is an InputError."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except FileNotFoundError as exc:
        raise InputError(f"file not found: {path}") from exc
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    return h.hexdigest()


def digest(material: object) -> str:
    """Hex SHA-256 of a JSON-able value (keys sorted, so equal material gives equal digests)."""
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
