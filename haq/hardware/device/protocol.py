"""The latency measurement protocol: how haq times an ONNX model on a device.

Shared 2-core machines are noisy (max samples reach 3-30x the median; two threads spread
medians by 74 %), so every figure haq stores comes from one documented procedure:

1. **Pinned runtime.** onnxruntime CPU provider, ``intra_op_num_threads = threads`` (1 by
   default), ``inter_op_num_threads = 1``, sequential execution, all graph optimizations, and
   ``session.intra_op.allow_spinning = "0"`` so an idle worker never burns the other core.
2. **Seeded inputs.** One random input per model input, shaped from the model (symbolic
   dimensions become 1), drawn from ``numpy.random.default_rng(seed)``: every session of a
   model sees the same data.
3. **Fresh sessions, interleaved.** ``sessions`` rounds; in each round every model gets a fresh
   ``InferenceSession``, in an order rotated by one per round, so slow drift of the machine hits
   every model alike instead of whichever was measured last.
4. **Warm-up.** At least ``warmup_runs`` runs *and* ``warmup_s`` seconds before timing.
5. **Timed samples.** ``repeats`` samples; one sample times ``k`` back-to-back runs and stores
   their mean, with ``k`` chosen from the warm-up so a sample lasts at least ``min_repeat_ms``
   (TVM's ``min_repeat_ms``): microsecond kernels are not timed at timer resolution. The
   default is 0.2 ms, far below TVM's tens of ms, because on a shared, oversubscribed machine
   a longer sample often spans a scheduler preemption: at load average 7 on 2 cores a third of
   1 ms samples did, which made IQR / median 3-7 instead of 0.1-0.3, and 20 ms samples raised
   the median itself 2-3x (``bench/protocol.py``). Short samples that were preempted are
   outliers the median ignores. On a dedicated device either choice gives the same median.
6. **Statistics.** Raw samples are kept. A model's latency is the median of its per-session
   medians; its noise is the interquartile range of all samples over their median. Means are
   never used.
7. **Re-measurement.** Models whose noise exceeds ``max_noise`` are measured again (the whole
   interleaved procedure, at most ``max_retries`` times; one by default, since a retry cures a
   burst of load but not a machine that stays busy); the least noisy attempt is kept and the
   number of attempts recorded.
8. **Drift sentinel.** Optionally a fixed sentinel model is measured at the start of every round
   and after every ``sentinel_every`` models; the spread of its medians (``drift``) says whether
   the machine changed speed during the batch.
9. **Realized kernels.** One extra, untimed session with profiling on lists the op types of
   the optimized graph that actually ran (``QLinearConv`` vs ``Conv``), because what runs is not
   always what was exported.

:meth:`ProtocolConfig.record` is the dict a cost table stores as its ``protocol`` metadata.
This module needs only numpy, onnxruntime and the standard library (the device agent imports
it on targets without torch); :func:`sentinel_model` alone needs the ``onnx`` package.
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Sequence

import numpy as np
import onnxruntime as ort

from haq.core.errors import HaqError
from haq.core.types import Log

PROTOCOL_VERSION = 1


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


class MeasureError(HaqError):
    """A model cannot be measured (not ONNX, fails to load or run, or the time limit passed)."""


@dataclass(frozen=True)
class ProtocolConfig:
    """How to time a model; the defaults are the protocol haq's shipped tables use.

    sessions: fresh inference sessions per model (rounds, interleaved across models).
    warmup_runs / warmup_s: a session is warmed up for at least this many runs and seconds.
    repeats: timed samples per session.
    min_repeat_ms: a sample batches enough runs to last at least this long.
    max_noise: IQR / median above which a model is measured again.
    max_retries: bound on those re-measurements.
    sentinel_every: measure the drift sentinel after every N models in a round (0 = never).
    seed: seed of the random inputs.
    threads: onnxruntime intra-op threads (1 keeps a shared machine quiet).
    """

    sessions: int = 5
    warmup_runs: int = 10
    warmup_s: float = 0.5
    repeats: int = 50
    min_repeat_ms: float = 0.2
    max_noise: float = 0.1
    max_retries: int = 1
    sentinel_every: int = 0
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        _check_int("sessions", self.sessions, 1, 100)
        _check_int("warmup_runs", self.warmup_runs, 0, 100_000)
        _check_float("warmup_s", self.warmup_s, 0.0, 600.0)
        _check_int("repeats", self.repeats, 1, 100_000)
        _check_float("min_repeat_ms", self.min_repeat_ms, 0.0, 60_000.0)
        _check_float("max_noise", self.max_noise, 0.0, 100.0)
        _check_int("max_retries", self.max_retries, 0, 100)
        _check_int("sentinel_every", self.sentinel_every, 0, 1_000_000)
        _check_int("seed", self.seed, 0, 2**63 - 1)
        _check_int("threads", self.threads, 1, 1024)

    def to_dict(self) -> dict[str, Any]:
        """The settings alone (what a remote request carries)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProtocolConfig:
        """Settings from an untrusted mapping: unknown keys and bad values are errors."""
        if not isinstance(data, Mapping):
            raise MeasureError(f"protocol settings must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MeasureError(f"unknown protocol setting(s) {', '.join(map(str, unknown))}; valid: {', '.join(sorted(known))}")
        return cls(**dict(data))

    def record(self) -> dict[str, Any]:
        """The full protocol description a table stores in its metadata."""
        return {
            "version": PROTOCOL_VERSION,
            "runtime": "onnxruntime",
            "runtime_version": ort.__version__,
            "provider": "CPUExecutionProvider",
            "intra_op_threads": self.threads,
            "inter_op_threads": 1,
            "execution_mode": "sequential",
            "allow_spinning": False,
            "graph_optimization": "all",
            "inputs": f"numpy default_rng({self.seed}); standard normal floats, small integers",
            "order": "fresh session per model per round, round order rotated by one",
            "statistic": "median of per-session medians (ms per run)",
            "noise": "IQR / median of all samples",
            **self.to_dict(),
        }


@dataclass(frozen=True)
class Measurement:
    """Raw samples of one model and the statistics derived from them.

    samples_ms: per session, the timed samples in ms per run (each the mean of
        ``runs_per_sample[session]`` back-to-back runs).
    kernels: op types of the optimized graph that ran, in execution order.
    wall_s: seconds spent on this model (session creation, warm-up, timing) in the kept attempt.
    attempts: how many times the protocol measured it (> 1 after noisy re-measurements).
    sentinel_ms: medians of the drift sentinel measured during the same batch (may be empty).
    """

    samples_ms: tuple[tuple[float, ...], ...]
    runs_per_sample: tuple[int, ...]
    kernels: tuple[str, ...]
    wall_s: float
    attempts: int = 1
    sentinel_ms: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.samples_ms or any(not s for s in self.samples_ms):
            raise MeasureError("a measurement needs at least one sample in every session")
        if len(self.runs_per_sample) != len(self.samples_ms):
            raise MeasureError(f"runs_per_sample has {len(self.runs_per_sample)} entries for {len(self.samples_ms)} sessions")
        values = [v for s in self.samples_ms for v in s] + list(self.sentinel_ms)
        if not all(math.isfinite(v) and v > 0 for v in values):
            raise MeasureError("measured times must be finite and positive")
        if any(k < 1 for k in self.runs_per_sample) or self.attempts < 1 or not self.wall_s >= 0:
            raise MeasureError("runs_per_sample and attempts must be >= 1 and wall_s >= 0")

    @property
    def session_medians(self) -> tuple[float, ...]:
        """Median of each session's samples (ms)."""
        return tuple(float(np.median(s)) for s in self.samples_ms)

    @property
    def median_ms(self) -> float:
        """The latency: median of the per-session medians (ms)."""
        return float(np.median(self.session_medians))

    @property
    def iqr_ms(self) -> float:
        """Interquartile range of all samples (ms)."""
        return iqr(self.all_samples())

    @property
    def noise(self) -> float:
        """IQR / median of all samples: the within-measurement noise."""
        return relative_iqr(self.all_samples())

    @property
    def session_spread(self) -> float:
        """(max - min) / median of the session medians: how far fresh sessions disagree."""
        return relative_range(self.session_medians)

    @property
    def drift(self) -> float:
        """(max - min) / median of the sentinel medians; 0 when no sentinel was measured."""
        return relative_range(self.sentinel_ms) if len(self.sentinel_ms) > 1 else 0.0

    @property
    def n_samples(self) -> int:
        """Number of timed samples over all sessions."""
        return sum(len(s) for s in self.samples_ms)

    def all_samples(self) -> np.ndarray:
        """All samples pooled (ms)."""
        return np.fromiter((v for s in self.samples_ms for v in s), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: raw samples plus the derived statistics (for readers without haq)."""
        return {
            "median_ms": self.median_ms,
            "iqr_ms": self.iqr_ms,
            "noise": self.noise,
            "session_medians_ms": list(self.session_medians),
            "session_spread": self.session_spread,
            "n_samples": self.n_samples,
            "drift": self.drift,
            "samples_ms": [list(s) for s in self.samples_ms],
            "runs_per_sample": list(self.runs_per_sample),
            "kernels": list(self.kernels),
            "wall_s": self.wall_s,
            "attempts": self.attempts,
            "sentinel_ms": list(self.sentinel_ms),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        """Rebuild from :meth:`to_dict` output (derived fields are recomputed, not trusted)."""
        try:
            return cls(
                samples_ms=tuple(tuple(float(v) for v in s) for s in data["samples_ms"]),
                runs_per_sample=tuple(int(k) for k in data["runs_per_sample"]),
                kernels=tuple(str(k) for k in data["kernels"]),
                wall_s=float(data["wall_s"]),
                attempts=int(data.get("attempts", 1)),
                sentinel_ms=tuple(float(v) for v in data.get("sentinel_ms", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MeasureError(f"malformed measurement record ({type(exc).__name__}: {exc}); expected Measurement.to_dict() output") from exc


def device_info(cfg: ProtocolConfig | None = None) -> dict[str, Any]:
    """What a measurement ran on: CPU model, core count, OS, runtime versions, threads."""
    return {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count() or 0,
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "threads": (cfg or ProtocolConfig()).threads,
    }


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux, else what platform reports)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def measure_models(
    models: Sequence[bytes],
    cfg: ProtocolConfig,
    sentinel: bytes | None = None,
    progress: Log | None = None,
    deadline: float | None = None,
) -> list[Measurement]:
    """Time every model with the protocol, interleaved, re-measuring noisy ones.

    ``deadline`` is a ``time.monotonic()`` value; passing it raises :class:`MeasureError`
    between runs, so a caller with a time limit is never stuck for longer than one run.
    """
    if not models:
        return []
    kernels = [realized_kernels(m, cfg) for m in models]
    results = _interleaved(models, kernels, cfg, sentinel, progress, deadline)
    for attempt in range(2, cfg.max_retries + 2):
        noisy = [i for i, m in enumerate(results) if m.noise > cfg.max_noise]
        if not noisy:
            break
        if progress:
            progress(f"re-measuring {len(noisy)} noisy model(s) (attempt {attempt}/{cfg.max_retries + 1})")
        again = _interleaved([models[i] for i in noisy], [kernels[i] for i in noisy], cfg, sentinel, progress, deadline)
        for i, new in zip(noisy, again):
            best = new if new.noise < results[i].noise else results[i]
            results[i] = Measurement(best.samples_ms, best.runs_per_sample, best.kernels, best.wall_s, attempt, best.sentinel_ms)
    return results


def realized_kernels(model: bytes, cfg: ProtocolConfig) -> tuple[str, ...]:
    """Op types of the optimized graph as executed (one profiled, untimed run)."""
    with tempfile.TemporaryDirectory(prefix="haq-profile-") as tmp:
        opts = session_options(cfg)
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "run")
        sess = open_session(model, opts)
        feeds = random_feeds(sess, cfg.seed)
        _run_once(sess, feeds)
        path = sess.end_profiling()
        with open(path, encoding="utf-8") as fh:
            events = json.load(fh)
    return kernels_from_profile(events)


def session_options(cfg: ProtocolConfig) -> ort.SessionOptions:
    """Session options that pin threads, execution order and spinning (step 1)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = cfg.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


def open_session(model: bytes, opts: ort.SessionOptions) -> ort.InferenceSession:
    """A CPU session for ONNX bytes; anything onnxruntime refuses becomes a one-line error."""
    if not isinstance(model, (bytes, bytearray)) or not model:
        raise MeasureError("a model must be non-empty ONNX protobuf bytes")
    try:
        return ort.InferenceSession(bytes(model), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several unrelated types for bad models
        raise MeasureError(f"onnxruntime cannot load the model: {_first_line(exc)}") from exc


def random_feeds(sess: ort.InferenceSession, seed: int) -> dict[str, np.ndarray]:
    """Seeded random inputs shaped from the model's inputs (symbolic dimensions -> 1)."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for inp in sess.get_inputs():
        shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in inp.shape)
        dtype = _NUMPY_TYPES.get(inp.type)
        if dtype is None:
            raise MeasureError(f"input '{inp.name}' has type {inp.type}; supported: {', '.join(sorted(_NUMPY_TYPES))}")
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[inp.name] = rng.integers(0, 2, shape).astype(dtype)
        else:
            feeds[inp.name] = rng.integers(0, 8, shape).astype(dtype)
    return feeds


def sentinel_model(size: int = 256) -> bytes:
    """A fixed fp32 MatMul + Relu used as the drift sentinel (needs the ``onnx`` package)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
        "haq_sentinel",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, size])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, size])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _interleaved(
    models: Sequence[bytes],
    kernels: Sequence[tuple[str, ...]],
    cfg: ProtocolConfig,
    sentinel: bytes | None,
    progress: Log | None,
    deadline: float | None,
) -> list[Measurement]:
    """Steps 3-5 and 8 for a list of models: rounds of fresh sessions in rotated order."""
    n = len(models)
    samples: list[list[tuple[float, ...]]] = [[] for _ in range(n)]
    batches: list[list[int]] = [[] for _ in range(n)]
    walls = [0.0] * n
    sentinel_ms: list[float] = []
    use_sentinel = sentinel is not None and cfg.sentinel_every > 0
    for rnd in range(cfg.sessions):
        for pos in range(n):
            if use_sentinel and pos % cfg.sentinel_every == 0:
                sentinel_ms.append(float(np.median(_time_session(sentinel, cfg, deadline)[0])))
            i = (pos + rnd) % n
            start = time.perf_counter()
            got, k = _time_session(models[i], cfg, deadline)
            walls[i] += time.perf_counter() - start
            samples[i].append(tuple(got))
            batches[i].append(k)
        if progress:
            progress(f"protocol: session {rnd + 1}/{cfg.sessions} done for {n} model(s)")
    return [
        Measurement(tuple(samples[i]), tuple(batches[i]), kernels[i], walls[i], 1, tuple(sentinel_ms))
        for i in range(n)
    ]


