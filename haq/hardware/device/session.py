"""One onnxruntime session as the protocol wants it: pinned runtime options, seeded inputs,
and one run whose failure is a one-line :class:`~haq.hardware.device.guard.Refusal` (steps 1
and 2). Models pass :func:`~haq.hardware.device.guard.check_model` before they get here."""

from __future__ import annotations

import time
from typing import Mapping

import numpy as np
import onnxruntime as ort

from haq.core.errors import DeviceError
from haq.hardware.device.guard import DEFAULT_MAX_INPUT_ELEMENTS, Refusal, check_input_elements
from haq.hardware.device.settings import ProtocolConfig

_NUMPY_TYPES: dict[str, type] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def session_options(cfg: ProtocolConfig) -> ort.SessionOptions:
    """Session options that pin threads, execution order and spinning (step 1)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = cfg.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.load_model_format", "ONNX")  # never the ORT format, whatever the bytes say
    opts.log_severity_level = 3
    return opts


def open_session(model: bytes, opts: ort.SessionOptions) -> ort.InferenceSession:
    """A CPU session for ONNX bytes; anything onnxruntime refuses becomes a one-line error."""
    if not isinstance(model, (bytes, bytearray)) or not model:
        raise Refusal("bad_model", "a model must be non-empty ONNX protobuf bytes")
    try:
        return ort.InferenceSession(bytes(model), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several unrelated types for bad models
        raise runtime_refusal("onnxruntime cannot load the model", exc) from exc


def random_feeds(sess: ort.InferenceSession, seed: int, max_elements: int = DEFAULT_MAX_INPUT_ELEMENTS) -> dict[str, np.ndarray]:
    """Seeded random inputs shaped from the model's inputs (symbolic dimensions -> 1); an input
    declaring more than ``max_elements`` elements is refused (``too_large``) before allocation."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for inp in sess.get_inputs():
        shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in inp.shape)
        check_input_elements(inp.name, shape, max_elements)
        dtype = _NUMPY_TYPES.get(inp.type)
        if dtype is None:
            raise DeviceError(f"input '{inp.name}' has type {inp.type}; supported: {', '.join(sorted(_NUMPY_TYPES))}")
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[inp.name] = rng.integers(0, 2, shape).astype(dtype)
        else:
            feeds[inp.name] = rng.integers(0, 8, shape).astype(dtype)
    return feeds


def run_once(sess: ort.InferenceSession, feeds: Mapping[str, np.ndarray]) -> float:
    """Seconds of one run; runtime failures become :class:`Refusal`."""
    t0 = time.perf_counter()
    try:
        sess.run(None, dict(feeds))
    except Exception as exc:  # onnxruntime's runtime errors have no common base
        raise runtime_refusal("onnxruntime failed to run the model", exc) from exc
    return time.perf_counter() - t0


def runtime_refusal(what: str, exc: BaseException) -> Refusal:
    """A runtime failure as a :class:`Refusal`: ``too_large`` when memory ran out (the worker's
    address-space cap), else ``bad_model``; the runtime's own text is detail, never public."""
    text = str(exc)
    if isinstance(exc, MemoryError) or "bad_alloc" in text or "allocate memory" in text:
        return Refusal("too_large", "the model needs more memory than this device allows", first_line(exc))
    return Refusal("bad_model", what, first_line(exc))


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (onnxruntime's messages run to pages)."""
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
