"""Export the float model to ONNX and find the node that computes each quantizable layer.

The legacy (TorchScript) exporter is used: torch 2.13's default exporter needs ``onnxscript``,
which haq does not depend on. BatchNorm is folded into the preceding conv by the exporter in
eval mode; per-output-channel weight quantization commutes with that per-channel scaling, so
quantizing the folded weight reproduces the fake-quantized model. Layers are matched to ONNX
nodes by execution order (the tracer records ops in the order ``forward`` runs them, which is
the order :func:`haq.quant.discover_layers` reports) and each match is checked by weight shape.
"""

from __future__ import annotations

import copy
import io
import warnings
from dataclasses import dataclass
from typing import Sequence

import onnx
import torch
from onnx import numpy_helper
from torch import nn

from haq.export.plan import ExportError
from haq.quant import FLOAT_BITS, LayerInfo, QuantPolicy, apply_policy_

OPSET = 17
IR_VERSION = 10  # onnx 1.23 writes IR 14 by default, which onnxruntime 1.31 rejects
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
LAYER_OPS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class LayerNode:
    """Where a layer lives in the float ONNX graph."""

    name: str
    node_index: int
    op_type: str
    weight: str
    bias: str | None


def float_onnx(model: nn.Module, layers: Sequence[LayerInfo], input_shape: Sequence[int]) -> onnx.ModelProto:
    """The model in float as ONNX (batch 1, BN folded), on a deep copy so ``model`` is untouched."""
    twin = copy.deepcopy(model).to(torch.device("cpu")).eval()
    apply_policy_(twin, QuantPolicy.uniform([info.name for info in layers], FLOAT_BITS))
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                twin,
                (torch.zeros((1, *input_shape)),),
                buf,
                dynamo=False,
                opset_version=OPSET,
                do_constant_folding=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                training=torch.onnx.TrainingMode.EVAL,
            )
    except Exception as exc:  # the exporter raises many types for unsupported user code
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ExportError(f"torch.onnx.export failed for {type(model).__name__}: {type(exc).__name__}: {first}") from exc
    proto = onnx.load_from_string(buf.getvalue())
    proto.ir_version = IR_VERSION
    return _constants_to_initializers(proto)


def _constants_to_initializers(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Turn Constant nodes, and Identity nodes of initializers, into initializers of their own.

    The exporter deduplicates equal constants (such as the zero bias of every freshly folded
    BatchNorm) and hands them to further convs through Constant or Identity nodes; per-layer
    quantization needs every weight and bias as a plain initializer.
    """
    g = proto.graph
    inits = {t.name: t for t in g.initializer}
    keep = []
    for n in g.node:
        value = next((a for a in n.attribute if a.name == "value"), None)
        source: onnx.TensorProto | None = None
        if n.op_type == "Constant" and value is not None and len(n.attribute) == 1:
            source = value.t
        elif n.op_type == "Identity" and n.input[0] in inits:
            source = inits[n.input[0]]
        if source is None:
            keep.append(n)
            continue
        t = onnx.TensorProto()
        t.CopyFrom(source)
        t.name = n.output[0]
        g.initializer.append(t)
        inits[t.name] = t
    del g.node[:]
    g.node.extend(keep)
    return proto


def locate_layers(
    proto: onnx.ModelProto, layers: Sequence[LayerInfo], weight_shapes: dict[str, tuple[int, ...]]
) -> list[LayerNode]:
    """Match each layer to its Conv / Gemm / MatMul node; :class:`ExportError` when they disagree."""
    inits = {t.name: t for t in proto.graph.initializer}
    found = [
        (i, n) for i, n in enumerate(proto.graph.node) if n.op_type in LAYER_OPS and len(n.input) > 1 and n.input[1] in inits
    ]
    if len(found) != len(layers):
        raise ExportError(
            f"the exported graph has {len(found)} conv/matmul nodes with constant weights but the model has "
            f"{len(layers)} quantizable layers; layers reused or computed functionally cannot be exported"
        )
    out: list[LayerNode] = []
    for info, (idx, node) in zip(layers, found):
        w = numpy_helper.to_array(inits[node.input[1]])
        expected = weight_shapes[info.name]
        shape = tuple(w.shape)
        if node.op_type == "MatMul":
            shape = tuple(reversed(shape))
        if node.op_type == "Gemm":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if not attrs.get("transB", 0):
                shape = tuple(reversed(shape))
            if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
                raise ExportError(f"layer '{info.name}': exported Gemm has transA/alpha/beta attributes haq cannot quantize")
        if shape != expected:
            raise ExportError(
                f"layer '{info.name}' did not match ONNX node '{node.name}' (weight {shape} vs {expected}); "
                "the graph order differs from execution order"
            )
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        out.append(LayerNode(info.name, idx, node.op_type, node.input[1], bias))
    return out
