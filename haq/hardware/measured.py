"""Measured cost-table backend: single-layer ONNX models timed with onnxruntime on this CPU.

For each layer signature and each precision the CPU provider really executes (fp32, W8A8 via
QDQ, weight-only 2/4/8-bit MatMulNBits for linear layers) a one-layer model is exported with
:func:`haq.export.export_policy`, its optimized graph is checked (the kernel that runs is
recorded, and a pair whose kernel is not the asked precision is left out, never faked), and the
variants are timed together, interleaved, with the protocol of :mod:`haq.hardware.device.timing`.
Noisy entries are re-measured by the protocol itself.

An isolated one-layer model pays boundary work a layer inside a same-precision region does not:
QuantizeLinear, DequantizeLinear and NCHW<->NHWC transposes (int8) or NCHWc reorders (fp32) —
30-60 % of its time for small layers on this CPU. So an entry's ``latency_ms`` is the layer's
*in-context* cost: the protocol's latency of the isolated model (a floor:
:mod:`haq.hardware.device.measurement`) times the share of its profiled node time spent in the
layer's own kernel(s). The isolated latency, that share and the per-op
profile are kept in ``extra`` (``isolated_ms``, ``kernel_share``, ``profile_us``) and
``raw_ms`` holds the isolated model's raw samples. Boundary work is priced separately by the
table's graph extras (:mod:`haq.hardware.graph_fit`).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from haq.core import validate
from haq.core.errors import ConfigError
from haq.core.types import Log
from haq.export import (
    ExportedModel,
    ExportError,
    ExportOptions,
    export_policy,
    session_options,
    supported_precisions,
)
from haq.hardware.device.machine import MachineFingerprint, cpu_model, machine_fingerprint
from haq.hardware.device.measurement import Measurement
from haq.hardware.device.runner import LocalRunner, Runner
from haq.hardware.device.settings import ProtocolConfig
from haq.quant import LayerInfo, LayerSignature, QuantPolicy, discover_layers
from haq.tables import schema
from haq.tables.schema import SIGNED_WEIGHTS, UNSIGNED_WEIGHTS, WEIGHT_CONTAINERS, Entry
from haq.tables.table import CostTable

CALIBRATION_SAMPLES = 8
PROFILE_RUNS = 30
PROFILE_WARMUP = 5
_CONTAINER_TEXT = {UNSIGNED_WEIGHTS: "uint8 weights at zero point 128", SIGNED_WEIGHTS: "int8 weights"}
BOUNDARY_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "Transpose", "ReorderInput", "ReorderOutput"})


def cpu_slug(model_name: str | None = None) -> str:
    """``cpu-<model name>`` in lower case with runs of other characters as ``-``."""
    name = (model_name or cpu_model()).lower()
    slug = re.sub(r"[^a-z0-9]+", "-", name).strip("-")
    return f"cpu-{slug or 'unknown'}"


def single_layer(sig: LayerSignature, seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    """A seeded one-layer model (layer name ``0``) with ``sig``'s shapes, and its per-sample input shape."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if sig.op == "linear":
            rows = sig.in_h * sig.in_w
            shape: tuple[int, ...] = (sig.in_channels,) if rows == 1 else (rows, sig.in_channels)
            return nn.Sequential(nn.Linear(sig.in_channels, sig.out_channels, bias=sig.bias)).eval(), shape
        conv = nn.Conv2d(
            sig.in_channels,
            sig.out_channels,
            sig.kernel,
            stride=sig.stride,
            padding=sig.padding,
            groups=sig.groups,
            bias=sig.bias,
        )
        return nn.Sequential(conv).eval(), (sig.in_channels, sig.in_h, sig.in_w)


def container_options(weights: str, emulated: bool = False, fence: bool = True) -> ExportOptions:
    """Export options that store 8-bit weights in the container named ``weights`` (uint8 / int8)."""
    return ExportOptions(emulated=emulated, fence=fence, signed_weights=weights == SIGNED_WEIGHTS)


def export_single(
    sig: LayerSignature, w_bits: int, a_bits: int, seed: int = 0, weights: str = UNSIGNED_WEIGHTS
) -> tuple[ExportedModel, LayerInfo]:
    """Export and verify the one-layer model of ``sig`` at (w, a), 8-bit weights stored in the
    container ``weights``; :class:`ExportError` if it cannot run so."""
    model, shape = single_layer(sig, seed)
    layers = discover_layers(model, shape)
    if len(layers) != 1 or layers[0].signature != sig.with_batch(1):
        raise ExportError(f"rebuilt layer does not reproduce signature {sig.key()}")
    gen = torch.Generator().manual_seed(seed)
    calib = torch.rand((CALIBRATION_SAMPLES, *shape), generator=gen)
    policy = QuantPolicy.uniform([layers[0].name], w_bits, a_bits)
    return export_policy(model, layers, policy, shape, calib, container_options(weights)), layers[0]