def _time_session(model: bytes, cfg: ProtocolConfig, deadline: float | None) -> tuple[list[float], int]:
    """One fresh session: warm up (step 4), then ``repeats`` batched samples (step 5)."""
    sess = open_session(model, session_options(cfg))
    feeds = random_feeds(sess, cfg.seed)
    warm: list[float] = []
    start = time.perf_counter()
    while len(warm) < max(cfg.warmup_runs, 1) or time.perf_counter() - start < cfg.warmup_s:
        _check_deadline(deadline)
        warm.append(_run_once(sess, feeds))
    per_run_ms = float(np.median(warm[-max(cfg.warmup_runs, 1):])) * 1e3
    k = runs_per_sample(per_run_ms, cfg.min_repeat_ms)
    out: list[float] = []
    for _ in range(cfg.repeats):
        _check_deadline(deadline)
        t0 = time.perf_counter()
        for _ in range(k):
            sess.run(None, feeds)
        out.append((time.perf_counter() - t0) * 1e3 / k)
    return out, k


def _run_once(sess: ort.InferenceSession, feeds: Mapping[str, np.ndarray]) -> float:
    """Seconds of one run; runtime failures become :class:`MeasureError`."""
    t0 = time.perf_counter()
    try:
        sess.run(None, dict(feeds))
    except Exception as exc:  # onnxruntime's runtime errors have no common base
        raise MeasureError(f"onnxruntime failed to run the model: {_first_line(exc)}") from exc
    return time.perf_counter() - t0


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise MeasureError("measurement stopped: its time limit passed")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise MeasureError(f"protocol setting {name} must be an integer in [{lo}, {hi}], got {value!r}")


