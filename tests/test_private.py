"""The store, kept audio and the upload spool are private (0600 files, 0700 directories) whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import write_wav

from callqa.api.keys import KeyStore
from callqa.config import AnalysisSettings, Settings
from callqa.private import open_private, private_dir, private_file
from callqa.service.jobs import audio_dir, spool_dir
from callqa.service.recordings import analyze_recording
from callqa.store import Store


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)  # the most permissive umask: every created file would be 0666 / 0777 without care
    try:
        yield
    finally:
        os.umask(old)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_store_audio_spool_and_keys_are_private(tmp_path: Path, open_umask: None) -> None:
    data = tmp_path / "fresh" / "data"
    settings = Settings(db=data / "callqa.sqlite3", analysis=AnalysisSettings(nisqa=False, dnsmos=False))
    store = Store(settings.db)
    KeyStore(store).create("write")  # API key hashes live in the store
    leg = write_wav(tmp_path / "agent.wav", np.sin(np.arange(16000) / 3) * 0.3, 8000)
    analyze_recording([leg], settings, None, store, audio_dir=audio_dir(settings))
    spool = spool_dir(settings, "job1")
    with open_private(spool / "0-upload.wav") as f:
        f.write(b"RIFF")
    with store.connect() as db:  # while a connection is open, SQLite's WAL and shared-memory files exist
        db.execute("CREATE TABLE IF NOT EXISTS t (x)")
        created = [tmp_path / "fresh", *(tmp_path / "fresh").rglob("*")]
        files = {p: mode(p) for p in created if p.is_file()}
        dirs = {p: mode(p) for p in created if p.is_dir()}
    names = {p.name for p in files}
    assert {"callqa.sqlite3", "callqa.sqlite3-wal", "callqa.sqlite3-shm", "0-upload.wav"} <= names
    assert any(p.suffix == ".wav" and p.parent.parent.name == "audio" for p in files)  # a kept leg
    assert {p: oct(m) for p, m in files.items() if m != 0o600} == {}
    assert {p: oct(m) for p, m in dirs.items() if m != 0o700} == {}


def test_existing_places_are_left_as_they_are(tmp_path: Path, open_umask: None) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    private_dir(shared / "a" / "b")
    assert mode(shared) == 0o755 and mode(shared / "a") == mode(shared / "a" / "b") == 0o700
    f = shared / "given.sqlite3"
    f.write_bytes(b"")
    os.chmod(f, 0o640)
    private_file(f)
    assert mode(f) == 0o640  # the operator's choice for a file they made
    with open_private(shared / "new.bin") as out:
        out.write(b"x")
    assert mode(shared / "new.bin") == 0o600


def test_the_service_warns_about_call_data_others_can_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A store and audio folder made before files were private (or by hand, with a loose umask) stay as they
    are, but the service names each at start with the chmod that fixes it; private ones give no warning."""
    from fastapi.testclient import TestClient

    from callqa.api.main import create_app

    settings = Settings(db=tmp_path / "data" / "callqa.sqlite3", analysis=AnalysisSettings(nisqa=False))
    Store(settings.db)
    private_dir(audio_dir(settings) / "abc")  # as the service makes it
    with caplog.at_level("WARNING", logger="callqa.api"), TestClient(create_app(settings, provider=None)):
        pass
    assert not [r for r in caplog.records if "open to other users" in r.getMessage()]
    os.chmod(settings.db, 0o644)
    os.chmod(audio_dir(settings) / "abc", 0o755)
    caplog.clear()
    with caplog.at_level("WARNING", logger="callqa.api"), TestClient(create_app(settings, provider=None)):
        pass
    warned = [r.getMessage() for r in caplog.records if "open to other users" in r.getMessage()]
    assert any(f"chmod 600 {settings.db}" in w and "mode 644" in w for w in warned), warned
    assert any(f"chmod 700 {audio_dir(settings) / 'abc'}" in w for w in warned), warned
    assert mode(settings.db) == 0o644  # the operator's file is not changed behind their back