@dataclass(frozen=True)
class MeasuredBackend:
    """The ``--device cpu`` / ``remote://`` backend of ``haq tables build`` (see
    :class:`haq.hardware.build.DeviceBackend`).

    ``runner`` is None to time on this machine; a :class:`~haq.hardware.device.runner.RemoteRunner`
    times on a ``haq device serve`` agent instead (hardware in the loop). Export, the policy
    check and the kernel-share profile always run on the host.

    ``machine`` is this machine's fingerprint when the caller has taken it already (it times a
    probe); the table records it as ``meta.machine``. A remote table records the agent's
    fingerprint (no probe) marked ``remote``, when the agent reports one.

    ``weights`` is how 8-bit layers store their weights (``meta.protocol.weights``), as the models the
    table will price are exported: uint8 and int8 run different kernels at different speeds.
    """

    protocol: ProtocolConfig
    log: Log | None = None
    runner: Runner | None = None
    machine: MachineFingerprint | None = None
    weights: str = UNSIGNED_WEIGHTS

    def __post_init__(self) -> None:
        validate.choice("weights", self.weights, WEIGHT_CONTAINERS)

    def _timer(self) -> Runner:
        return self.runner if self.runner is not None else LocalRunner(self.protocol, self.log)

    def metadata(self, batch: int) -> dict[str, Any]:
        """Table metadata: the timing machine's CPU, onnxruntime, threads, the protocol record."""
        if batch != 1:
            raise ConfigError(f"measured CPU tables are built at batch 1 (the exporter's graph); got --batch {batch}")
        machine: dict[str, Any] | None
        if self.runner is None:
            cpu, ort_version, where = cpu_model(), ort.__version__, "this machine"
            machine = (self.machine or machine_fingerprint()).to_dict()
        else:
            info = self.runner.device_info()
            cpu, ort_version, where = (
                str(info.get("cpu", "unknown")),
                str(info.get("onnxruntime", "unknown")),
                "a haq device agent",
            )
            reported = info.get("fingerprint")
            machine = {**reported, "remote": True} if isinstance(reported, dict) else None
        meta: dict[str, Any] = {
            "device": {
                "name": cpu_slug(cpu),
                "description": f"{cpu}, onnxruntime CPU execution provider, {self.protocol.threads} thread(s), timed on {where}",
            },
            "runtime": {"name": "onnxruntime", "version": ort_version},
            "threads": self.protocol.threads,
            "protocol": {
                **self.protocol.record(),
                "models": "one exported layer per entry (haq.hardware.measured)",
                "entry_cost": "in-context: isolated-model latency x profiled share of the layer's own kernel(s); "
                "extra.isolated_ms is the whole isolated model",
                "precisions": f"fp32; w8a8 via QDQ (QLinearConv/QGemm), {_CONTAINER_TEXT[self.weights]}; "
                "weight-only 2/4/8-bit linear via MatMulNBits accuracy_level=4",
                "weights": self.weights,
            },
            "units": {"latency": "ms", "energy": "mJ"},
            "metrics": ["latency"],
            "constants": {},
        }
        if machine is not None:
            meta["machine"] = machine
            self._warn_if_saturating(MachineFingerprint.from_dict(machine), cpu)
        return meta

    def _warn_if_saturating(self, machine: MachineFingerprint, cpu: str) -> None:
        """Say so when int8 weights are timed on a CPU where onnxruntime computes them wrong."""
        if self.weights == SIGNED_WEIGHTS and machine.saturates_int8_weights and self.log:
            self.log(
                f"warning: {cpu} has no VNNI or AMX, so onnxruntime adds int8-weight products in 16 bits there and "
                "saturates: a model exported with --int8-weights computes wrong results on it (the table times it as "
                "asked; without --int8-weights it times the uint8 weights that run right there)"
            )

    def entries(self, sig: LayerSignature) -> list[Entry]:
        """One measured entry per precision the CPU really runs for ``sig``."""
        return self.entries_many([sig])[0]

    def entries_many(self, sigs: Sequence[LayerSignature]) -> list[list[Entry]]:
        """:meth:`entries` of several signatures, every variant of every signature timed in the
        same interleaved rounds (one session each per round), so drift hits them all alike and
        the protocol's early stop (``ci_rel``) acts per variant."""
        exported: list[tuple[int, int, int, ExportedModel, str]] = []
        for k, sig in enumerate(sigs):
            if sig.batch != 1:
                raise ConfigError(f"measured CPU tables are built at batch 1; signature {sig.key()} has batch {sig.batch}")
            for w, a in supported_precisions(sig.op):
                try:
                    model, info = export_single(sig, w, a, weights=self.weights)
                except ExportError as exc:
                    if self.log:
                        self.log(f"  skipping {sig.key()} w{w}a{a}: {exc}")
                    continue
                exported.append((k, w, a, model, model.kernels[info.name].label))
        if self.log and len(sigs) > 1:
            self.log(f"timing {len(exported)} single-layer models of {len(sigs)} signatures together")
        results = self._timer().measure_many([m.onnx_bytes for _, _, _, m, _ in exported])
        out: list[list[Entry]] = [[] for _ in sigs]
        for (k, w, a, model, kernel), meas in zip(exported, results):
            out[k].append(self._entry(sigs[k], w, a, model, kernel, meas))
        return out

    def _entry(self, sig: LayerSignature, w: int, a: int, model: ExportedModel, kernel: str, meas: Measurement) -> Entry:
        """The table entry of one timed single-layer model: in-context cost and its provenance."""
        profile = profile_ops(model.onnx_bytes, self.protocol.threads)
        share = kernel_share(profile)
        fields, timing = _timed(meas, share)
        extra = {**timing, "kernel_share": round(share, 4), "profile_us": profile, "ops": list(meas.kernels)}
        return Entry(key=sig.key(), w_bits=w, a_bits=a, source="measured", kernel=kernel, extra=extra, **fields)


