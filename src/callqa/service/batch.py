"""A folder of recordings: group the files into calls, analyse them in worker processes, write JSON lines.

Bad files are listed and the batch goes on; a run cut short keeps every finished call, and a second run with the
same output file skips the calls already in it (resumable).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TextIO

from callqa.config import Settings
from callqa.errors import CallqaError, InputError
from callqa.service.recordings import analyze_recording
from callqa.store import Store

AUDIO_SUFFIXES = {".wav", ".mp3", ".gsm", ".ogg", ".oga", ".opus", ".flac", ".m4a", ".aac", ".au", ".sln", ".wma"}
_LEG_SUFFIX = re.compile(r"[-_.](in|out|agent|customer|caller|callee)$", re.IGNORECASE)


def group_calls(directory: Path) -> list[list[Path]]:
    """Audio files under ``directory`` grouped into calls: ``X-in``/``X-out`` (and agent/customer,
    caller/callee) pairs become two-leg calls, every other file is a call of its own (stereo or mixed)."""
    if not directory.is_dir():
        raise InputError(f"not a directory: {directory}")
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    groups: dict[tuple[Path, str], list[Path]] = {}
    for f in files:
        stem = _LEG_SUFFIX.sub("", f.stem)
        groups.setdefault((f.parent, stem), []).append(f)
    calls: list[list[Path]] = []
    for members in groups.values():
        if len(members) == 2 and all(_LEG_SUFFIX.search(m.stem) for m in members):
            calls.append(members)
        else:
            calls.extend([m] for m in members)
    return calls


@dataclass
class BatchResult:
    total: int
    analysed: int = 0  # including the calls skipped because an earlier run wrote them
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)


def _call_id(paths: list[Path]) -> str:
    """How a call is named in the output: its files, sorted, joined with ' + '."""
    return " + ".join(sorted(str(p) for p in paths))


def done_calls(out_file: Path) -> set[str]:
    """Calls already in a previous run's output (lines that do not parse, e.g. a cut-off last line, are ignored)."""
    done: set[str] = set()
    if not out_file.exists():
        return done
    for line in out_file.read_text(errors="replace").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and isinstance(item.get("input"), str):
            done.add(item["input"])
    return done


@lru_cache
def _store(path: Path) -> Store:
    """One Store per worker process (opening one runs the schema script)."""
    return Store(path)


def _analyse_one(paths: list[Path], settings: Settings, use_cache: bool) -> str:
    """One call in a worker process (models load once per process; SQLite in WAL mode takes concurrent writers).
    The line carries the call's input files, so a later run can tell it was done."""
    report, _ = analyze_recording(paths, settings, store=_store(settings.db), use_cache=use_cache)
    return json.dumps({"input": _call_id(paths), **report.model_dump(mode="json")})


def run_batch(
    directory: Path,
    settings: Settings,
    jobs: int,
    sink: TextIO,
    done: set[str] | None = None,
    use_cache: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> BatchResult:
    """Analyse every call in ``directory`` with ``jobs`` worker processes, one JSON line per call to ``sink``
    (flushed as each call finishes). ``done`` names calls to skip; ``on_progress(finished, total)``."""
    calls = group_calls(directory)
    if not calls:
        raise InputError(f"no audio files in {directory}")
    done = done or set()
    todo = [c for c in calls if _call_id(c) not in done]
    result = BatchResult(total=len(calls), analysed=len(calls) - len(todo), skipped=len(calls) - len(todo))
    Store(settings.db)  # create the schema and switch to WAL once, before workers open it concurrently
    finished = result.analysed
    if on_progress:
        on_progress(finished, result.total)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_analyse_one, paths, settings, use_cache): paths for paths in todo}
        for fut in as_completed(futures):
            paths = futures[fut]
            try:
                sink.write(fut.result() + "\n")
                sink.flush()  # a run cut short keeps every finished call
                result.analysed += 1
            except CallqaError as exc:
                result.failures.append((_call_id(paths), str(exc)))
            except Exception as exc:  # a crash on one call must not stop the batch
                result.failures.append((_call_id(paths), f"{type(exc).__name__}: {exc}"))
            finished += 1
            if on_progress:
                on_progress(finished, result.total)
    return result
