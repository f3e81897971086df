"""Export a model under a :class:`QuantPolicy` to an onnxruntime-ready QDQ ONNX model, checked."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from haq.core.fileio import atomic_write_bytes
from haq.export.float_graph import INPUT_NAME, LayerNode, float_onnx, locate_layers
from haq.export.plan import ExportError, LayerPlan, Realization, plan_layer
from haq.export.qdq import ActQuant, layer_outputs, rewrite
from haq.export.verify import (
    Kernel,
    mismatches,
    optimized_graph,
    realized_kernels,
    session_options,
)
from haq.quant import (
    FLOAT_BITS,
    LayerInfo,
    QuantPolicy,
    apply_policy_,
    calibrate_,
    quant_layers,
)


@dataclass(frozen=True)
class ExportOptions:
    """emulated: export bits the CPU cannot run on an 8-bit container instead of refusing.
    verify: build onnxruntime's optimized graph and refuse when a layer runs at another precision.

    fence: when onnxruntime quantizes a float layer on its own, fence that layer and re-export
        (instead of refusing); fenced layers are listed in the result.
    signed_weights: store 8-bit containers' weights as int8 (faster on CPUs with VNNI or AMX, wrong
        on AVX2 CPUs without them: :func:`haq.export.qdq.weight_container`) instead of uint8.
    """

    emulated: bool = False
    verify: bool = True
    fence: bool = True
    signed_weights: bool = False


@dataclass(frozen=True)
class ExportedModel:
    """The ONNX bytes, the plan per layer and the kernel onnxruntime runs for each layer."""

    onnx_bytes: bytes
    plans: Mapping[str, LayerPlan]
    kernels: Mapping[str, Kernel] = field(default_factory=dict)
    fenced: frozenset[str] = frozenset()

    def save(self, path: str) -> None:
        """Write the model atomically (temp file + rename)."""
        atomic_write_bytes(Path(path), self.onnx_bytes)


def export_policy(
    model: nn.Module,
    layers: Sequence[LayerInfo],
    policy: QuantPolicy,
    input_shape: Sequence[int],
    calibration: torch.Tensor,
    options: ExportOptions = ExportOptions(),
) -> ExportedModel:
    """Export ``model`` (float or already quantized; never modified) under ``policy``.

    ``calibration`` is a batch of real inputs: it sets each quantized layer's input clip exactly
    as :func:`haq.quant.calibrate_` does, and the ranges of the int8 layers' outputs.
    """
    policy.check_layers(layers)
    if calibration.dim() != len(input_shape) + 1 or tuple(calibration.shape[1:]) != tuple(input_shape):
        expected = ", ".join(map(str, input_shape))
        raise ExportError(f"calibration batch has shape {tuple(calibration.shape)}; expected (N, {expected})")
    plans = {
        info.name: plan_layer(info.name, info.signature, policy[info.name].w_bits, policy[info.name].a_bits, options.emulated)
        for info in layers
    }
    act, weight_shapes = _calibrated_grids(model, layers, policy, calibration)
    proto = float_onnx(model, layers, input_shape)
    nodes = locate_layers(proto, layers, weight_shapes)
    proto = _name_float_weights(proto, nodes)
    nodes = locate_layers(proto, layers, weight_shapes)
    ranges = tensor_ranges(proto, list(layer_outputs(proto, nodes, plans).values()), calibration.detach().cpu().numpy())
    fenced: frozenset[str] = frozenset()
    while True:
        onnx_bytes = rewrite(proto, nodes, plans, act, ranges, fenced, options.signed_weights).SerializeToString()
        if not options.verify:
            return ExportedModel(onnx_bytes, plans)
        kernels = realized_kernels(optimized_graph(onnx_bytes), [info.name for info in layers])
        bad = mismatches(plans, kernels)
        if not bad:
            return ExportedModel(onnx_bytes, plans, kernels, fenced)
        to_fence = frozenset(n for n in plans if plans[n].realization == Realization.FLOAT and kernels[n].precision != "fp32")
        if not options.fence or not to_fence or to_fence <= fenced:
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise ExportError(f"the exported model does not run the policy: {bad[0]}{more}")
        fenced = fenced | to_fence


def run_onnx(onnx_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """Run an exported model on a batch, one sample at a time (the graph has batch 1)."""
    sess = ort.InferenceSession(onnx_bytes, session_options(), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {INPUT_NAME: x[i : i + 1].astype(np.float32)})[0] for i in range(len(x))])


def tensor_ranges(proto: onnx.ModelProto, tensors: list[str], x: np.ndarray) -> dict[str, tuple[float, float]]:
    """Min / max of named intermediate tensors of the float graph over a calibration batch."""
    if not tensors:
        return {}
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    known = {o.name for o in probe.graph.output}
    for t in tensors:
        if t not in known:
            probe.graph.output.append(onnx.ValueInfoProto(name=t))
    sess = ort.InferenceSession(probe.SerializeToString(), session_options(), providers=["CPUExecutionProvider"])
    lo = {t: float("inf") for t in tensors}
    hi = {t: float("-inf") for t in tensors}
    for i in range(len(x)):
        values = sess.run(tensors, {INPUT_NAME: x[i : i + 1].astype(np.float32)})
        for t, v in zip(tensors, values):
            lo[t] = min(lo[t], float(v.min()))
            hi[t] = max(hi[t], float(v.max()))
    return {t: (lo[t], hi[t]) for t in tensors}


def _calibrated_grids(
    model: nn.Module, layers: Sequence[LayerInfo], policy: QuantPolicy, calibration: torch.Tensor
) -> tuple[dict[str, ActQuant], dict[str, tuple[int, ...]]]:
    """Each quantized layer's input grid, calibrated like the fake-quantized model, and weight shapes."""
    q = apply_policy_(copy.deepcopy(model).to(torch.device("cpu")).eval(), policy)
    needs = any(b.a_bits != FLOAT_BITS for b in policy.layers.values())
    if needs:
        calibrate_(q, [calibration.detach().cpu()], torch.device("cpu"))
    mods = quant_layers(q)
    act = {}
    for info in layers:
        m, bits = mods[info.name], policy[info.name]
        if bits.a_bits != FLOAT_BITS:
            act[info.name] = ActQuant(float(m.input_quant.alpha.detach()), bool(m.input_quant.signed), bits.a_bits)
    return act, {info.name: tuple(mods[info.name].weight.shape) for info in layers}


def _name_float_weights(proto: onnx.ModelProto, nodes: Sequence[LayerNode]) -> onnx.ModelProto:
    """Give each layer's node, weight and bias its own ``haq/<layer>/...`` name so it can be traced.

    onnxruntime derives the names of initializers it creates from the node name, so even a
    weight it quantizes by itself keeps the layer's prefix. The exporter deduplicates equal
    constants (e.g. the zero biases of freshly folded BatchNorms), so each layer gets a copy.
    """
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    inits = {t.name: t for t in out.graph.initializer}
    for ln in nodes:
        node = out.graph.node[ln.node_index]
        node.name = f"haq/{ln.name}/{ln.op_type}"
        for pos, (old, kind) in enumerate(((ln.weight, "weight"), (ln.bias, "bias")), start=1):
            if old is None:
                continue
            copy_ = onnx.TensorProto()
            copy_.CopyFrom(inits[old])
            copy_.name = f"haq/{ln.name}/{kind}"
            out.graph.initializer.append(copy_)
            node.input[pos] = copy_.name
    used = {i for n in out.graph.node for i in n.input}
    keep = [t for t in out.graph.initializer if t.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep)
    return out