def _timed(meas: Measurement, share: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fields of an entry, and the keys of its ``extra``, that come from timing its
    single-layer model (``share``: the layer kernel's share of it)."""
    fields = {
        "latency_ms": meas.latency_ms * share,
        "latency_iqr_ms": meas.iqr_ms * share,
        "samples": meas.n_samples,
        "raw_ms": tuple(round(float(v), 6) for v in meas.all_samples()),
    }
    extra = {
        "isolated_ms": meas.latency_ms,
        "session_medians_ms": [round(v, 6) for v in meas.session_medians],
        "session_floors_ms": [round(v, 6) for v in meas.session_floors],
        "sessions": len(meas.session_medians),
        "noise": round(meas.noise, 4),
        "attempts": meas.attempts,
    }
    return fields, extra


def entry_model(table: CostTable, entry: Entry) -> bytes:
    """The single-layer ONNX model ``entry`` of ``table`` was timed on (the build's export, seeded
    alike, its weights in the table's container)."""
    sig = table.signatures[entry.key]
    return export_single(sig, entry.w_bits, entry.a_bits, weights=table.export_weights)[0].onnx_bytes


def retimed_entry(entry: Entry, meas: Measurement) -> Entry:
    """``entry`` with its single-layer model timed again (``meas``, e.g. in a fit's batch beside
    the whole models): the new isolated time times the build's kernel share, the build's isolated
    time kept as ``extra.build_isolated_ms`` (the first build's, however often it is re-timed)."""
    share = schema.kernel_share(entry)
    fields, timing = _timed(meas, share)
    build = float(entry.extra.get("build_isolated_ms", entry.extra.get("isolated_ms", entry.latency_ms / share)))
    return replace(entry, extra={**entry.extra, **timing, "build_isolated_ms": build}, **fields)


def profile_ops(onnx_bytes: bytes, threads: int = 1, runs: int = PROFILE_RUNS) -> dict[str, float]:
    """Median per-run kernel time (µs) of each op type, from onnxruntime's profiler (untimed pass)."""
    with tempfile.TemporaryDirectory(prefix="haq-prof-") as tmp:
        so = session_options(threads)
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "profile")
        sess = ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        x = np.random.default_rng(0).random([d if isinstance(d, int) else 1 for d in inp.shape], dtype=np.float32)
        for _ in range(PROFILE_WARMUP + runs):
            sess.run(None, {inp.name: x})
        with open(sess.end_profiling(), encoding="utf-8") as fh:
            events = json.load(fh)
    per_run: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            per_run.setdefault(str(e["args"]["op_name"]), []).append(float(e["dur"]))
    out = {}
    for op, durations in sorted(per_run.items()):
        # an op type appears a fixed number of times per run: rows are runs, warm-up rows dropped
        rows = np.asarray(durations).reshape(PROFILE_WARMUP + runs, -1)[PROFILE_WARMUP:]
        out[op] = round(float(np.median(rows.sum(axis=1))), 3)
    return out


def kernel_share(profile_us: dict[str, float]) -> float:
    """Share of a one-layer model's node time spent in the layer itself (not in boundary ops)."""
    total = sum(profile_us.values())
    own = sum(t for op, t in profile_us.items() if op not in BOUNDARY_OPS)
    if total <= 0 or own <= 0:
        raise ExportError(f"profile of a one-layer model has no layer kernel time ({profile_us}); cannot apportion it")
    return own / total
