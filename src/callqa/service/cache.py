"""The result cache: what a cache key is made of, and the one place a stored report is looked up by it.

A key is the SHA-256 of a canonical JSON document holding the input's identity (the audio bytes' hashes, or a
capture's hash and the call's id) plus every analysis setting and the versions of the models that will run, so
a changed file, setting or model never serves a stale report. Entries older than ``cache_ttl_s`` are ignored.
"""

from __future__ import annotations

from pathlib import Path

from callqa import model_loaders
from callqa.config import Settings
from callqa.digest import digest, sha256_file
from callqa.quality import callmos, nisqa
from callqa.report import CallReport, Role
from callqa.store import Store


def analysis_material(settings: Settings) -> dict[str, object]:
    """What every cache key includes: the analysis settings and the versions of the models that will run."""
    s = settings.analysis
    weights = settings.resolved_nisqa_weights()
    runs_nisqa = s.nisqa and not nisqa.unavailable_reason(weights, settings.models_dir)
    nisqa_version = nisqa.version(weights) if runs_nisqa else ""
    extra = {"whisper": model_loaders.whisper_version(s.whisper_model)} if s.transcribe else {}
    rules = sha256_file(s.rules_file) if s.rules_file is not None else ""
    return {"analysis": s.model_dump(mode="json"), "rules": rules,
            "models": {**model_loaders.versions(), "nisqa": nisqa_version, "callmos": callmos.version(),
                       **extra}}  # fmt: skip


def recording_key(paths: list[Path], settings: Settings, roles: list[Role] | None,
                  hashes: list[str] | None = None) -> str:  # fmt: skip
    """Audio content + roles + analysis settings + model versions. ``hashes`` are the files' SHA-256 when the
    caller already has them (computed while an upload streamed in)."""
    audio = hashes if hashes is not None else [sha256_file(p) for p in paths]
    return digest({"audio": audio, "roles": roles, **analysis_material(settings)})


def capture_key(source_hash: str, call_id: str, stats_only: bool, settings: Settings) -> str:
    """A captured call: the capture's identity, the call within it, the mode and the SRTP keys tried."""
    return digest({
        "capture": source_hash, "call": call_id, "stats_only": stats_only, "srtp": digest(settings.srtp_keys),
        **analysis_material(settings),
    })  # fmt: skip


def lookup(store: Store | None, key: str, settings: Settings) -> CallReport | None:
    """The stored report for ``key`` when there is a fresh one."""
    if store is None:
        return None
    return store.cached(key, settings.cache_ttl_s)
