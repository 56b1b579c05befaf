"""Model download: verified against the pinned hash, nothing left behind on failure (local HTTP server)."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from callqa.errors import ModelError
from callqa.model_download import download_verified


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "weights.tar").write_bytes(b"model bytes" * 1000)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[assignment,method-assign]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_with_matching_hash(server: str, tmp_path: Path) -> None:
    digest = hashlib.sha256(b"model bytes" * 1000).hexdigest()
    dest = download_verified(f"{server}/weights.tar", tmp_path / "models" / "nisqa.tar", digest)
    assert dest.read_bytes() == b"model bytes" * 1000


def test_hash_mismatch_leaves_nothing(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "models" / "nisqa.tar"
    with pytest.raises(ModelError, match="checksum mismatch"):
        download_verified(f"{server}/weights.tar", dest, "0" * 64)
    assert list(dest.parent.iterdir()) == []


def test_missing_and_unreachable(server: str, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot download"):
        download_verified(f"{server}/absent.tar", tmp_path / "a.tar", "0" * 64)
    with pytest.raises(ModelError, match="cannot download"):
        download_verified("http://127.0.0.1:9/none", tmp_path / "b.tar", "0" * 64, timeout_s=5)
    assert not (tmp_path / "a.tar").exists() and not (tmp_path / "b.tar").exists()
