"""Ask onnxruntime which kernel it really runs for each layer, and compare with the plan.

onnxruntime's optimizer decides the final kernels: it fuses QDQ pairs, reorders layouts and,
observed on this CPU, sometimes quantizes a float conv sandwiched between int8 layers by
itself. The optimized graph (written by ``SessionOptions.optimized_model_filepath`` in about
10 ms) is therefore the ground truth for "which precision did this layer run at". Layers are
found by the ``haq/<layer>/`` prefix the exporter gives every weight initializer.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import onnx
import onnxruntime as ort
from onnx import helper

from haq.export.plan import ExportError, LayerPlan, Realization

INT8_KERNELS = frozenset(
    {"QLinearConv", "QLinearMatMul", "QGemm", "MatMulIntegerToFloat", "ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul"}
)
FLOAT_KERNELS = frozenset({"Conv", "FusedConv", "Gemm", "MatMul", "FusedMatMul", "FusedGemm"})
PASS_THROUGH = frozenset({"ReorderInput", "Transpose", "Reshape", "Identity"})


@dataclass(frozen=True)
class Kernel:
    """The node that computes a layer in the optimized graph, and the precision it implies."""

    op_type: str
    domain: str
    precision: str

    @property
    def label(self) -> str:
        """``Conv``, ``com.microsoft.nchwc:Conv`` ..."""
        return f"{self.domain}:{self.op_type}" if self.domain else self.op_type


def session_options(
    threads: int = 1, level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
) -> ort.SessionOptions:
    """The session settings used everywhere in haq: one thread, sequential, no spinning."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = level
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return so


def optimized_graph(
    onnx_bytes: bytes, level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
) -> onnx.ModelProto:
    """The graph onnxruntime's CPU provider executes for ``onnx_bytes``, up to ``level``.

    Precision is decided by the EXTENDED level (QDQ fusion, constant folding); the ALL level
    only adds layout changes (NCHWc for float convs, NHWC for int8 ones) and renames the
    reordered weights, which would hide which layer is which — so EXTENDED is the default.
    """
    with tempfile.TemporaryDirectory(prefix="haq-opt-") as tmp:
        path = Path(tmp) / "optimized.onnx"
        so = session_options(level=level)
        so.optimized_model_filepath = str(path)
        try:
            ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ExportError(f"onnxruntime cannot load the exported model: {str(exc).splitlines()[0]}") from exc
        return onnx.load(str(path))


def realized_kernels(opt: onnx.ModelProto, layer_names: list[str]) -> dict[str, Kernel]:
    """The kernel computing each named layer; :class:`ExportError` if a layer cannot be found."""
    g = opt.graph
    inits = {t.name for t in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out: dict[str, Kernel] = {}
    for name in layer_names:
        prefix = f"haq/{name}/"
        found: Kernel | None = None
        for n in g.node:
            weights = [i for i in n.input if i.startswith(prefix) and (i in inits or _from_constant(i, producers))]
            if not weights:
                continue
            if n.op_type in INT8_KERNELS:
                found = Kernel(n.op_type, n.domain, "w8a8")
            elif n.op_type == "MatMulNBits":
                bits = next((helper.get_attribute_value(a) for a in n.attribute if a.name == "bits"), 4)
                found = Kernel(n.op_type, n.domain, f"w{bits}a32")
            elif n.op_type in FLOAT_KERNELS:
                found = Kernel(n.op_type, n.domain, "fp32")
            elif n.op_type == "DequantizeLinear":
                user = _first_compute(n.output[0], consumers)
                if user is not None:
                    found = Kernel(f"DequantizeLinear+{user.op_type}", user.domain, "dequantized")
            if found is not None:
                break
        if found is None:
            raise ExportError(
                f"layer '{name}' cannot be found in onnxruntime's optimized graph (no node reads a 'haq/{name}/' weight)"
            )
        out[name] = found
    return out


def mismatches(plans: Mapping[str, LayerPlan], kernels: Mapping[str, Kernel]) -> list[str]:
    """One line per layer whose realized precision differs from its plan (emulated layers exempt)."""
    bad = []
    for name, plan in plans.items():
        if plan.realization == Realization.EMULATED:
            continue
        got = kernels[name].precision
        if got != plan.precision:
            bad.append(f"layer '{name}' asked {plan.precision} but onnxruntime runs {kernels[name].label} ({got})")
    return bad


def _from_constant(name: str, producers: Mapping[str, onnx.NodeProto]) -> bool:
    """A weight reordered by the optimizer is produced by a node fed only by initializers."""
    node = producers.get(name)
    return node is not None and node.op_type in PASS_THROUGH


def _first_compute(tensor: str, consumers: Mapping[str, list[onnx.NodeProto]]) -> onnx.NodeProto | None:
    for n in consumers.get(tensor, []):
        if n.op_type in PASS_THROUGH:
            return _first_compute(n.output[0], consumers)
        return n
    return None