def _check_float(name: str, value: object, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not lo <= value <= hi:
        raise MeasureError(f"protocol setting {name} must be a number in [{lo}, {hi}], got {value!r}")


def kernels_from_profile(events: object) -> tuple[str, ...]:
    """Op types of the executed nodes from an onnxruntime profile (first run, in order)."""
    if not isinstance(events, list):
        raise MeasureError("onnxruntime profile is not a JSON list of events")
    seen: dict[str, tuple[float, str]] = {}
    for ev in events:
        if not isinstance(ev, dict) or ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        name = str(ev["name"])
        op = str((ev.get("args") or {}).get("op_name", "?"))
        seen.setdefault(name, (float(ev.get("ts", 0.0)), op))
    return tuple(op for _, op in sorted(seen.values()))


def runs_per_sample(per_run_ms: float, min_repeat_ms: float) -> int:
    """Back-to-back runs in one sample so that it lasts at least ``min_repeat_ms``."""
    if per_run_ms <= 0 or not math.isfinite(per_run_ms):
        return 1
    return max(1, math.ceil(min_repeat_ms / per_run_ms))


def iqr(values: Sequence[float] | np.ndarray) -> float:
    """Interquartile range (linear interpolation)."""
    q1, q3 = np.percentile(np.asarray(values, dtype=np.float64), [25, 75])
    return float(q3 - q1)


def relative_iqr(values: Sequence[float] | np.ndarray) -> float:
    """IQR / median: a spread that outliers cannot inflate."""
    med = float(np.median(np.asarray(values, dtype=np.float64)))
    return iqr(values) / med if med > 0 else math.inf


def relative_range(values: Sequence[float] | np.ndarray) -> float:
    """(max - min) / median."""
    arr = np.asarray(values, dtype=np.float64)
    med = float(np.median(arr))
    return float(arr.max() - arr.min()) / med if med > 0 else math.inf
