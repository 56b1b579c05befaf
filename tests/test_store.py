"""The cache: same file and settings hit; a changed file, setting or expiry miss; the store survives junk. Each test
runs on both stores: the SQLite file (the default) and a PostgreSQL database (skipped without a server)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import calls
import pytest
from conftest import write_wav

from callqa.config import AnalysisSettings, Settings
from callqa.service.cache import recording_key
from callqa.service.recordings import analyze_recording
from callqa.store import Store


@pytest.fixture
def settings(db_target: str | Path, tmp_path: Path) -> Settings:
    return Settings(db=db_target, work_dir=tmp_path / "data", models_dir=tmp_path / "models",
                    analysis=AnalysisSettings(nisqa=False))  # fmt: skip


@pytest.fixture
def call_file(tmp_path: Path) -> Path:
    return write_wav(tmp_path / "call.wav", calls.leg(6, [0.5]), calls.RATE)


def test_rerun_is_a_cache_hit(call_file: Path, settings: Settings) -> None:
    store = Store(settings.db)
    first, cached1 = analyze_recording([call_file], settings, store=store)
    second, cached2 = analyze_recording([call_file], settings, store=store)
    assert (cached1, cached2) == (False, True)
    assert second == first
    assert store.get(first.id) == first
    assert store.get(first.id[:6]) == first  # unique prefix
    assert [c.id for c in store.list()] == [first.id]
    if isinstance(settings.db, Path):
        with sqlite3.connect(settings.db) as raw:
            assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_changed_file_is_a_miss(call_file: Path, settings: Settings, tmp_path: Path) -> None:
    store = Store(settings.db)
    first, _ = analyze_recording([call_file], settings, store=store)
    copy = tmp_path / "copy.wav"
    shutil.copy(call_file, copy)
    assert analyze_recording([copy], settings, store=store)[1] is True  # same content, other name: still a hit
    data = bytearray(call_file.read_bytes())
    data[-100:] = bytes(100)  # same size, different samples
    call_file.write_bytes(bytes(data))
    changed, cached = analyze_recording([call_file], settings, store=store)
    assert cached is False and changed.id != first.id


def test_changed_setting_is_a_miss(call_file: Path, settings: Settings) -> None:
    store = Store(settings.db)
    first, _ = analyze_recording([call_file], settings, store=store)
    other = settings.model_copy(update={"analysis": AnalysisSettings(nisqa=False, silence_noise_db=-40)})
    again, cached = analyze_recording([call_file], other, store=store)
    assert cached is False and again.id != first.id
    assert again.settings["silence_noise_db"] == -40
    assert recording_key([call_file], settings, None) != recording_key([call_file], settings, ["agent", "customer"])


def test_expired_entry_is_a_miss(call_file: Path, settings: Settings) -> None:
    store = Store(settings.db)
    report, _ = analyze_recording([call_file], settings, store=store)
    assert store.cached(report.cache_key, ttl_s=3600) is not None
    assert store.cached(report.cache_key, ttl_s=3600, now=report.created_at.timestamp() + 3601) is None
    short = settings.model_copy(update={"cache_ttl_s": 0.0})
    assert analyze_recording([call_file], short, store=store)[1] is False
    assert store.get(report.id) is not None  # expired reports stay readable by id


def test_unknown_id_and_unreadable_row(settings: Settings) -> None:
    store = Store(settings.db)
    assert store.get("doesnotexist") is None
    with store.connect() as db:
        db.execute("INSERT INTO reports (id, cache_key, created_at, source, verdict, duration_s, report) "
                   "VALUES ('abc', 'k', 1e12, 's', 'good', 1.0, '{not json')")  # fmt: skip
    assert store.get("abc") is None
    assert store.cached("k", ttl_s=1e13) is None


def test_unwritable_store_is_a_clear_error(tmp_path: Path) -> None:
    from callqa.errors import StoreError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot open"):
        Store(blocker / "sub" / "store.sqlite3")
