"""Download optional model weights, verified against a pinned SHA-256 before they are used."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from callqa.digest import sha256_file
from callqa.errors import ModelError
from callqa.quality.nisqa import UPSTREAM_SHA256, UPSTREAM_URL

MAX_BYTES = 50 * 1024 * 1024


def download_verified(url: str, dest: Path, sha256: str, timeout_s: float = 60.0) -> Path:
    """Stream ``url`` to a temporary file next to ``dest``, check its hash, then move it into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".")
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310
            total = 0
            while block := resp.read(1 << 16):
                total += len(block)
                if total > MAX_BYTES:
                    raise ModelError(f"{url} is larger than {MAX_BYTES} bytes: refusing it")
                h.update(block)
                f.write(block)
        if h.hexdigest() != sha256:
            raise ModelError(f"checksum mismatch for {url}: got {h.hexdigest()}, expected {sha256}")
        os.replace(tmp, dest)
        return dest
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise ModelError(f"cannot download {url}: {exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fetch_nisqa(models_dir: Path, url: str | None = None) -> Path:
    dest = models_dir / "nisqa.tar"
    if dest.is_file() and sha256_file(dest) == UPSTREAM_SHA256:
        return dest
    return download_verified(url or UPSTREAM_URL, dest, UPSTREAM_SHA256)
