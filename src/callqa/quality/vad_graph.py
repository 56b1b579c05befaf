"""Silero VAD v6 with its encoder as matrix products over the whole batch, derived from faster-whisper's model.

The packaged graph computes each 32 ms window's features with 1-D convolutions (an STFT as a 256-tap convolution
with stride 128, then four 3-tap layers over 4, 2 and 1 time steps). ONNX Runtime runs a batched 1-D convolution
one batch item at a time, as many small matrix products: on a 3-minute leg (5,625 windows) the encoder took
about three quarters of the model's time. Here the same layers are written as im2col and one matrix product per
layer over all windows of a run: the same weights (read from faster-whisper's file), the same inputs and outputs
(``input``, ``h``, ``c`` -> ``speech_probs``, ``hn``, ``cn``), the LSTM decoder unchanged. The STFT frame the
model computes and then drops (the first of five) is not computed. Probabilities agree with the packaged graph
to float32 rounding (a few 1e-6); tests compare the speech segments with faster-whisper's on real recordings.

The graph is built with the ``onnx`` package once per copy of the model and kept in the models directory
(importing ``onnx`` takes about a second), like NISQA's export.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from callqa.digest import sha256_file

CONTEXT, FRAME, HOP = 64, 512, 128  # the model's input: 64 samples of context + a 512-sample window
BASIS = "encoder.feature_extractor.forward_basis_buffer"


def cached_path(original: Path, cache_dir: Path) -> Path:
    """Where the derived graph of ``original`` is kept (named by the original's digest)."""
    return cache_dir / f"silero_vad_v6-gemm-{sha256_file(original)[:12]}.onnx"


def derived_model(original: Path, cache_dir: Path) -> Path | None:
    """The derived graph's file, built on first use; None when it cannot be built (``onnx`` not installed, the
    model not the expected Silero v6 graph, or the directory not writable): the caller runs the original."""
    target = cached_path(original, cache_dir)
    if target.is_file():
        return target
    if not _writable(cache_dir):  # checked first: a read-only models directory must not cost onnx's import each run
        return None
    try:
        data = build(original)
    except (ImportError, KeyError, ValueError, IndexError):
        return None
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
    except OSError:
        return None
    return target


def _writable(directory: Path) -> bool:
    """Whether ``directory``, or the nearest of its parents that exists, can be written."""
    for d in (directory, *directory.parents):
        if d.exists():
            return d.is_dir() and os.access(d, os.W_OK | os.X_OK)
    return False


def _tap_major(w: np.ndarray) -> np.ndarray:
    """A Conv1d weight (out, in, taps) as the matrix (taps * in, out) for im2col columns ordered tap by tap."""
    return np.ascontiguousarray(w.transpose(2, 1, 0).reshape(-1, w.shape[0]))


def build(original: Path) -> bytes:
    """The derived graph of faster-whisper's ``silero_vad_v6.onnx`` (serialized ONNX)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(original))
    g = model.graph
    weights = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    nodes = list(g.node)
    names = [n.name for n in nodes]
    cut = names.index("/Transpose")  # the encoder's output, (batch, 1, 128), goes to the LSTM decoder
    convs = [weights[f"encoder.conv_layers.{i}.weight"] for i in range(4)]
    basis = weights[BASIS]
    if basis.shape != (258, 1, 256) or [w.shape for w in convs] != [(128, 129, 3), (64, 128, 3), (64, 64, 3),
                                                                    (128, 64, 3)]:  # fmt: skip
        raise ValueError("not the Silero VAD v6 graph this derivation is written for")
    inits: dict[str, np.ndarray] = {
        "g_basis": np.ascontiguousarray(basis[:, 0, :].T),  # (256, 258): real parts, then imaginary parts
        "g_w0": _tap_major(convs[0]),
        "g_w1": _tap_major(convs[1]),
        "g_w2": _tap_major(convs[2])[64:],  # taps 1 and 2: tap 0 sees the zero padding before the first step
        "g_w3": np.ascontiguousarray(convs[3][:, :, 1].T),  # one step: only the middle tap sees data
        **{f"g_b{i}": weights[f"encoder.conv_layers.{i}.bias"] for i in range(4)},
        "g_shape_blocks": np.array([0, 5, HOP], np.int64),
        "g_shape_flat": np.array([-1, 128], np.int64),
        "g_shape_lstm": np.array([-1, 1, 128], np.int64),
        "g_pad_time": np.array([0, 1, 0, 0, 1, 0], np.int64),  # one zero step before and after, (batch, t, ch)
    }
    out: list[Any] = []

    def const(*values: int) -> str:
        name = "g_k_" + "_".join(str(v).replace("-", "m") for v in values)
        inits[name] = np.array(values, np.int64)
        return name

    def op(kind: str, inputs: list[str], name: str, **attrs: Any) -> str:
        out.append(helper.make_node(kind, inputs, [name], name=name, **attrs))
        return name

    def dense(x: str, layer: int) -> str:  # relu(x @ W + b)
        product = op("MatMul", [x, f"g_w{layer}"], f"g_mm{layer}")
        return op("Relu", [op("Add", [product, f"g_b{layer}"], f"g_add{layer}")], f"g_relu{layer}")

    x = g.input[0].name  # (batch, 576)
    # The packaged graph reflect-pads 128 samples on both sides and takes STFT frames 1-4 (of 5) at hop 128:
    # padded samples 128-767, i.e. the input followed by the reflection of its last 64 samples (574 down to 511)
    last = CONTEXT + FRAME - 2  # 574
    tail = op("Slice", [x, const(last), const(last - 64), const(1), const(-1)], "g_reflect")  # 574, 573, ..., 511
    padded = op("Concat", [x, tail], "g_padded", axis=1)  # (batch, 640)
    blocks = op("Reshape", [padded, "g_shape_blocks"], "g_blocks")  # (batch, 5, 128)
    first = op("Slice", [blocks, const(0), const(4), const(1)], "g_first")
    second = op("Slice", [blocks, const(1), const(5), const(1)], "g_second")
    frames = op("Concat", [first, second], "g_frames", axis=2)  # (batch, 4, 256)
    spec = op("MatMul", [frames, "g_basis"], "g_spec")  # (batch, 4, 258)
    re = op("Slice", [spec, const(0), const(129), const(2)], "g_re")
    im = op("Slice", [spec, const(129), const(258), const(2)], "g_im")
    power = op("Add", [op("Mul", [re, re], "g_re2"), op("Mul", [im, im], "g_im2")], "g_power")
    mag = op("Sqrt", [power], "g_mag")  # (batch, 4, 129)
    p0 = op("Pad", [mag, "g_pad_time"], "g_p0")  # (batch, 6, 129)
    cols0 = op("Concat", [op("Slice", [p0, const(j), const(j + 4), const(1)], f"g_p0_{j}") for j in range(3)],
               "g_cols0", axis=2)  # fmt: skip
    h0 = dense(cols0, 0)  # (batch, 4, 128), 3 taps, stride 1
    p1 = op("Pad", [h0, "g_pad_time"], "g_p1")  # (batch, 6, 128)
    cols1 = op("Concat", [op("Slice", [p1, const(j), const(j + 3), const(1), const(2)], f"g_p1_{j}")
                          for j in range(3)], "g_cols1", axis=2)  # fmt: skip
    h1 = dense(cols1, 1)  # (batch, 2, 64), stride 2
    h2 = dense(op("Reshape", [h1, "g_shape_flat"], "g_flat1"), 2)  # (batch, 64), stride 2: one step
    h3 = dense(h2, 3)  # (batch, 128)
    out.append(helper.make_node("Reshape", [h3, "g_shape_lstm"], [nodes[cut].output[0]], name="g_to_lstm"))
    decoder = nodes[cut + 1 :]
    used = {i for n in decoder for i in n.input}
    initializers = [numpy_helper.from_array(v, k) for k, v in inits.items()]
    initializers += [i for i in g.initializer if i.name in used]
    graph = helper.make_graph(out + decoder, "silero_vad_v6_gemm", list(g.input), list(g.output), initializers)
    derived = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    onnx.checker.check_model(derived)
    return bytes(derived.SerializeToString())
